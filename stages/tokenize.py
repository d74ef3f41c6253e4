"""Stage tokenize: train or load the tokenizer and cut every split into blocks of data.context_length."""

from pathlib import Path

from lmask.data import tokenize_splits
from lmask.params import load_params


def main() -> None:
    params = load_params()
    stats = tokenize_splits(
        Path("data/raw"), params.tokenizer, params.data.context_length, Path("data/tokenizer"), Path("data/tokenized")
    )
    print({k: round(v, 1) if isinstance(v, float) else v for k, v in stats.items()})


if __name__ == "__main__":
    main()
