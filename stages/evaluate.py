"""Stage evaluate_baseline / evaluate@<schedule>: score every baseline, or one schedule (zero-shot from every
baseline and every fine-tuned run), in one process."""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--schedule", default=None, help="schedule name; omit to evaluate the baselines")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--baselines", type=Path, required=True, help="folder holding b<k>/ for each baseline seed")
    p.add_argument("--models", type=Path, help="folder holding b<k>-s<seed>/ for each fine-tuned run")
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for per-token NLL arrays and texts")
    args = p.parse_args()
    params = cli.params(args)
    baselines = {k: args.baselines / f"b{k}" for k in params.baseline_seeds}
    from lmask import evaluate

    if args.schedule is None:
        metrics = evaluate.evaluate_baselines(params, args.data, baselines, args.metrics, args.out)
    else:
        params.schedule(args.schedule)
        runs = {(k, s): args.models / f"b{k}-s{s}" for k in params.baseline_seeds for s in params.finetune_seeds}
        metrics = evaluate.evaluate_schedule(params, args.schedule, args.data, baselines, runs, args.metrics, args.out)
    print({k: v for k, v in metrics.items() if not isinstance(v, dict)})


if __name__ == "__main__":
    cli.run(main)
