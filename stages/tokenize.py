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
    from lmask.data import tokenize_splits

    stats = tokenize_splits(
        args.raw,
        params.tokenizer,
        params.context,
        params.data.code_package,
        params.data.test_documents,
        args.tokenizer,
        args.out,
    )
    print({k: v for k, v in stats.items() if not isinstance(v, list)})


if __name__ == "__main__":
    cli.run(main)
