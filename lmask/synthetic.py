"""Synthetic token sequences: the copy signal mixed into training, and the paired sequences that measure copying.

Training mix (``mix`` in params.yaml): a share of each batch is replaced by *periodic* text: a random segment of P
tokens (P uniform in [min_period, max_period]) of that row's natural text, repeated to fill the context. Every token
after the first period can be predicted by looking P tokens back, so these rows reward using distant context, which
natural text at this scale barely does; being the row's own text, they stay natural text.
The batch of a step is a function of (seed, step) alone, like the natural-text batch, so resume and DDP sharding
stay exact.

Copy gain (``copy`` in params.yaml): for a distance d, pairs of sequences that share a natural-text background and a
span S of natural text (from another held-out document) at position p + d. In the *same* sequence S also sits at p;
in the *control* a different natural span sits at p. The copy gain is NLL(S at p + d | control) - NLL(S at p + d |
same), averaged over S's tokens 2..span: the loss drop the first occurrence buys. Both sequences have identical
tokens at every position except the span at p, so position effects cancel. Copying a token d positions back needs a
window of at least d; a model whose receptive field is at most d - span + 1 tokens cannot see any of the first
occurrence and scores exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lmask.params import CopyParams, MixParams


def periodic_text(row: np.ndarray, rng: np.random.Generator, period: int) -> np.ndarray:
    """A random ``period``-token segment of ``row``, repeated to the row's length."""
    start = int(rng.integers(0, len(row) - period + 1))
    return np.resize(row[start : start + period], len(row))


def random_periodic(rng: np.random.Generator, length: int, period: int, vocab_size: int, prefix: int = 0) -> np.ndarray:
    """``period`` distinct uniform random token ids (never id 0, the end-of-text token here), repeated to ``length``,
    after ``prefix`` other distinct ids that never repeat. Only copying predicts anything after the first period;
    distinct ids make the copy unambiguous (a repeated id inside the segment would have two successors), a varying
    period leaves no fixed offset to attend to, and a varying prefix moves the first occurrence through the row:
    copying is learned only from the positions where training put first occurrences (README)."""
    ids = rng.choice(np.arange(1, vocab_size), size=prefix + period, replace=False)
    return np.concatenate([ids[:prefix], np.resize(ids[prefix:], length - prefix)])


def copy_rows(
    n: int,
    length: int,
    min_period: int,
    max_period: int,
    vocab_size: int,
    seed: int,
    step: int,
    prefixed: bool | float = False,
) -> tuple[np.ndarray, np.ndarray]:
    """A batch of ``random_periodic`` rows for a copy warm-up step, and each row's copy start: the first position
    that copying predicts (its period, plus its prefix in a prefixed row: 0 to length - 2 * period ids, so that the
    row still repeats its segment once). ``prefixed``: the share of rows with a prefix, the first
    prefixed_row_count(n, prefixed) of them (true = all; unprefixed rows keep rewarding copying from a row's start
    while prefixed ones teach later sources: README). A function of (seed, step) alone, like every other batch."""
    rng = np.random.default_rng([seed, step, 2])
    periods = rng.integers(min_period, max_period + 1, size=n)
    k = prefixed_row_count(n, prefixed)
    rows, starts = [], []
    for row, period in enumerate(periods.tolist()):
        prefix = int(rng.integers(0, length - 2 * period + 1)) if row < k else 0
        rows.append(random_periodic(rng, length, period, vocab_size, prefix))
        starts.append(prefix + period)
    return np.stack(rows), np.array(starts, dtype=np.int64)


def position_offsets(n: int, length: int, context: int, seed: int, step: int) -> np.ndarray:
    """The first position id of each of a step's ``n`` rows of ``length`` tokens, uniform in [0, context - length]:
    short rows placed anywhere in the ``context`` positions natural rows use. Drawn from a stream of their own, so the
    rows themselves (``copy_rows``) are the same draws with or without offsets; a function of (seed, step) alone."""
    return np.random.default_rng([seed, step, 3]).integers(0, context - length + 1, size=n, dtype=np.int64)


