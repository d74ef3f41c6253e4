"""Stage tokenize: train or load the tokenizer; cut every split and the code domain per document."""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--raw", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    params = cli.params(args)
    from lmask.data import tokenize_project

    stats = tokenize_project(params, args.raw, args.tokenizer, args.out)
    print({k: v for k, v in stats.items() if not isinstance(v, list)})


if __name__ == "__main__":
    cli.run(main)
