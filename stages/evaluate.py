"""Stage evaluate: perplexity (fine-tuned and zero-shot) and loss by position for baseline + every schedule."""

from lmask.evaluate import evaluate
from lmask.params import load_params


def main() -> None:
    for name, row in evaluate(load_params()).items():
        print(name, row)


if __name__ == "__main__":
    main()
