"""Generated words and tables (lmask/tables.py) follow the numbers they are given, never fixed names or thresholds."""

from __future__ import annotations

from lmask.tables import Q3, Q3_ELSEWHERE, gap_cell, generation_rows, pct, q1, q3, research_answers


def gate(values: dict[int, tuple[float, float, float, str]]) -> dict[str, dict]:
    return {str(d): {"value": v, "ci95": [lo, hi], "verdict": w} for d, (v, lo, hi, w) in values.items()}


def baseline(drop: dict[str, dict], reach: int | None) -> dict:
    return {"copy_loss_drop": drop, "copy_range": reach}


def test_q1_says_not_testable_when_no_distance_passes_the_gate():
    drop = gate({8: (0.02, -0.01, 0.05, "no clear difference"), 512: (0.001, -0.002, 0.004, "no clear difference")})
    text = q1({"baseline": baseline(drop, None)})
    assert "Q1 is not testable here" in text and "(8, 512 tokens; largest +0.0200 [-0.0100, +0.0500]" in text


def test_q1_reports_the_longest_distance_that_passes():
    drop = gate({8: (0.5, 0.3, 0.7, "better"), 128: (0.2, 0.1, 0.3, "better"), 512: (0.0, -0.1, 0.1, "no")})
    text = q1({"baseline": baseline(drop, 128)})
    assert "use distant context" in text and "up to d = 128 tokens (+0.2000 [+0.1000, +0.3000] nats)" in text
    assert "not testable" not in text


def test_a_cell_shows_interval_baselines_and_word_or_too_few_documents():
    g = {"pct": -0.5, "pct_ci95": [-0.9, -0.1], "pct_baselines": [-0.4, -0.6, -0.5], "verdict": "better"}
    assert gap_cell(g) == "-0.50% [-0.90, -0.10] (-0.40, -0.60, -0.50): better"
    assert pct(0.3, None) == "+0.30% [too few documents]"


def test_generation_rows_show_bleu_and_continuation_nll_with_intervals():
    generation = {
        "prompts": 32,
        "bleu": {"value": 1.02, "ci95": [0.35, 1.86]},
        "continuation_nll": {"value": 6.7484, "ci95": [6.5, 7.0]},
        "distinct_2": 0.9282,
        "degenerate_fraction": 0.03125,
    }
    (row,) = generation_rows({"half": {"generation": generation}, "none": {"generation": {"prompts": 0}}})
    assert row == {
        "model": "half",
        "prompts": "32",
        "BLEU (95% CI)": "1.02 [0.35, 1.86]",
        "NLL of the true continuation (95% CI)": "6.748 [6.500, 7.000]",
        "distinct-2": "0.928",
        "degenerate samples": "3%",
    }


def test_q3_weighs_pairs_and_measured_speed_and_says_where_it_is_without_the_benchmark(monkeypatch):
    gap = {"pct": -0.1, "pct_ci95": [-0.3, 0.1], "pct_baselines": [-0.1], "verdict": "no clear difference"}
    half = {"attention_pairs": 0.64, "vs_full_pct": -0.1, "vs_full_pct_ci95": [-0.3, 0.1], "vs_full": gap["verdict"]}
    records = {"baseline": {}, "full": {"attention_pairs": 1.0}, "half": half}
    fwd = {"mode": "fwd", "seq_len": 3072, "speedup": 1.11, "ceiling": 1.09, "round_speedups": [1.1, 1.12]}
    benchmark = {"half": {"records": [{**fwd, "seq_len": 1024, "speedup": 1.0}, fwd]}, "kernel": {"records": []}}
    text = q3(records, benchmark)
    assert text.startswith("half: 0.64 of full attention's pairs, 1.11x measured speedup at T=3072 (ceiling 1.09x")
    assert "no clear difference from the full control (-0.10% [-0.30, +0.10])" in text and "front" in text
    for other in ("q1", "q2", "q4"):  # they read fields these records do not have
        monkeypatch.setattr(f"lmask.tables.{other}", lambda records: "")
    questions = [q for q, _ in research_answers(records, {})]
    assert questions[2] == Q3 and [q[:2] for q in questions] == ["Q1", "Q2", "Q3", "Q4"]
    assert dict(research_answers(records, {}))[Q3] == Q3_ELSEWHERE and "metrics/benchmark.md" in Q3_ELSEWHERE
    assert dict(research_answers(records, {}, benchmark))[Q3] == text
