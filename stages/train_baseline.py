"""Stage train_baseline: GPT-2 with full attention (scratch or pretrained), per params `train` and `model`."""

from lmask.params import load_params
from lmask.train import train_baseline


def main() -> None:
    print(train_baseline(load_params()))


if __name__ == "__main__":
    main()
