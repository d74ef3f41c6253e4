"""Intervals over runs and documents: nominal coverage where documents or baselines dominate, ANOVA and Satterthwaite
by hand, exact gaps for known shifts, Holm by hand, the words, the one-baseline and too-few-documents rules."""

import math

import numpy as np
import pytest
import scipy.stats

from lmask.stats import (
    MIN_UNITS,
    ONE_RUN,
    TOO_FEW,
    Estimate,
    contrast_estimate,
    doc_means,
    gap_array,
    holm,
    holm_adjusted,
    mean_squares,
    nll_gap_to_pct,
    run_estimate,
    satterthwaite,
    variance_components,
    verdict,
)


def simulate(
    rng,
    effect: float,
    n_b: int = 3,
    n_s: int = 2,
    n_d: int = 32,
    run_sd=0.02,
    seed_sd=0.01,
    doc_sd=0.03,
    inter_sd=0.01,
    resid_sd=0.01,
):
    """G[b, s, d] = effect + baseline + seed + document + baseline × document + residual: the crossed random-effects
    structure of a real comparison (documents shared by every run, seeds nested in baselines)."""
    base = rng.normal(0, run_sd, size=(n_b, 1, 1))
    seed = rng.normal(0, seed_sd, size=(n_b, n_s, 1))
    doc = rng.normal(0, doc_sd, size=(1, 1, n_d))
    inter = rng.normal(0, inter_sd, size=(n_b, 1, n_d))
    resid = rng.normal(0, resid_sd, size=(n_b, n_s, n_d))
    return effect + base + seed + doc + inter + resid


REGIMES = {  # run_sd / doc_sd: which component carries most of se² with 3 baselines and 32 documents
    "documents dominate": dict(run_sd=0.003, seed_sd=0.002, doc_sd=0.05),
    "baselines dominate": dict(run_sd=0.03, seed_sd=0.005, doc_sd=0.03),
}


def coverage(reps: int, seed: int = 2026, **kw) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        e = run_estimate(simulate(rng, 0.05, **kw))
        hits += e.lo <= 0.05 <= e.hi
    return hits / reps


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("n_b", [3, 5, 8])
def test_interval_covers_at_the_nominal_rate_in_both_regimes(regime, n_b):
    """2000 simulated experiments of B baselines × 2 seeds × 32 documents per cell: the 95 % interval covers the true
    effect at least 93.5 % of the time everywhere (binomial sd ~0.5 points), and at most 97 % where documents carry
    se² (the previous rule, t with B - 1 df, covered 100 % there, at 2.4× the needed width)."""
    rate = coverage(2000, **REGIMES[regime], n_b=n_b)
    assert rate >= 0.935
    if regime == "documents dominate":
        assert rate <= 0.97


def test_plain_satterthwaite_undercovers_where_baselines_dominate():
    """The reason for the shrinkage: Satterthwaite's df alone covers below 93.5 % with 3 baselines where they carry
    se² (an independent implementation of the unshrunk rule, same simulations)."""
    rng = np.random.default_rng(2026)
    hits = 0
    for _ in range(2000):
        g = simulate(rng, 0.05, **REGIMES["baselines dominate"])
        comp = variance_components(g)
        ms_b, ms_d, ms_bd = mean_squares(g)
        n = g.size
        terms = [(ms_b / n, 2.0)] + ([(ms_d / n, 31.0), (-ms_bd / n, 62.0)] if ms_d > ms_bd else [])
        df = sum(c for c, _ in terms) ** 2 / sum(c * c / d for c, d in terms)
        half = scipy.stats.t.ppf(0.975, df) * math.sqrt(comp.se2)
        hits += abs(g.mean() - 0.05) <= half
    assert hits / 2000 < 0.935


def test_an_interval_over_documents_alone_would_undercover():
    """The negative control: the run-to-run spread ignored (each run's gap replaced by the run average, so MS_B is
    0) covers far below 95 %: the defect the replicated design fixes."""
    rng = np.random.default_rng(2026)
    hits = 0
    for _ in range(300):
        g = simulate(rng, 0.05, run_sd=0.05)
        e = run_estimate(np.broadcast_to(g.mean(axis=(0, 1), keepdims=True), g.shape))
        hits += e.lo is not None and e.lo <= 0.05 <= e.hi
    assert hits / 300 < 0.8


def test_run_noise_widens_the_interval():
    rng = np.random.default_rng(1)
    quiet = run_estimate(simulate(rng, 0.0, run_sd=0.0, seed_sd=0.0))
    noisy = run_estimate(simulate(np.random.default_rng(1), 0.0, run_sd=0.1, seed_sd=0.0))
    assert noisy.hi - noisy.lo > 3 * (quiet.hi - quiet.lo)


