"""Do prefixed copy rows break formed induction heads? The probe behind the long-prefix preset's prefix shares.

    python -m tools.preset long && python -m tools.preset long-prefix --stack
    python -m tools.prefix_switch --baseline 2 --share 1 0.5 0.25 0 --steps 300

Baseline B is trained as ``train_baseline@B`` trains it (lmask.train.train_baseline, this params.yaml), stopped at the
end of the copy warm-up's first phase; the checkpoint goes to ``--checkpoints`` (default checkpoints/prefix-switch-bB)
and is reused when a checkpoint of that step is already there: only the first phase's settings and the seed shape it.
From it, each ``--share`` S trains ``--steps`` steps of ``--batch`` copy rows of ``--context`` tokens (periods
copy_warmup.min_period to ``--max-period``; learning rate copy_warmup.lr or ``--lr``), the first S of each step's rows
prefixed (lmask.synthetic.copy_rows, as a warm-up phase with ``prefix: S`` draws them), and every ``--every`` steps
prints the copy loss (mean NLL from each row's copy start) on 32 held-out rows without a prefix ("plain") and 32 with
one ("prefixed"). A formed circuit copies plain rows; a copy loss near ln V (8.32 nats at V = 4096) on them means the
heads were lost.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools import fail, params_or_fail


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.prefix_switch", description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=int, default=0, help="an entry of baseline_seeds (its seed, as the stage's)")
    p.add_argument("--share", type=float, nargs="+", default=[1.0, 0.5, 0.0], help="shares of prefixed rows, in turn")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--max-period", type=int, default=48)
    p.add_argument("--lr", type=float, default=None, help="default: train.copy_warmup.lr")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument(
        "--data", type=Path, default=Path("data"), help="holds tokenized/ and tokenizer/ (dvc repro tokenize)"
    )
    p.add_argument("--checkpoints", type=Path, default=None)
    a = p.parse_args(argv)
    if not a.params.is_file():
        fail("prefix_switch", f"{a.params}: params file not found")
    for s in a.share:
        if not 0 <= s <= 1:
            fail("prefix_switch", f"--share {s}: must be in [0, 1]")
    for name in ("steps", "every", "batch"):
        if getattr(a, name) < 1:
            fail("prefix_switch", f"--{name} must be >= 1")
    if not 2 <= a.max_period <= a.context // 2 or a.context > 1024:
        fail("prefix_switch", f"--max-period {a.max_period} --context {a.context}: need 2 <= P <= T / 2, T <= 1024")
    if a.lr is not None and a.lr <= 0:
        fail("prefix_switch", f"--lr {a.lr}: must be > 0")
    for path in (a.data / "tokenized" / "train.npy", a.data / "tokenizer"):
        if not path.exists():
            fail("prefix_switch", f"{path}: not found (run `dvc repro tokenize`)")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    params = params_or_fail("prefix_switch", a.params)
    if a.baseline not in params.baseline_seeds:
        fail("prefix_switch", f"--baseline {a.baseline}: not in baseline_seeds {params.baseline_seeds}")
    warmup = params.train.copy_warmup
    if not warmup.plan:
        fail("prefix_switch", f"{a.params}: train.copy_warmup.phases is empty (apply presets/long.yaml first)")
    first = warmup.plan[0].steps
    if a.context > params.model.n_positions:
        fail("prefix_switch", f"--context {a.context}: more than model.n_positions ({params.model.n_positions})")
    from lmask.determinism import pin_cpu

    pin_cpu(params.cpu_threads)
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from lmask.provenance import stage_inputs
    from lmask.synthetic import copy_rows
    from lmask.train import baseline_seed, initial_model, make_optimizer, process_facts, train_baseline

    seed = baseline_seed(params, a.baseline)
    tokenizer = AutoTokenizer.from_pretrained(str(a.data / "tokenizer"))
    vocab = initial_model(params, tokenizer, seed).config.vocab_size
    if a.context - 1 >= vocab:
        fail("prefix_switch", f"--context {a.context}: a prefixed row needs {a.context - 1} distinct ids (V = {vocab})")
    folder = a.checkpoints or Path("checkpoints") / f"prefix-switch-b{a.baseline}"
    # What train_baseline@B records in its checkpoints (lmask.train.train_baseline): one made from other code, data,
    # params or threads is not this baseline's first phase.
    inputs = stage_inputs("train_baseline", {"baseline": a.baseline}, params.raw, extra=process_facts())
    state = _checkpoint_at(folder, first, inputs)
    if state is None:
        print(f"training baseline {a.baseline} to step {first} (the first warm-up phase) into {folder}", flush=True)
        scratch = folder / "run"
        train_baseline(
            params, a.baseline, a.data / "tokenized", a.data / "tokenizer", scratch / "model", scratch / "live",
            folder, stop_after=first,
        )  # fmt: skip
        state = _checkpoint_at(folder, first, inputs)
    lo = warmup.min_period
    held = {
        "plain": copy_rows(32, a.context, lo, a.max_period, vocab, 999, 0, False),
        "prefixed": copy_rows(32, a.context, lo, a.max_period, vocab, 999, 1, True),
    }
    for share in a.share:
        model = initial_model(params, tokenizer, seed)
        model.load_state_dict(state["model"])
        optimizer = make_optimizer(model, params.train, torch.device("cpu"))
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = a.lr or warmup.lr
        for step in range(first, first + a.steps + 1):
            if (step - first) % a.every == 0 or step == first + a.steps:
                losses = " ".join(f"{k}={_copy_loss(model, *v, torch):.2f}" for k, v in held.items())
                print(f"share {share:g} step {step}: copy loss {losses}", flush=True)
            if step == first + a.steps:
                break
            rows, _ = copy_rows(a.batch, a.context, lo, a.max_period, vocab, seed, step, share)
            x = torch.from_numpy(np.ascontiguousarray(rows))
            model.train()
            model(input_ids=x, labels=x).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def _checkpoint_at(folder: Path, step: int, inputs: dict[str, str]) -> dict | None:
    """The checkpoint in ``folder`` saved at ``step`` from ``inputs`` (lmask.checkpoint's files), or None."""
    import torch

    from lmask.provenance import changed_inputs

    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        state = torch.load(path, weights_only=False, map_location="cpu")
        if state.get("progress", {}).get("step") == step and not changed_inputs(state.get("inputs"), inputs):
            return state
    return None


def _copy_loss(model, rows, starts, torch) -> float:
    """Mean next-token NLL over the labels at or after each row's copy start (the pipeline's copy_loss, row_losses)."""
    from lmask.train import row_losses

    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(rows)
        _, sums = row_losses(model(input_ids=x).logits, x, torch.from_numpy(starts))
    return float(sums[4] / sums[5])


if __name__ == "__main__":
    main()