def prefixed_row_count(n: int, share: float) -> int:
    """How many of a step's ``n`` copy rows are prefixed: ``share`` of them, rounded half up (1 of 2 at 0.5)."""
    return min(n, math.floor(n * float(share) + 0.5))


def mix_batch(
    blocks: np.ndarray, mix: MixParams, seed: int, step: int, vocab_size: int, rng_stream: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Replace a ``mix.fraction`` share of a step's natural-text rows by periodic rows (a new array; the input is
    not changed), and return each row's period (its copy start; 0 = natural text). ``mix.kind`` random: distinct
    random ids repeated (only copying pays); natural: a segment of the row's own text repeated. Which rows, their
    periods and segments depend on (seed, step) only."""
    periods = np.zeros(len(blocks), dtype=np.int64)
    if mix.fraction == 0:
        return blocks, periods
    rng = np.random.default_rng([seed, step, rng_stream])
    out = blocks.copy()
    for row in range(len(out)):
        if rng.random() < mix.fraction:
            period = int(rng.integers(mix.min_period, mix.max_period + 1))
            if mix.kind == "random":
                out[row] = random_periodic(rng, blocks.shape[1], period, vocab_size)
            else:
                out[row] = periodic_text(blocks[row], rng, period)
            periods[row] = period
    return out, periods


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


def natural_span(docs: np.ndarray, lengths: np.ndarray, exclude: int, rng: np.random.Generator, span: int):
    """``span`` consecutive tokens of natural text from a random document other than ``exclude``."""
    j = int(rng.integers(0, len(docs) - 1))
    j += j >= exclude
    start = int(rng.integers(0, lengths[j] - span + 1))
    return docs[j, start : start + span]


def copy_pairs(docs: np.ndarray, lengths: np.ndarray, cfg: CopyParams, seed: int) -> list[CopyPairs]:
    """One CopyPairs per distance, ``cfg.n_sequences`` each: a held-out document's first offset + d + span tokens
    as the background, and spans of natural text from other held-out documents (what a model trained on text can
    learn to copy; uniform random ids are less likely to it than a uniform guess). Fewer sequences for a model =
    the first ones of the same list, so every model's probe pairs with the baselines'."""
    rng = np.random.default_rng([seed, 7])
    out = []
    for d in cfg.distances:
        length = cfg.offset + d + cfg.span
        hosts = np.flatnonzero(lengths >= length)
        if len(docs) < 2 or not len(hosts):
            raise ValueError(f"copy.distances: no held-out document has the {length} tokens distance {d} needs")
        same = np.empty((cfg.n_sequences, length), dtype=np.int64)
        control = np.empty_like(same)
        for k in range(cfg.n_sequences):
            host = int(hosts[rng.integers(0, len(hosts))])
            seq = docs[host, :length].copy()
            span = natural_span(docs, lengths, host, rng, cfg.span)
            other = natural_span(docs, lengths, host, rng, cfg.span)
            seq[cfg.offset + d :] = span
            same[k], control[k] = seq, seq
            same[k, cfg.offset : cfg.offset + cfg.span] = span
            control[k, cfg.offset : cfg.offset + cfg.span] = other
        out.append(CopyPairs(d, same, control, cfg.offset + d))
    return out


def repeated_text_documents(docs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The repeated-text domain: each document's first half followed by the same text again (lengths: twice the
    half). Every token of the second half is predictable by copying from half a document back."""
    half = lengths // 2
    out = docs.copy()
    for row, src, h in zip(out, docs, half, strict=True):
        row[h : 2 * h] = src[:h]
    return out, 2 * half


__all__ = [
    "CopyPairs",
    "copy_pairs",
    "copy_rows",
    "mix_batch",
    "natural_span",
    "periodic_text",
    "prefixed_row_count",
    "random_periodic",
    "repeated_text_documents",
]