def test_variance_components_and_satterthwaite_by_hand():
    """x = [[1, 2, 6], [3, 5, 7]] (2 baselines × 1 seed × 3 documents), grand mean 4.
    Baseline means 3, 5: MS_B = 3·(1 + 1)/1 = 6. Document means 2, 3.5, 6.5: MS_D = 2·(4 + 0.25 + 6.25)/2 = 10.5.
    Interaction residuals ±0.5 in four cells: MS_BD = 1/2 = 0.5. se² = (6 + 10.5 - 0.5)/6 = 8/3.
    Satterthwaite: terms 1 (df 1), 1.75 (df 2), -1/12 (df 2): (8/3)² / (1 + 1.53125 + 0.00347) = 2.80548.
    Run share 1/(8/3) = 0.375, so df = 1 + (2.80548 - 1)·0.625 = 2.12843."""
    x = np.array([[[1.0, 2.0, 6.0]], [[3.0, 5.0, 7.0]]])
    assert mean_squares(x) == pytest.approx((6.0, 10.5, 0.5))
    assert satterthwaite([(1.0, 1.0), (1.75, 2.0), (-1 / 12, 2.0)]) == pytest.approx(2.80548, abs=1e-5)
    comp = variance_components(x)
    assert comp.se2 == pytest.approx(8 / 3)
    assert comp.run_share == pytest.approx(0.375)
    assert comp.df == pytest.approx(2.128425, abs=1e-5)


def test_a_negative_document_component_is_dropped():
    """MS_D below MS_BD: the document term is estimated negative, so se² is MS_B/N alone with B - 1 df."""
    x = np.array([[[1.0, 3.0, 2.0]], [[4.0, 2.0, 3.0]]])  # document means all 2.5: MS_D = 0 < MS_BD
    ms_b, ms_d, ms_bd = mean_squares(x)
    assert ms_d == 0.0 and ms_bd > 0
    comp = variance_components(x)
    assert comp.se2 == pytest.approx(ms_b / 6) and comp.df == pytest.approx(1.0)


def test_mde80_is_about_twice_the_half_width():
    e = run_estimate(simulate(np.random.default_rng(5), 0.0, n_b=5))
    t = scipy.stats.t
    assert e.mde80 == pytest.approx((t.ppf(0.975, e.df) + t.ppf(0.8, e.df)) * e.se)
    assert 1.3 < e.mde80 / (e.hi - e.value) < 2.0


def test_one_baseline_gives_no_interval_and_says_why():
    g = simulate(np.random.default_rng(6), 0.5, n_b=1)
    e = run_estimate(g)
    assert e.lo is None and e.p is None and e.why == ONE_RUN
    assert verdict(e, rejected=True) == ONE_RUN


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
    gaps, w = gap_array([[nll, nll], [nll, nll]], [[nll.copy()], [nll.copy()]])
    e = run_estimate(gaps, w)
    assert (e.value, e.lo, e.hi, e.p) == (0.0, 0.0, 0.0, None)  # no test: never a member of a Holm family


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


def test_contrast_between_domains_by_hand():
    """Two domains of 10 documents each, gaps constant per domain and run: test gaps 0.1 / 0.3 (baselines 0, 1),
    code gaps 0.5 / 0.5. The per-run contrast is 0.4 / 0.2: estimate 0.3, run variance var(0.4, 0.2)/2 = 0.01, no
    document term, t with 1 df."""
    test = np.concatenate([np.full((1, 1, 10), 0.1), np.full((1, 1, 10), 0.3)])
    code = np.full((2, 1, 10), 0.5)
    e = contrast_estimate((code, None), (test, None))
    assert e.value == pytest.approx(0.3) and e.per_run == pytest.approx((0.4, 0.2))
    half = 12.706204736 * 0.1
    assert (e.lo, e.hi) == pytest.approx((0.3 - half, 0.3 + half), rel=1e-6) and e.df == pytest.approx(1.0)


def test_contrast_covers_at_the_nominal_rate():
    """Different documents per domain, shared runs: the contrast of the two domains' means covers its true value
    (0.05 - 0.02) at 93.5-97 % in 1500 simulations of 5 baselines × 2 seeds × 32 + 24 documents."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(1500):
        base = rng.normal(0, 0.01, size=(5, 1, 1))
        a = simulate(rng, 0.05, n_b=5) + base
        b = simulate(rng, 0.02, n_b=5, n_d=24) + base  # shared baseline effect cancels in the contrast
        e = contrast_estimate((a, None), (b, None))
        hits += e.lo <= 0.03 <= e.hi
    assert 0.935 <= hits / 1500 <= 0.97
