"""Stage train_masked@<schedule>: fine-tune models/baseline under one schedule
(`python -m stages.train_masked NAME`; dvc.yaml runs it under `torchrun --nproc_per_node=${masked.nproc}`)."""

import os
import sys

from lmask.params import load_params
from lmask.train import train_masked


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m stages.train_masked <schedule name from params.yaml>")
    metrics = train_masked(load_params(), sys.argv[1])
    if int(os.environ.get("RANK", 0)) == 0:  # every rank returns the same metrics; print them once
        print(metrics)


if __name__ == "__main__":
    main()
