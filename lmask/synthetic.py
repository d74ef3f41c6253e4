"""Synthetic token sequences: the copy signal mixed into training, and the paired sequences that measure copying.

Training mix (``mix`` in params.yaml): a share of each batch is replaced by *periodic* text: a random segment of P
tokens (P uniform in [min_period, max_period]) of that row's natural text, repeated to fill the context. Every token
after the first period can be predicted by looking P tokens back, so these rows reward using distant context, which
natural text at this scale barely does; being the row's own text, they stay natural text.
The batch of a step is a function of (seed, step) alone, like the natural-text batch, so resume and DDP sharding
stay exact.

Copy gain (``copy`` in params.yaml): for a distance d, pairs of sequences that share a natural-text background and a
random span S at position p + d. In the *same* sequence S also sits at p; in the *control* a different random span
sits at p. The copy gain is NLL(S at p + d | control) - NLL(S at p + d | same), averaged over S's tokens 2..span:
the loss drop the first occurrence buys. Both sequences have identical tokens at every position except the span at
p, so position effects cancel (a naive NLL(first) - NLL(second) does not: random tokens late in a context are less
expected than early ones). Copying a token d positions back needs a window of at least d; a model whose receptive
field is at most d - span + 1 tokens cannot see any of the first occurrence and scores exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmask.params import CopyParams, MixParams


def token_pool(vocab_size: int, special_ids: list[int]) -> np.ndarray:
    """Token ids random spans draw from: the whole vocabulary but its special tokens (EOS)."""
    return np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids, dtype=np.int64))


def periodic_text(row: np.ndarray, rng: np.random.Generator, period: int) -> np.ndarray:
    """A random ``period``-token segment of ``row``, repeated to the row's length."""
    start = int(rng.integers(0, len(row) - period + 1))
    return np.resize(row[start : start + period], len(row))


def mix_batch(blocks: np.ndarray, mix: MixParams, seed: int, step: int, rng_stream: int = 1) -> np.ndarray:
    """Replace a ``mix.fraction`` share of a step's natural-text rows by periodic text (a new array; the input is
    not changed): which rows, their periods and segments depend on (seed, step) only."""
    if mix.fraction == 0:
        return blocks
    rng = np.random.default_rng([seed, step, rng_stream])
    out = blocks.copy()
    for row in range(len(out)):
        if rng.random() < mix.fraction:
            out[row] = periodic_text(blocks[row], rng, int(rng.integers(mix.min_period, mix.max_period + 1)))
    return out


@dataclass
class CopyPairs:
    """Paired probe sequences for one distance: ``same`` and ``control`` [n, length], scored on ``targets``."""

    distance: int
    same: np.ndarray
    control: np.ndarray
    start: int  # first position of the second occurrence

    @property
    def scored(self) -> slice:
        """Label positions scored: tokens 2..span of the second occurrence (the first is not predictable by copying)."""
        return slice(self.start + 1, self.same.shape[1])


def copy_pairs(background: np.ndarray, cfg: CopyParams, pool: np.ndarray, seed: int) -> list[CopyPairs]:
    """One CopyPairs per distance; sequences are cut to offset + d + span tokens (nothing after the span matters)."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for d in cfg.distances:
        length = cfg.offset + d + cfg.span
        same = np.empty((cfg.n_sequences, length), dtype=np.int64)
        control = np.empty_like(same)
        for k in range(cfg.n_sequences):
            seq = background[(k * 7 + d) % len(background), :length].copy()
            span, other = rng.choice(pool, size=cfg.span), rng.choice(pool, size=cfg.span)
            seq[cfg.offset + d :] = span
            same[k], control[k] = seq, seq
            same[k, cfg.offset : cfg.offset + cfg.span] = span
            control[k, cfg.offset : cfg.offset + cfg.span] = other
        out.append(CopyPairs(d, same, control, cfg.offset + d))
    return out


def repeated_text_blocks(background: np.ndarray) -> np.ndarray:
    """The repeated-text domain: each test block's first half followed by the same text again. Every token of the
    second half is predictable by copying from T/2 tokens back: text where long-range copying pays off."""
    half = background.shape[1] // 2
    out = background.copy()
    out[:, half : 2 * half] = background[:, :half]
    return out


__all__ = ["CopyPairs", "copy_pairs", "mix_batch", "periodic_text", "repeated_text_blocks", "token_pool"]
