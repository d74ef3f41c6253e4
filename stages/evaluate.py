"""Stage evaluate_baseline / evaluate@<schedule>: score one model (zero-shot and every fine-tuning seed)."""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--schedule", default=None, help="schedule name; omit to evaluate the baseline")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--baseline", type=Path, required=True)
    p.add_argument("--models", type=Path, help="folder holding s<seed>/ for each fine-tuning seed")
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for per-token NLL arrays and texts")
    args = p.parse_args()
    params = cli.params(args)
    from lmask import evaluate

    if args.schedule is None:
        metrics = evaluate.evaluate_baseline(params, args.data, args.baseline, args.metrics, args.out)
    else:
        params.schedule(args.schedule)
        dirs = {seed: args.models / f"s{seed}" for seed in params.finetune_seeds}
        metrics = evaluate.evaluate_schedule(
            params, args.schedule, args.data, args.baseline, dirs, args.metrics, args.out
        )
    print({k: v for k, v in metrics.items() if not isinstance(v, dict)})


if __name__ == "__main__":
    cli.run(main)
