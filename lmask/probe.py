"""Long-range probe: induction copying of a random token span placed d tokens earlier.

Each probe sequence is i.i.d. random tokens with a random span S of ``span`` tokens that appears twice: first at
position ``min_prefix``, then again d positions later, ending the sequence. The model is scored on the
second copy: given S[0..k-1] it must predict S[k] (k = 1..span-1), which it can only do by finding S in the first
copy (an induction head). Every token is uniform over ``n_choices`` ids and independent, so

* any predictor that cannot see the first copy scores exactly chance (1 / n_choices) in expectation;
* the token it needs sits d - 1 positions before the query, so a schedule whose receptive field (see
  ``lmask.schedule.receptive_field``) is shorter than d cannot see it. The first copy starts at >= ``min_prefix``
  so sink tokens (the first few positions) never hold it.

The token to predict (S[k] in the first copy) sits d - 1 positions before its query (S[k-1] in the second copy), so
with ``receptive_field`` < d it is out of reach.

Per-distance accuracy is reported for every model; ``beyond_receptive_field_at_chance`` checks the second claim on
the real models (a leak in the window masking would break it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from lmask.params import section_from_dict


@dataclass
class ProbeParams:
    n_sequences: int = 32  # per distance
    span: int = 8  # tokens in the copied span (span - 1 scored predictions per sequence)
    distances: list[int] = field(default_factory=lambda: [8, 32, 64, 128, 240])
    min_prefix: int = 8  # first copy starts at or after this position (keeps it clear of sink tokens)
    batch_size: int = 16

    def check(self, context: int | None = None) -> None:
        for name in ("n_sequences", "span", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"probe.{name} must be a positive integer, got {value!r}")
        if self.span < 2:
            raise ValueError(f"probe.span must be >= 2 (the first token of the copy is unpredictable), got {self.span}")
        if self.min_prefix < 0:
            raise ValueError(f"probe.min_prefix must be >= 0, got {self.min_prefix}")
        if not self.distances or any(isinstance(d, bool) or not isinstance(d, int) for d in self.distances):
            raise ValueError(f"probe.distances must be a non-empty list of integers, got {self.distances!r}")
        for d in self.distances:
            if d < self.span:
                raise ValueError(f"probe.distances: {d} < probe.span ({self.span}); the two copies would overlap")
            if context is not None and self.min_prefix + d + self.span > context:
                raise ValueError(
                    f"probe.distances: {d} does not fit the context: min_prefix + d + span = "
                    f"{self.min_prefix + d + self.span} > data.context_length ({context})"
                )


def probe_params(raw: object, context: int | None = None) -> ProbeParams:
    """Validate params.yaml's ``probe`` section (unknown keys raise naming ``probe.<key>``)."""
    cfg = section_from_dict(ProbeParams, raw, "probe")
    cfg.check(context)
    return cfg


def token_pool(vocab_size: int, special_ids: list[int]) -> np.ndarray:
    """Token ids the probe draws from: the whole vocabulary except special tokens."""
    special = set(special_ids)
    return np.array([t for t in range(vocab_size) if t not in special], dtype=np.int64)


def make_probe(distance: int, cfg: ProbeParams, pool: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """Probe sequences [n_sequences, min_prefix + distance + span] for one distance, and where the second copy starts.

    Sequences are only as long as the distance needs (cheaper than full contexts; the copy sits at the same place
    relative to its end for every distance). Seeded by (seed, distance): every model sees the same sequences, and
    adding a distance changes no other.
    """
    rng = np.random.default_rng([seed, distance])
    length = cfg.min_prefix + distance + cfg.span
    x = pool[rng.integers(0, len(pool), size=(cfg.n_sequences, length))]
    first, second = cfg.min_prefix, cfg.min_prefix + distance
    x[:, second:] = x[:, first : first + cfg.span]
    return x, second


LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def probe_accuracy(logits_fn: LogitsFn, x: np.ndarray, second: int, batch_size: int) -> tuple[int, int]:
    """(correct, total) greedy predictions of the second copy's tokens 1..span-1."""
    correct = total = 0
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start : start + batch_size])
        logits = logits_fn(xb)
        # logits at position q predict token q + 1: queries second .. T-2 predict second+1 .. T-1.
        pred = logits[:, second:-1].argmax(-1).cpu()
        target = xb[:, second + 1 :]
        correct += int((pred == target).sum())
        total += target.numel()
    return correct, total


def chance_ceiling(total: int, chance: float) -> float:
    """Highest accuracy a predictor at chance plausibly reaches on ``total`` trials (mean + 4 sd + 2 hits)."""
    return (total * chance + 4 * math.sqrt(total * chance * (1 - chance)) + 2) / total


def run_probe(logits_fn: LogitsFn, cfg: ProbeParams, pool: np.ndarray, seed: int, receptive_field: int) -> dict:
    """Accuracy at each distance, chance level, and whether distances beyond the receptive field stay at chance."""
    chance = 1.0 / len(pool)
    by_distance: dict[str, float] = {}
    at_chance = True
    for d in cfg.distances:
        x, second = make_probe(d, cfg, pool, seed)
        correct, total = probe_accuracy(logits_fn, x, second, cfg.batch_size)
        acc = correct / total
        by_distance[str(d)] = round(acc, 4)
        if d > receptive_field and acc > chance_ceiling(total, chance):
            at_chance = False
    return {
        "accuracy_by_distance": by_distance,
        "mean_accuracy": round(float(np.mean(list(by_distance.values()))), 4),
        "chance": round(chance, 6),
        "receptive_field": receptive_field,
        "distances_beyond_receptive_field": [d for d in cfg.distances if d > receptive_field],
        "beyond_receptive_field_at_chance": at_chance,
    }


def model_logits_fn(model: torch.nn.Module, device: torch.device) -> LogitsFn:
    """Wrap an HF causal LM as a logits function for the probe."""
    model.eval()

    def fn(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).logits.float()

    return fn


def induction_oracle(receptive_field: int, vocab_size: int) -> LogitsFn:
    """A perfect induction head that sees only the last ``receptive_field`` positions (itself included).

    At each position it finds the latest earlier occurrence of the current token within reach and predicts the
    token that followed it; with no match it predicts token 0. Used by tests as the "can do it" reference.
    """

    def fn(x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape
        logits = torch.zeros(b, t, vocab_size)
        for i in range(b):
            row = x[i].tolist()
            for q in range(t):
                guess = 0
                for j in range(q - 1, max(-1, q - receptive_field), -1):
                    # needs tokens j and j + 1, both within reach of q (j + 1 <= q always holds).
                    if row[j] == row[q]:
                        guess = row[j + 1]
                        break
                logits[i, q, guess] = 1.0
        return logits

    return fn
