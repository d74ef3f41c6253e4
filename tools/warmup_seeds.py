"""Does a copy warm-up form its heads late because of a seed's initial weights or its data? The two seeds apart.

    python -m tools.preset long && python -m tools.preset long-prefix --stack
    python -m tools.warmup_seeds --init 0 --data 1 --stop 1600
    python -m tools.warmup_seeds --init 0 --data 0 --stop 1600 \\
        -S 'train.copy_warmup.phases=[{context: 32, steps: 3000, batch_size: 16, max_period: 8}]' -S train.steps=3800

Trains a baseline as ``train_baseline@<b>`` does (lmask.train.train on params.yaml, with ``--preset`` and each ``-S
key=value`` merged as tools.copy_recipe merges them), except that the initial weights come from baseline ``--init``'s
seed and the batches (order, synthetic rows, mix) from baseline ``--data``'s (``seed + 1000 b``, lmask.train.
baseline_seed; any b >= 0, not only the baseline_seeds entries). ``--init B --data B`` is ``train_baseline@B``
itself. It stops after ``--stop`` steps (default: the end of the copy warm-up's first phase) and prints the copy loss
logged at every ``train.eval_every`` step (the dvclive ``copy_loss``: mean NLL on periodic rows from their copy
start). The checkpoint goes to ``--out`` (default checkpoints/warmup-seeds-i<I>-d<D>) and is resumed only when it
was made from the same inputs (every dep and param ``train_baseline`` declares, after the overrides, and both
seeds): a later call with a larger ``--stop`` continues it. ``--shifts S ...`` then scores 32 held-out prefixed copy
rows of the phase's context (periods min_period to its max_period) fed at position ids S, S + 1, ...: heads that copy
at shift 0 but not at others are bound to the positions they were trained at. Needs ``dvc repro tokenize`` first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools import fail

PROG = "warmup_seeds"
DATA, TOKENIZER = Path("data/tokenized"), Path("data/tokenizer")  # train_baseline's deps (dvc.yaml), from the root


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m tools.{PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("--init", type=int, default=0, help="baseline b whose seed draws the initial weights")
    p.add_argument("--data", type=int, default=0, help="baseline b whose seed draws the batches")
    p.add_argument("--stop", type=int, default=None, help="steps to train (default: the warm-up's first phase)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--preset", default=None, help="a preset name (presets/<name>.yaml) or file merged first")
    p.add_argument("-S", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override, repeatable")
    p.add_argument("--out", type=Path, default=None, help="checkpoint folder (reused when its inputs match)")
    p.add_argument("--shifts", type=int, nargs="+", default=[], help="first position ids to score held-out rows at")
    a = p.parse_args(argv)
    for name in ("init", "data"):
        if getattr(a, name) < 0:
            fail(PROG, f"--{name} {getattr(a, name)}: a baseline number must be >= 0")
    if any(s < 0 for s in a.shifts):
        fail(PROG, f"--shifts {' '.join(map(str, a.shifts))}: position ids must be >= 0")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    from tools.copy_recipe import recipe_or_fail

    params = recipe_or_fail(PROG, a.params, a.preset, a.sets)
    warmup = params.train.copy_warmup
    if a.stop is None and not warmup.plan:
        fail(PROG, "train.copy_warmup.phases is empty: give --stop (or apply presets/long.yaml)")
    stop = warmup.plan[0].steps if a.stop is None else a.stop
    if not 1 <= stop < params.train.steps:
        fail(PROG, f"--stop {stop}: must be in [1, train.steps) = [1, {params.train.steps})")
    scored = warmup.phase_at(stop - 1)  # the phase of the last step trained: its rows are the held-out ones
    if a.shifts and scored is None:
        fail(PROG, f"--shifts: step {stop} is past the copy warm-up (no copy rows to score)")
    if a.shifts and max(a.shifts) + scored.context > params.data.context_length:
        fail(PROG, f"--shifts {max(a.shifts)}: + context {scored.context} > data.context_length")
    for path in (DATA / "train.npy", TOKENIZER):
        if not path.exists():
            fail(PROG, f"{path}: not found (run `dvc repro tokenize` first)")
    from lmask.determinism import pin_cpu

    pin_cpu(params.cpu_threads)
    import torch
    from transformers import AutoTokenizer

    from lmask.checkpoint import NEWEST
    from lmask.data import load_blocks
    from lmask.provenance import stage_inputs
    from lmask.train import Run, baseline_seed, initial_model, process_facts, train

    init_seed, data_seed = baseline_seed(params, a.init), baseline_seed(params, a.data)
    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    model = initial_model(params, tokenizer, init_seed)
    # What train_baseline@<data> declares, plus both seeds and what the bits depend on beyond them.
    facts = {"init seed": init_seed, "data seed": data_seed, **process_facts()}
    inputs = stage_inputs("train_baseline", {"baseline": a.data}, params.raw, extra=facts)
    name = f"warmup-seeds-i{a.init}-d{a.data}"
    folder = a.out or Path("checkpoints") / name
    run = Run(name, data_seed, folder / "model", folder / "live", folder, inputs, info={})
    print(f"{name}: weights from seed {init_seed}, batches from seed {data_seed}, to step {stop}", flush=True)
    train(
        model,
        load_blocks(DATA, "train"),
        load_blocks(DATA, "validation"),
        params.train,
        params.mix,
        run,
        tokenizer,
        stop,
    )
    progress = torch.load(folder / NEWEST, map_location="cpu", weights_only=False)["progress"]
    rows = progress["rows"]
    for row in rows:
        copy = "-" if row["copy_loss"] is None else f"{row['copy_loss']:.2f}"
        print(f"step {row['step']}: copy loss {copy}, train loss {row['train_loss']:.2f}")
    if a.shifts:
        from lmask.synthetic import copy_rows
        from lmask.train import row_losses

        vocab = model.config.vocab_size
        held, starts = copy_rows(32, scored.context, warmup.min_period, scored.max_period, vocab, 999, 1, True)
        x, copy_start = torch.from_numpy(held), torch.from_numpy(starts)
        model.eval()
        for shift in a.shifts:
            positions = shift + torch.arange(scored.context).expand_as(x)
            with torch.no_grad():
                _, sums = row_losses(model(input_ids=x, position_ids=positions).logits, x, copy_start)
            loss = float(sums[4] / sums[5])
            print(f"shift {shift}: copy loss {loss:.2f} on held-out prefixed rows (step {progress['step']})")


if __name__ == "__main__":
    main()
