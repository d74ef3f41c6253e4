"""Intervals that cover what changes between runs, and the words that follow from them (numpy + scipy).

Every comparison is paired: two models scored on the same documents (or probe sequences), from the same baseline
and fine-tuning seed. The data of one comparison is a gap array ``G[b, s, d]``: baseline b, fine-tuning seed s
(nested in b), document d (crossed with both, weighted by its scored tokens). Its mean is the estimate, and the
variance of that mean has five parts: baseline, seed, document, baseline × document and residual,

    Var(mean) = σ²_b/B + σ²_s/(BS) + σ²_d/D + σ²_bd/(BD) + σ²_e/(BSD).

``variance_components`` estimates it by the ANOVA of the balanced crossed design (equal to REML there while no
component is negative): with mean squares MS_B (df B - 1), MS_D (df D - 1) and MS_BD (df (B - 1)(D - 1)),

    se² = (MS_B + max(0, MS_D - MS_BD)) / (BSD),

unbiased when the document component is positive (MS_B carries baseline, seed, interaction and residual; the
document term is dropped where its estimate is negative). Its degrees of freedom are Satterthwaite's for that
combination of mean squares, shrunk toward the run term's B - 1 by the run term's share of se²: Satterthwaite's df
is itself estimated from the same mean squares, and with three baselines a low draw of MS_B gives a high df exactly
when se is too small (92.4 % coverage for a nominal 95 % in tests/test_stats.py's baseline-dominated simulation;
93.5-96 % in every regime simulated with the shrinkage, documents dominating or baselines, B = 3, 5 and 8).

No word comes from one baseline (the run-to-run variance cannot be estimated: ``ONE_RUN``) or from fewer than
``MIN_UNITS`` documents (``TOO_FEW``). A comparison of identical numbers is no test (``p`` None) and never enters a
Holm family. ``mde80`` is the smallest true gap this design detects with 80 % power, (t(1 - α/2) + t(0.8)) · se:
about twice the interval's half-width, not the half-width.

Words: "better" / "worse" only where the Holm-corrected test within the comparison's family (one table column: the
same comparison across schedules, or the copy probe across distances) rejects "no difference". A rejection implies
the unadjusted interval excludes zero, so the words never contradict the intervals shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as _scipy_stats

MIN_UNITS = 10  # no interval from fewer documents (or probe sequences) than this
TOO_FEW = "too few documents"
ONE_RUN = "one baseline: no run-to-run variance, no word"
NO_DIFFERENCE = "no clear difference"
IDENTICAL = "identical (no test)"  # the same numbers on both sides, e.g. a full-attention schedule zero-shot
POWER = 0.8  # mde80's power


@dataclass(frozen=True)
class Estimate:
    """A mean gap with its interval, test p-value, degrees of freedom, minimum detectable effect and per-baseline
    point estimates. ``lo``/``hi`` are None where no interval is drawn, and ``why`` says why."""

    value: float
    lo: float | None
    hi: float | None
    p: float | None = None  # two-sided p of "no difference" (one-sided against a threshold for the copy gate)
    units: int = 0  # documents or probe sequences
    per_run: tuple[float, ...] = ()  # one point estimate per baseline (per seed with one baseline)
    df: float | None = None
    se: float | None = None
    mde80: float | None = None  # smallest true gap detected with 80 % power at this design's se and df
    why: str | None = None  # TOO_FEW or ONE_RUN where there is no interval

    @property
    def ci(self) -> list[float] | None:
        return None if self.lo is None else [self.lo, self.hi]

    def map(self, fn) -> Estimate:
        """The estimate under a monotone increasing function (e.g. an NLL gap to a perplexity ratio); ``mde80`` maps
        as a gap above zero (fn(mde80) - fn(0))."""
        lo, hi = (None, None) if self.lo is None else (fn(self.lo), fn(self.hi))
        mde = None if self.mde80 is None else fn(self.mde80) - fn(0.0)
        return replace(self, value=fn(self.value), lo=lo, hi=hi, per_run=tuple(fn(x) for x in self.per_run), mde80=mde)


@dataclass(frozen=True)
class Components:
    """se² of a grand mean and its degrees of freedom, with the share of se² that runs (baselines, seeds) carry."""

    se2: float
    df: float
    run_share: float


def mean_squares(x: np.ndarray) -> tuple[float, float, float]:
    """(MS_B, MS_D, MS_BD) of a balanced array x[b, s, d] (seeds nested in baselines, documents crossed)."""
    n_b, n_s, n_d = x.shape
    grand = x.mean()
    xb, xd, xbd = x.mean(axis=(1, 2)), x.mean(axis=(0, 1)), x.mean(axis=1)
    ms_b = n_s * n_d * float(((xb - grand) ** 2).sum()) / (n_b - 1)
    ms_d = n_b * n_s * float(((xd - grand) ** 2).sum()) / (n_d - 1)
    inter = xbd - xb[:, None] - xd[None, :] + grand
    ms_bd = n_s * float((inter**2).sum()) / ((n_b - 1) * (n_d - 1))
    return ms_b, ms_d, ms_bd


def satterthwaite(terms: list[tuple[float, float]]) -> float:
    """Satterthwaite's degrees of freedom of Σ c·MS, from (c·MS, df) per term."""
    total = sum(c for c, _ in terms)
    return total**2 / sum(c * c / df for c, df in terms)


