"""When does a GPT-2 of the experiment's shape learn to copy? The onset probes behind the long preset's recipe.

    python -m tools.copy_onset --layers 12 --periods 8 32 --batch 8 --steps 2500 --lr 5e-4 --every 250
    python -m tools.copy_onset --layers 2 --periods 64 64 --context 128 --batch 32 --steps 600   # fixed period
    python -m tools.copy_onset --periods 2 8 --initializer-range 0.05 --phase 32 3000 16 8 --phase 128 2000 8 48

Trains a fresh model (lmask.model, the experiment's config unless flags change it) from scratch on rows of distinct
random ids repeated with a period drawn from ``--periods LO HI`` (lmask.synthetic.random_periodic; LO = HI is a fixed
period, which a positional shortcut solves without induction), optionally with a share of natural-text rows cut from
data/tokenized/train.npy (run `dvc repro tokenize` first). Every ``--every`` steps it prints, and writes to ``--tsv``,
the copy drop on held-out rows: the mean loss over a row's first period minus over the rest, at a period inside the
training range and at one twice its top (``--probe P T`` adds any other period P on rows of T tokens). Only copying
(induction) makes the drop positive at a varying period. ``--position-offsets`` starts each training row at a random
position instead of 0, so that short rows train every position embedding a long probe uses;
``--freeze-positions`` keeps the table at its init instead (``model.train_positions: false``). ``--prefix`` begins
each training row with non-repeating ids, so that a copy's source is not always in the row's first period;
``--reach P START`` measures copying from a first occurrence at position START (periodic probes start theirs at 0,
where a circuit that copies only from early positions already succeeds). ``--phase T STEPS BATCH HI`` (repeatable)
trains a curriculum instead, as ``train.copy_warmup.phases`` does: STEPS steps of BATCH rows of T tokens, periods LO
to HI, then the next phase (one rng stream throughout, the probes of the last phase). The third example above is the
long preset's warm-up.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lmask.param_sections import GPT2_INITIALIZER_RANGE
from tools import fail


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.copy_onset", description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--embd", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--periods", type=int, nargs=2, default=[8, 32], metavar=("LO", "HI"))
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW's, on matrices (train.weight_decay)")
    p.add_argument(
        "--phase",
        type=int,
        nargs=4,
        action="append",
        default=[],
        metavar=("T", "STEPS", "BATCH", "HI"),
        help="a curriculum phase (repeatable; replaces --context, --steps, --batch and --periods HI)",
    )
    p.add_argument("--natural", type=float, default=0.0, help="share of rows replaced by natural text")
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=Path("data/tokenized"))
    p.add_argument("--tsv", type=Path, default=None, help="write the onset curve here")
    p.add_argument(
        "--unscaled",
        action="store_true",
        help="attention logits without GPT-2's 1/sqrt(head dim) (GPT2Config.scale_attn_weights=False)",
    )
    p.add_argument(
        "--initializer-range",
        type=float,
        default=GPT2_INITIALIZER_RANGE,
        help="std of the initial weights (model.initializer_range, GPT-2's 0.02; the sinusoidal position table "
        "gets the same RMS)",
    )
    p.add_argument(
        "--position-offsets",
        type=int,
        nargs="?",
        const=0,
        default=None,
        metavar="FROM_STEP",
        help="from step FROM_STEP on (default 0), start each training row at a random position in [0, 1024 - "
        "context] instead of 0, so that a short context still trains every position the probes use",
    )
    p.add_argument(
        "--prefix",
        type=int,
        nargs="?",
        const=0,
        default=None,
        metavar="FROM_STEP",
        help="from step FROM_STEP on (default 0), begin each training row with a random number of non-repeating ids "
        "(0 to T - 2 x period) before its repeats, so that the first occurrence, the copy's source, sits anywhere in "
        "the row and not always in its first period",
    )
    p.add_argument(
        "--reach",
        type=int,
        nargs=2,
        action="append",
        default=[],
        metavar=("P", "START"),
        help="also print the copy drop of a P-token segment whose first occurrence starts at position START (after "
        "START non-repeating ids), repeated once: copying from that far into a row (repeatable; START + 2P <= 1024)",
    )
    p.add_argument(
        "--freeze-positions",
        action="store_true",
        help="keep the sinusoidal position table at its init (model.train_positions: false), so that an offset is "
        "the same linear map at every position, reached in training or not",
    )
    p.add_argument(
        "--probe",
        type=int,
        nargs=2,
        action="append",
        default=[],
        metavar=("P", "T"),
        help="also print the copy drop at period P on rows of T tokens (repeatable; T <= 1024)",
    )
    a = p.parse_args(argv)
    for period, length in a.probe:
        if not 1 <= period < length <= 1024 or period >= a.vocab:
            fail("copy_onset", f"--probe {period} {length}: need 1 <= P < T <= 1024 and P < --vocab")
    for period, start in a.reach:
        if period < 1 or start < 0 or start + 2 * period > 1024 or start + period >= a.vocab:
            fail(
                "copy_onset",
                f"--reach {period} {start}: need P >= 1, START >= 0, START + 2P <= 1024, START + P < --vocab",
            )
    lo, hi = a.periods
    if not 1 <= lo <= hi or (not a.phase and 2 * hi > a.context) or hi >= a.vocab:
        fail("copy_onset", f"--periods {lo} {hi}: need 1 <= LO <= HI <= --context / 2 and HI < --vocab")
    for length, steps, batch, top in a.phase:
        if not (min(steps, batch) >= 1 and lo <= top < a.vocab and 2 * top <= length <= 1024):
            fail(
                "copy_onset",
                f"--phase {length} {steps} {batch} {top}: need STEPS, BATCH >= 1, --periods LO <= HI < --vocab and "
                "2 HI <= T <= 1024",
            )
    # One phase unless --phase gives the curriculum: (context, steps, batch, longest period)
    a.phases = [tuple(ph) for ph in a.phase] or [(a.context, a.steps, a.batch, hi)]
    if not 0 <= a.weight_decay < 1:
        fail("copy_onset", f"--weight-decay {a.weight_decay}: must be in [0, 1)")
    if not 0 < a.initializer_range <= 1:
        fail("copy_onset", f"--initializer-range {a.initializer_range}: must be in (0, 1]")
    for name in ("layers", "embd", "heads", "batch", "steps", "every"):
        if getattr(a, name) < 1:
            fail("copy_onset", f"--{name} must be >= 1")
    if not 0 <= a.natural < 1:
        fail("copy_onset", "--natural must be in [0, 1)")
    if a.natural and not (a.data / "train.npy").is_file():
        fail("copy_onset", f"{a.data / 'train.npy'}: file not found (run `dvc repro tokenize`)")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    from lmask.determinism import pin_cpu

    pin_cpu(2)
    import torch

    from lmask.model import new_model, scratch_config
    from lmask.params import TrainParams
    from lmask.synthetic import random_periodic
    from lmask.train import make_optimizer

    config = scratch_config(a.vocab, a.layers, a.embd, a.heads, 1024, 0.0, 0, 0, a.initializer_range)
    config.scale_attn_weights = not a.unscaled
    model = new_model(config, a.seed, "sinusoidal").train()
    model.transformer.wpe.weight.requires_grad_(not a.freeze_positions)
    optimizer = make_optimizer(model, TrainParams(lr=a.lr, weight_decay=a.weight_decay), torch.device("cpu"))
    rng, held = np.random.default_rng([a.seed, 1]), np.random.default_rng([a.seed, 2])
    lo, hi = a.periods[0], a.phases[-1][3]
    mid = (lo + hi) // 2
    probes = {f"P{mid}": (mid, min(1024, 4 * mid))}
    if 2 * hi < 1024:  # twice the longest period trained, when a row can hold it
        probes[f"P{2 * hi}"] = (2 * hi, min(1024, 8 * hi))
    probes |= {f"P{P}T{T}": (P, T) for P, T in a.probe}
    probes = {
        k: (P, 0, np.stack([random_periodic(held, T, P, a.vocab) for _ in range(16)])) for k, (P, T) in probes.items()
    }
    probes |= {
        f"R{P}@{L}": (P, L, np.stack([random_periodic(held, L + 2 * P, P, a.vocab, L) for _ in range(16)]))
        for P, L in a.reach
    }
    natural = np.load(a.data / "train.npy").astype(np.int64).ravel() if a.natural else None

    def drop(P: int, start: int, rows: np.ndarray) -> float:
        """Mean loss over the first occurrence (its tokens 2..P) minus over the repeats after it."""
        with torch.no_grad():
            x = torch.from_numpy(rows)
            nll = torch.nn.functional.cross_entropy(model(x).logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
        model.train()
        return float(nll[:, start : start + P - 1].mean() - nll[:, start + P :].mean())

    lines = ["step\ttokens\tseconds\t" + "\t".join(probes)]
    t0 = time.perf_counter()
    # The phase of each step: (context, batch, longest period)
    plan = [(length, batch, top) for length, steps, batch, top in a.phases for _ in range(steps)]
    tokens = 0
    for step in range(len(plan) + 1):
        if step % a.every == 0 or step == len(plan):
            model.eval()
            drops = [drop(P, start, rows) for P, start, rows in probes.values()]
            row = [step, tokens, round(time.perf_counter() - t0)] + [round(d, 3) for d in drops]
            lines.append("\t".join(map(str, row)))
            print(" ".join(f"{h}={v}" for h, v in zip(lines[0].split("\t"), row)), flush=True)
        if step == len(plan):
            break
        length, batch, top = plan[step]
        for group in optimizer.param_groups:
            group["lr"] = a.lr * min(1.0, (step + 1) / a.warmup)
        periods = rng.integers(lo, top + 1, batch)
        if a.prefix is not None and step >= a.prefix:
            prefix_lengths = [int(rng.integers(0, length - 2 * P + 1)) for P in periods]
            rows = np.stack(
                [random_periodic(rng, length, int(P), a.vocab, L) for P, L in zip(periods, prefix_lengths, strict=True)]
            )
        else:
            rows = np.stack([random_periodic(rng, length, int(P), a.vocab) for P in periods])
        k = int(round(batch * a.natural))
        if k:
            blocks = natural[: len(natural) // length * length].reshape(-1, length)
            rows[:k] = blocks[rng.integers(0, len(blocks), size=k)]
        x = torch.from_numpy(rows)
        offsets = a.position_offsets is not None and step >= a.position_offsets
        starts = rng.integers(0, 1024 - length + 1, size=(batch, 1)) if offsets else 0
        positions = torch.from_numpy(starts + np.arange(length))
        model(input_ids=x, position_ids=positions.expand_as(x), labels=x).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += batch * length
    if a.tsv is not None:
        a.tsv.parent.mkdir(parents=True, exist_ok=True)
        a.tsv.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
