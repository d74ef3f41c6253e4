"""Stage download: fetch the corpus named by data.source into <out>/<split>.jsonl."""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    params = cli.params(args)
    from lmask.data import download

    counts = download(params.data, args.out)
    print(f"{args.out}: {counts} documents (source: {params.data.source})")


if __name__ == "__main__":
    cli.run(main)
