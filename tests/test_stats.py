"""Paired bootstrap intervals: nominal coverage, exact gaps for known shifts, the verdict words, name-derived seeds."""

import math

import numpy as np
import pytest

from lmask.stats import (
    Estimate,
    bootstrap_mean,
    chunk_means,
    nll_gap_to_pct,
    paired_gap,
    seed_gaps,
    verdict,
)


def coverage(confidence: float, reps: int = 400, n: int = 40, mu: float = 1.5, sigma: float = 2.0) -> float:
    rng = np.random.default_rng(2024)
    hits = 0
    for r in range(reps):
        units = rng.normal(mu, sigma, size=n)
        e = bootstrap_mean(units, f"coverage-{r}", samples=2000, confidence=confidence)
        hits += e.lo <= mu <= e.hi
    return hits / reps


def test_bootstrap_ci_covers_the_true_mean_at_the_nominal_rate():
    """400 samples of 40 normal draws: the 95% interval covers the true mean ~95% of the time.

    Binomial sd at 400 reps is ~1.1 points; the percentile bootstrap runs about a point under nominal at n=40.
    An interval of the wrong width fails: a 68% one (the standard error) covers ~0.68, one as wide as the data's
    spread (sd instead of se) covers ~1.0.
    """
    assert 0.90 <= coverage(0.95) <= 0.98


def test_confidence_changes_coverage_the_right_way():
    assert 0.84 <= coverage(0.90, reps=300) <= 0.94
    assert coverage(0.6, reps=300) < 0.7


def test_bootstrap_interval_width_matches_the_standard_error():
    """With many units the percentile interval approaches mean ± 1.96·sd/sqrt(n)."""
    units = np.random.default_rng(5).normal(0.0, 1.0, size=2000)
    e = bootstrap_mean(units, "width", samples=4000)
    half = 1.959964 * units.std(ddof=1) / math.sqrt(units.size)
    assert e.value == pytest.approx(units.mean(), abs=1e-12)
    assert e.hi - e.lo == pytest.approx(2 * half, rel=0.08)
    assert e.lo < e.value < e.hi


def test_bootstrap_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="empty-thing"):
        bootstrap_mean(np.array([]), "empty-thing")


def test_paired_gap_of_identical_inputs_is_exactly_zero():
    nll = np.random.default_rng(1).random((12, 30)).astype(np.float32)
    e = paired_gap([nll], [nll.copy()], 3, "same")
    assert (e.value, e.lo, e.hi) == (0.0, 0.0, 0.0)
    assert verdict(e) == "no clear difference"


def test_constant_nll_shift_is_the_perplexity_ratio():
    b = np.random.default_rng(2).random((12, 30))
    e = paired_gap([b + 0.1], [b], 4, "shift")
    want = 100 * (math.exp(0.1) - 1)  # 10.517...%
    for x in (e.value, e.lo, e.hi):
        assert x == pytest.approx(want, abs=1e-9)
    assert verdict(e) == "worse" and verdict(e, lower_is_better=False) == "better"
    down = paired_gap([b - 0.1], [b], 4, "shift down")
    assert down.value == pytest.approx(100 * (math.exp(-0.1) - 1), abs=1e-9)
    assert verdict(down) == "better"
    assert nll_gap_to_pct(0.1) == pytest.approx(want, rel=1e-12)


def test_paired_gap_averages_seeds_per_chunk():
    """Two seeds of A against one B: the gap is of the seed-averaged NLL (checked by hand on a constant shift per
    seed), and seed_gaps reports each seed on its own."""
    b = np.random.default_rng(3).random((8, 10))
    e = paired_gap([b + 0.2, b + 0.0], [b], 2, "two seeds")
    assert e.value == pytest.approx(nll_gap_to_pct(0.1), abs=1e-9)
    assert e.lo == pytest.approx(e.value, abs=1e-9) and e.hi == pytest.approx(e.value, abs=1e-9)
    gaps = seed_gaps([b + 0.2, b + 0.0], [b])
    assert gaps == pytest.approx([nll_gap_to_pct(0.2), 0.0], abs=1e-9)


def test_chunk_means_by_hand():
    nll = np.arange(5 * 2, dtype=float).reshape(5, 2)  # block means 0.5, 2.5, 4.5, 6.5, 8.5
    means, blocks = chunk_means(nll, 2)
    np.testing.assert_allclose(means, [1.5, 5.5, 8.5])  # the last chunk is partial ...
    np.testing.assert_array_equal(blocks, [2, 2, 1])  # ... and weighs one block
    np.testing.assert_allclose(chunk_means(nll, 5)[0], [4.5])
    np.testing.assert_allclose(chunk_means(nll, 1)[0], [0.5, 2.5, 4.5, 6.5, 8.5])


def test_paired_gap_point_estimate_is_the_mean_gap_with_a_partial_chunk():
    b = np.random.default_rng(4).random((5, 10))
    a = b.copy()
    a[4] += 1.0  # only the last block (alone in the partial chunk) changes
    e = paired_gap([a], [b], 2, "partial")
    assert e.value == pytest.approx(nll_gap_to_pct(float((a - b).mean())), rel=1e-9)


def test_verdict_words():
    assert verdict(Estimate(-1.0, -2.0, -0.5)) == "better"
    assert verdict(Estimate(1.0, 0.5, 2.0)) == "worse"
    assert verdict(Estimate(0.1, -0.5, 0.7)) == "no clear difference"
    assert verdict(Estimate(0.5, 0.0, 1.0)) == "no clear difference"  # touching zero is not excluding it
    assert verdict(Estimate(-1.0, -2.0, -0.5), lower_is_better=False) == "worse"
    assert verdict(Estimate(1.0, 0.5, 2.0), lower_is_better=False) == "better"


def test_estimate_helpers():
    e = Estimate(0.1, -0.05, 0.2)
    assert e.ci == [-0.05, 0.2] and not e.excludes_zero()
    assert e.map(math.exp) == Estimate(math.exp(0.1), math.exp(-0.05), math.exp(0.2))
    assert Estimate(1.23456, 1.0, 1.5).rounded(2) == Estimate(1.23, 1.0, 1.5)


def test_seed_depends_on_the_comparison_name_only():
    rng = np.random.default_rng(6)
    units = rng.normal(size=30)
    first = bootstrap_mean(units, "half vs full")
    # Other comparisons run in between (as when a model is added to the report) do not move this interval.
    for name in ("quarter vs full", "aggressive vs full", "new schedule vs full"):
        bootstrap_mean(rng.normal(size=30), name)
    assert bootstrap_mean(units, "half vs full") == first
    assert bootstrap_mean(units.copy(), "half vs full") == first
    # The name is the seed: another name resamples differently (the point estimate stays the mean).
    other = bootstrap_mean(units, "half vs full ")
    assert other.value == first.value and (other.lo, other.hi) != (first.lo, first.hi)
    # paired_gap inherits it.
    a, b = rng.random((10, 8)), rng.random((10, 8))
    g = paired_gap([a], [b], 2, "gap")
    paired_gap([b], [a], 2, "other gap")
    assert paired_gap([a], [b], 2, "gap") == g
