"""Stage train_baseline@<baseline>: GPT-2 with full attention (scratch or pretrained), per params `train` and `model`,
from baseline seed <baseline> (an entry of baseline_seeds: its initialisation and data order).

With train.nproc > 1 the stage relaunches itself under torchrun (DDP) after validating params.yaml.
"""

from pathlib import Path

from stages import cli


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--baseline", type=int, required=True, help="baseline seed (an entry of baseline_seeds)")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--live", type=Path, required=True, help="dvclive folder for curves and metrics")
    p.add_argument("--checkpoints", type=Path, default=None)
    args = p.parse_args()
    params = cli.params(args)
    cli.require_seed(params.baseline_seeds, args.baseline, "baseline_seeds")
    cli.relaunch_under_torchrun(params.train.nproc, "stages.train_baseline")
    from lmask.train import train_baseline

    checkpoints = args.checkpoints or Path("checkpoints") / f"baseline-b{args.baseline}"
    metrics = train_baseline(params, args.baseline, args.data, args.tokenizer, args.model, args.live, checkpoints)
    if cli.is_main_rank():
        print(metrics)


if __name__ == "__main__":
    cli.run(main)