def variance_components(x: np.ndarray) -> Components:
    """se² of x's grand mean over baselines, seeds and documents (B >= 2, D >= 2), and its degrees of freedom."""
    n_b, n_s, n_d = x.shape
    n = n_b * n_s * n_d
    ms_b, ms_d, ms_bd = mean_squares(x)
    terms = [(ms_b / n, float(n_b - 1))]
    if ms_d > ms_bd:
        terms += [(ms_d / n, float(n_d - 1)), (-ms_bd / n, float((n_b - 1) * (n_d - 1)))]
    se2 = sum(c for c, _ in terms)
    if se2 <= 0.0:
        return Components(0.0, math.inf, 1.0)
    run_share = terms[0][0] / se2
    df_run = float(n_b - 1)
    df = df_run + (satterthwaite(terms) - df_run) * (1.0 - run_share)
    return Components(se2, df, run_share)


def mde(se: float, df: float, confidence: float = 0.95, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided test at level 1 - confidence with the given power."""
    t = _scipy_stats.t
    return float((t.ppf(0.5 + confidence / 2, df) + t.ppf(power, df)) * se)


def doc_means(nll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean NLL, scored tokens) per document row of a per-token NLL array [docs, T-1] padded with NaN."""
    nll = np.asarray(nll, dtype=np.float64)
    tokens = np.isfinite(nll).sum(axis=1).astype(np.float64)
    if (tokens == 0).any():
        raise ValueError("a document has no scored tokens")
    return np.nansum(nll, axis=1) / tokens, tokens


def gap_array(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(G[b, s, d], weights[d]) from per-token NLL arrays ``a[b][s]`` and their paired references ``b[b][s]``.

    A reference with one entry per baseline (the baseline itself, or zero-shot) pairs with every seed of A.
    """
    rows = []
    weights = None
    for runs_a, runs_b in zip(a, b, strict=True):
        refs = runs_b if len(runs_b) == len(runs_a) else runs_b * len(runs_a)
        per_seed = []
        for x, y in zip(runs_a, refs, strict=True):
            (mx, wx), (my, wy) = doc_means(x), doc_means(y)
            if not np.array_equal(wx, wy):
                raise ValueError("paired arrays score different tokens")
            weights = wx
            per_seed.append(mx - my)
        rows.append(per_seed)
    return np.asarray(rows, dtype=np.float64), weights


def _weighted(gaps: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """G scaled per document by w_d·D/Σw: its plain mean is the token-weighted mean, and every document enters the
    variance with its weight (the ratio estimator with the weights held fixed)."""
    n_d = gaps.shape[2]
    w = np.ones(n_d) if weights is None else np.asarray(weights, dtype=np.float64)
    return gaps * (w * n_d / w.sum())[None, None, :]


def _test(
    value: float, comp: Components, units: int, per_run: tuple, confidence: float, threshold: float | None
) -> Estimate:
    if comp.se2 == 0.0:  # every run and document agree exactly: nothing to test, no family member
        return Estimate(value, value, value, None, units, per_run, math.inf, 0.0, 0.0)
    se = math.sqrt(comp.se2)
    half = float(_scipy_stats.t.ppf(0.5 + confidence / 2, comp.df)) * se
    if threshold is None:
        p = float(2 * _scipy_stats.t.sf(abs(value) / se, comp.df))
    else:
        p = float(_scipy_stats.t.sf((value - threshold) / se, comp.df))
    return Estimate(value, value - half, value + half, p, units, per_run, comp.df, se, mde(se, comp.df, confidence))


def run_estimate(
    gaps: np.ndarray, weights: np.ndarray | None = None, confidence: float = 0.95, threshold: float | None = None
) -> Estimate:
    """Mean of G[b, s, d] (document-weighted), with an interval covering baseline, seed and document variance.

    ``threshold`` makes ``p`` one-sided: the chance of a mean this far above ``threshold`` if the true gap were at it.
    """
    g = np.asarray(gaps, dtype=np.float64)
    if g.ndim != 3 or g.size == 0:
        raise ValueError(f"gaps must be [baselines, seeds, units], got shape {g.shape}")
    n_b, n_s, n_d = g.shape
    x = _weighted(g, weights)
    per_bs = x.mean(axis=2)
    value = float(per_bs.mean())
    per_run = tuple(float(v) for v in (per_bs.mean(axis=1) if n_b > 1 else per_bs[0]))
    if n_d < MIN_UNITS:
        return Estimate(value, None, None, None, n_d, per_run, why=TOO_FEW)
    if n_b < 2:
        return Estimate(value, None, None, None, n_d, per_run, why=ONE_RUN)
    return _test(value, variance_components(x), n_d, per_run, confidence, threshold)


def contrast_estimate(
    a: tuple[np.ndarray, np.ndarray | None], b: tuple[np.ndarray, np.ndarray | None], confidence: float = 0.95
) -> Estimate:
    """The difference of two comparisons' means scored on *different* documents (e.g. one schedule's gap on the code
    domain minus its gap on test): runs are shared, documents are not. ``a`` and ``b`` are (G[b, s, d], weights).

    se² = MS_B of the per-run difference / (BS) + each domain's document term, df as in ``variance_components``.
    """
    xa, xb = (_weighted(np.asarray(g, dtype=np.float64), w) for g, w in (a, b))
    if xa.shape[:2] != xb.shape[:2]:
        raise ValueError(f"contrast of different runs: {xa.shape[:2]} against {xb.shape[:2]}")
    n_b, n_s = xa.shape[:2]
    runs = xa.mean(axis=2) - xb.mean(axis=2)  # [B, S]
    value = float(runs.mean())
    per_run = tuple(float(v) for v in (runs.mean(axis=1) if n_b > 1 else runs[0]))
    units = min(xa.shape[2], xb.shape[2])
    if units < MIN_UNITS:
        return Estimate(value, None, None, None, units, per_run, why=TOO_FEW)
    if n_b < 2:
        return Estimate(value, None, None, None, units, per_run, why=ONE_RUN)
    run_ms = n_s * float(((runs.mean(axis=1) - value) ** 2).sum()) / (n_b - 1)
    terms = [(run_ms / (n_b * n_s), float(n_b - 1))]
    for x in (xa, xb):
        _, ms_d, ms_bd = mean_squares(x)
        n = x.size
        if ms_d > ms_bd:
            terms += [(ms_d / n, float(x.shape[2] - 1)), (-ms_bd / n, float((n_b - 1) * (x.shape[2] - 1)))]
    se2 = sum(c for c, _ in terms)
    if se2 <= 0.0:
        return _test(value, Components(0.0, math.inf, 1.0), units, per_run, confidence, None)
    share = terms[0][0] / se2
    df = (n_b - 1) + (satterthwaite(terms) - (n_b - 1)) * (1.0 - share)
    return _test(value, Components(se2, df, share), units, per_run, confidence, None)


def holm(pvalues: list[float | None], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down rejections at family-wise level ``alpha`` (None: no test, not in the family)."""
    adjusted = holm_adjusted(pvalues)
    return [p is not None and p <= alpha for p in adjusted]


def holm_adjusted(pvalues: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values: reject at level alpha exactly where the adjusted p is <= alpha."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running, m = 0.0, len(tested)
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def verdict(estimate: Estimate, rejected: bool, lower_is_better: bool = True) -> str:
    """The word: "better" / "worse" where the (Holm-corrected) test rejects, else no difference, or why no interval."""
    if estimate.lo is None:
        return estimate.why or TOO_FEW
    if estimate.se == 0.0:
        return IDENTICAL
    if not rejected:
        return NO_DIFFERENCE
    return "better" if (estimate.value < 0) == lower_is_better else "worse"


def nll_gap_to_pct(gap: float) -> float:
    """A mean NLL difference as a perplexity change in percent: 100 · (exp(gap) - 1)."""
    return 100.0 * math.expm1(gap)


__all__ = [
    "MIN_UNITS",
    "IDENTICAL",
    "NO_DIFFERENCE",
    "ONE_RUN",
    "TOO_FEW",
    "Components",
    "Estimate",
    "contrast_estimate",
    "doc_means",
    "gap_array",
    "holm",
    "holm_adjusted",
    "mde",
    "mean_squares",
    "nll_gap_to_pct",
    "run_estimate",
    "satterthwaite",
    "variance_components",
    "verdict",
]
