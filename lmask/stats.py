"""Paired bootstrap intervals, and the words that follow from them (pure numpy).

Every comparison in the report is paired: two models scored on the same units (contiguous chunks of test blocks, or
the same probe sequences), so the interval is over the *difference* per unit, resampled with replacement
(percentile bootstrap). The resampling seed is derived from the comparison's name, so adding a model never shifts
another model's interval.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    value: float
    lo: float
    hi: float

    @property
    def ci(self) -> list[float]:
        return [self.lo, self.hi]

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def map(self, fn) -> Estimate:
        """The estimate under a monotone increasing function (e.g. an NLL gap to a perplexity ratio)."""
        return Estimate(fn(self.value), fn(self.lo), fn(self.hi))

    def rounded(self, digits: int) -> Estimate:
        return Estimate(round(self.value, digits), round(self.lo, digits), round(self.hi, digits))


def seed_for(name: str) -> int:
    return zlib.crc32(name.encode())


def bootstrap_mean(
    units: np.ndarray, name: str, samples: int = 2000, confidence: float = 0.95, weights: np.ndarray | None = None
) -> Estimate:
    """(Weighted) mean of ``units`` (one value per independent unit) with a percentile bootstrap interval."""
    units = np.asarray(units, dtype=np.float64).ravel()
    if units.size == 0:
        raise ValueError(f"{name}: no units to bootstrap")
    w = np.ones_like(units) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed_for(name))
    idx = rng.integers(0, units.size, size=(samples, units.size))
    means = (units[idx] * w[idx]).sum(axis=1) / w[idx].sum(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return Estimate(float((units * w).sum() / w.sum()), float(lo), float(hi))


def chunk_means(nll: np.ndarray, chunk_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean NLL, block count) per contiguous chunk of ``chunk_blocks`` test blocks; the last chunk may be partial,
    so resampling weights each chunk by its block count (blocks are equal length)."""
    starts = range(0, nll.shape[0], chunk_blocks)
    return (
        np.array([nll[s : s + chunk_blocks].mean() for s in starts]),
        np.array([len(nll[s : s + chunk_blocks]) for s in starts], dtype=np.float64),
    )


def paired_gap(
    a_nll: list[np.ndarray],
    b_nll: list[np.ndarray],
    chunk_blocks: int,
    name: str,
    samples: int = 2000,
    confidence: float = 0.95,
) -> Estimate:
    """Perplexity change of A relative to B in percent, with a paired bootstrap CI over test chunks.

    ``a_nll`` / ``b_nll`` hold one per-token NLL array per seed (seed i of A is paired with seed i of B; a single
    array stands for a model without seeds). Seeds are averaged per chunk before resampling, so the interval is over
    the test text; the spread across seeds is reported separately (``seed_gaps``).
    """
    a = np.mean([chunk_means(x, chunk_blocks)[0] for x in a_nll], axis=0)
    b = np.mean([chunk_means(x, chunk_blocks)[0] for x in b_nll], axis=0)
    weights = chunk_means(a_nll[0], chunk_blocks)[1]
    return bootstrap_mean(a - b, name, samples, confidence, weights).map(nll_gap_to_pct)


def seed_gaps(a_nll: list[np.ndarray], b_nll: list[np.ndarray]) -> list[float]:
    """Point estimate of the perplexity change (%) for each paired seed."""
    pairs = zip(a_nll, b_nll if len(b_nll) == len(a_nll) else b_nll * len(a_nll), strict=True)
    return [nll_gap_to_pct(float(a.mean() - b.mean())) for a, b in pairs]


def nll_gap_to_pct(gap: float) -> float:
    """A mean NLL difference as a perplexity change in percent: 100 · (exp(gap) - 1)."""
    return 100.0 * math.expm1(gap)


def verdict(estimate: Estimate, lower_is_better: bool = True) -> str:
    """The word the interval supports: "better", "worse" or "no clear difference" (it straddles zero)."""
    if not estimate.excludes_zero():
        return "no clear difference"
    below = estimate.hi < 0
    return "better" if below == lower_is_better else "worse"


__all__ = [
    "Estimate",
    "bootstrap_mean",
    "chunk_means",
    "nll_gap_to_pct",
    "paired_gap",
    "seed_gaps",
    "verdict",
]
