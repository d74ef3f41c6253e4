"""Intervals over runs and documents: nominal coverage with run-level noise, exact gaps for known shifts, Holm by
hand, the words, and the too-few-documents rule."""

import math

import numpy as np
import pytest

from lmask.stats import (
    MIN_UNITS,
    TOO_FEW,
    Estimate,
    doc_means,
    gap_array,
    holm,
    holm_adjusted,
    nll_gap_to_pct,
    run_estimate,
    verdict,
)


def simulate(rng, effect: float, n_b: int = 3, n_s: int = 2, n_d: int = 32, run_sd=0.02, seed_sd=0.01, doc_sd=0.03):
    """G[b, s, d] = effect + baseline noise + seed noise + document effect + residual, the structure of a real
    comparison: documents are shared by every run (crossed), runs differ by baseline and fine-tuning seed."""
    doc = rng.normal(0, doc_sd, size=n_d)
    base = rng.normal(0, run_sd, size=(n_b, 1, 1))
    seed = rng.normal(0, seed_sd, size=(n_b, n_s, 1))
    resid = rng.normal(0, 0.01, size=(n_b, n_s, n_d))
    return effect + base + seed + doc[None, None, :] + resid


def coverage(reps: int = 600, **kw) -> float:
    rng = np.random.default_rng(2026)
    hits = 0
    for _ in range(reps):
        e = run_estimate(simulate(rng, 0.05, **kw))
        hits += e.lo <= 0.05 <= e.hi
    return hits / reps


def test_interval_covers_a_known_effect_at_the_nominal_rate_with_run_level_noise():
    """600 simulated experiments of 3 baselines × 2 seeds × 32 documents, with baseline, seed and document noise:
    the 95 % interval covers the true effect 93-99.5 % of the time (binomial sd at 600 reps is ~0.9 points; the
    variance sum counts the run × document residual twice, so it errs wide, never narrow)."""
    assert 0.93 <= coverage() <= 0.995


def test_an_interval_over_documents_alone_would_undercover():
    """The negative control: the same simulations with the run-to-run spread ignored (one 'baseline' made of the
    run average) cover far below 95 %: the defect the replicated design fixes."""
    rng = np.random.default_rng(2026)
    hits = 0
    for _ in range(300):
        g = simulate(rng, 0.05, run_sd=0.05)
        e = run_estimate(g.mean(axis=(0, 1), keepdims=True))  # documents only
        hits += e.lo <= 0.05 <= e.hi
    assert hits / 300 < 0.8


def test_run_noise_widens_the_interval():
    rng = np.random.default_rng(1)
    quiet = run_estimate(simulate(rng, 0.0, run_sd=0.0, seed_sd=0.0))
    noisy = run_estimate(simulate(np.random.default_rng(1), 0.0, run_sd=0.1, seed_sd=0.0))
    assert noisy.hi - noisy.lo > 3 * (quiet.hi - quiet.lo)


def test_point_estimate_and_per_baseline_values_by_hand():
    g = np.zeros((2, 2, 10))
    g[0] = 0.1  # baseline 0: both seeds +0.1
    g[1, 0], g[1, 1] = 0.2, 0.4  # baseline 1: seeds +0.2, +0.4 -> +0.3
    w = np.ones(10)
    e = run_estimate(g, w)
    assert e.value == pytest.approx(0.2) and e.per_run == pytest.approx((0.1, 0.3))
    # Run variance: var(0.1, 0.3) / 2 = 0.01; documents all agree: 0. t with 1 degree of freedom.
    half = 12.706204736 * math.sqrt(0.01)
    assert (e.lo, e.hi) == pytest.approx((0.2 - half, 0.2 + half), rel=1e-6)
    assert e.df == pytest.approx(1.0)


