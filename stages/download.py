"""Stage download: fetch the corpus named by data.source into data/raw/<split>.jsonl."""

from pathlib import Path

from lmask.data import download
from lmask.params import load_params


def main() -> None:
    params = load_params()
    counts = download(params.data, Path("data/raw"))
    print(f"data/raw: {counts} documents (source: {params.data.source})")


if __name__ == "__main__":
    main()
