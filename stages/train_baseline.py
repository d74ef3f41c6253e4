"""Stage train_baseline: GPT-2 with full attention (scratch or pretrained), per params `train` and `model`.

dvc.yaml runs it under `torchrun --nproc_per_node=${train.nproc}`; every rank runs this same code (DDP).
"""

import os

from lmask.params import load_params
from lmask.train import train_baseline


def main() -> None:
    metrics = train_baseline(load_params())
    if int(os.environ.get("RANK", 0)) == 0:  # every rank returns the same metrics; print them once
        print(metrics)


if __name__ == "__main__":
    main()
