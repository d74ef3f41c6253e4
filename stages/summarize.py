"""Stage summarize: every model's evaluation into metrics/summary.json (intervals, seeds) and README's table."""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--eval-metrics", type=Path, required=True)
    p.add_argument("--eval-arrays", type=Path, required=True)
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--markdown", type=Path, required=True)
    args = p.parse_args()
    params = cli.params(args)
    from lmask.answers import summary_markdown
    from lmask.io import write_json, write_text
    from lmask.summary import run_meta, summarize

    records = summarize(params, args.eval_metrics, args.eval_arrays)
    meta = run_meta(params, args.eval_metrics)
    write_json(args.summary, records)
    write_text(args.markdown, summary_markdown(records, meta))
    print(f"wrote {args.summary} and {args.markdown}")


if __name__ == "__main__":
    cli.run(main)
