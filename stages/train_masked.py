"""Stage train_masked@<schedule>: fine-tune models/baseline under one schedule
(`python -m stages.train_masked NAME`)."""

import sys

from lmask.params import load_params
from lmask.train import train_masked


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m stages.train_masked <schedule name from params.yaml>")
    print(train_masked(load_params(), sys.argv[1]))


if __name__ == "__main__":
    main()