def test_document_weights_by_hand():
    g = np.array([[[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]])
    w = np.array([9.0, 1, 1, 1, 1, 1, 1, 1, 1, 1])  # the first document has 9 of 18 scored tokens
    assert run_estimate(g, w).value == pytest.approx(0.5)


def test_fewer_than_ten_documents_give_no_interval():
    g = np.random.default_rng(0).normal(size=(3, 2, MIN_UNITS - 1))
    e = run_estimate(g)
    assert e.lo is None and e.ci is None and e.p is None and e.units == MIN_UNITS - 1
    assert verdict(e, rejected=True) == TOO_FEW
    assert run_estimate(np.random.default_rng(0).normal(size=(3, 2, MIN_UNITS))).lo is not None


def test_identical_inputs_give_exactly_zero():
    nll = np.random.default_rng(1).random((12, 30)).astype(np.float32)
    gaps, w = gap_array([[nll, nll]], [[nll.copy(), nll.copy()]])
    e = run_estimate(gaps, w)
    assert (e.value, e.lo, e.hi, e.p) == (0.0, 0.0, 0.0, 1.0)


def test_constant_nll_shift_is_the_perplexity_ratio():
    b = np.random.default_rng(2).random((12, 30))
    gaps, w = gap_array([[b + 0.1], [b + 0.1]], [[b], [b]])
    e = run_estimate(gaps, w).map(nll_gap_to_pct)
    want = 100 * (math.exp(0.1) - 1)  # 10.517...%
    for x in (e.value, e.lo, e.hi, *e.per_run):
        assert x == pytest.approx(want, abs=1e-9)


def test_nan_padding_is_not_scored_and_pairs_must_match():
    a = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan]])
    means, tokens = doc_means(a)
    np.testing.assert_allclose(means, [1.5, 3.0])
    np.testing.assert_array_equal(tokens, [2, 1])
    with pytest.raises(ValueError, match="different tokens"):
        gap_array([[a]], [[np.array([[1.0, 2.0, 3.0], [3.0, np.nan, np.nan]])]])
    with pytest.raises(ValueError, match="no scored tokens"):
        doc_means(np.array([[np.nan, np.nan]]))


def test_one_reference_per_baseline_pairs_with_every_seed():
    b = np.random.default_rng(3).random((10, 8))
    gaps, _ = gap_array([[b + 0.2, b + 0.0]], [[b]])
    np.testing.assert_allclose(gaps[0, :, 0], [0.2, 0.0])


def test_holm_by_hand():
    """p = 0.01, 0.04, 0.03, 0.20 at alpha 0.05: sorted 0.01 <= 0.05/4 rejects, 0.03 > 0.05/3 stops; so only the
    first. Adjusted: 4·0.01 = 0.04, max(0.04, 3·0.03) = 0.09, max(0.09, 2·0.04) = 0.09, max(0.09, 0.20) = 0.20."""
    p = [0.01, 0.04, 0.03, 0.20]
    assert holm(p, 0.05) == [True, False, False, False]
    assert holm_adjusted(p) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert holm([0.001, 0.02, None], 0.05) == [True, True, False]  # None: not tested, 2 in the family
    assert holm([0.04, 0.04], 0.05) == [False, False]  # each alone would pass at 0.05


def test_verdict_words_follow_the_test_and_the_sign():
    better, worse = Estimate(-1.0, -2.0, -0.5, 0.001, 30), Estimate(1.0, 0.5, 2.0, 0.001, 30)
    assert verdict(better, True) == "better" and verdict(worse, True) == "worse"
    assert verdict(better, False) == "no clear difference"
    assert verdict(better, True, lower_is_better=False) == "worse"


def test_threshold_makes_the_test_one_sided():
    g = np.full((3, 1, 20), 0.2) + np.random.default_rng(4).normal(0, 0.001, size=(3, 1, 20))
    assert run_estimate(g, threshold=0.05).p < 1e-6  # far above the threshold
    assert run_estimate(g, threshold=0.5).p > 0.999  # far below it
