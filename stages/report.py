"""Stage report: plots/report.html (one self-contained page), plot data for `dvc plots`, the benchmark markdown."""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    for flag in (
        "--summary",
        "--eval-metrics",
        "--eval-arrays",
        "--train",
        "--benchmark",
        "--page",
        "--plots",
        "--benchmark-markdown",
    ):
        p.add_argument(flag, type=Path, required=True)
    args = p.parse_args()
    params = cli.params(args)
    from lmask.report import load_inputs, write_report

    inp = load_inputs(params, args.summary, args.eval_metrics, args.eval_arrays, args.train, args.benchmark)
    write_report(inp, params, args.page, args.plots, args.benchmark_markdown)
    print(f"wrote {args.page}, {args.plots}/, {args.benchmark_markdown}")


if __name__ == "__main__":
    cli.run(main)
