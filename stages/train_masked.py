"""Stage train_masked@<schedule>-<baseline>-<seed>: fine-tune one baseline under one schedule with one fine-tuning
seed. Full and windowed runs with the same baseline and seed see the same batches, so their gap is paired.

With masked.nproc > 1 the stage relaunches itself under torchrun (DDP) after validating params.yaml.
"""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--schedule", required=True)
    p.add_argument("--baseline", type=int, required=True, help="baseline seed (an entry of baseline_seeds)")
    p.add_argument("--seed", type=int, required=True, help="fine-tuning seed (an entry of finetune_seeds)")
    p.add_argument("--baseline-model", type=Path, required=True, help="the baseline's model folder")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--live", type=Path, required=True, help="dvclive folder for curves and metrics")
    p.add_argument("--checkpoints", type=Path, default=None)
    args = p.parse_args()
    params = cli.params(args)
    params.schedule(args.schedule)  # a removed or misspelt schedule fails here, before torchrun
    cli.require_seed(params.baseline_seeds, args.baseline, "baseline_seeds")
    cli.require_seed(params.finetune_seeds, args.seed, "finetune_seeds")
    cli.relaunch_under_torchrun(params.masked.nproc, "stages.train_masked")
    from lmask.train import train_masked

    run = f"{args.schedule}-b{args.baseline}-s{args.seed}"
    metrics = train_masked(
        params,
        args.schedule,
        args.baseline,
        args.seed,
        args.baseline_model,
        args.data,
        args.model,
        args.live,
        args.checkpoints or Path("checkpoints") / run,
    )
    if cli.is_main_rank():
        print(metrics)


if __name__ == "__main__":
    cli.run(main)
