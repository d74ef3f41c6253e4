"""Generated words and tables (lmask/tables.py) follow the numbers they are given, never fixed names or thresholds."""

from __future__ import annotations

from lmask.tables import generation_rows, q1


def copy_drop(values: dict[int, tuple[float, float, float]]) -> dict[str, dict]:
    return {str(d): {"value": v, "ci95": [lo, hi]} for d, (v, lo, hi) in values.items()}


def baseline(drop: dict[str, dict], reach: int | None) -> dict:
    return {"copy_loss_drop": drop, "copy_range": reach}


def test_q1_says_not_testable_when_no_interval_is_above_zero():
    drop = copy_drop({8: (0.02, -0.01, 0.05), 512: (0.001, -0.002, 0.004)})
    text = q1({"baseline": baseline(drop, None)})
    assert "Q1 is not testable here" in text and "(8, 512 tokens)" in text


def test_q1_reports_the_longest_distance_above_zero_and_its_size():
    faint = copy_drop({8: (0.05, 0.01, 0.09), 128: (0.02, 0.005, 0.03), 512: (0.0, -0.01, 0.01)})
    text = q1({"baseline": baseline(faint, 128)})
    assert "uses distant context, faintly" in text and "up to d = 128 tokens (+0.0200 [+0.0050, +0.0300]" in text
    strong = copy_drop({8: (3.0, 2.5, 3.5), 128: (2.0, 1.5, 2.5), 512: (0.0, -0.01, 0.01)})
    text = q1({"baseline": baseline(strong, 128)})
    assert "uses distant context:" in text and "faintly" not in text and "not testable" not in text


def test_generation_rows_show_bleu_with_its_interval_and_flag_degenerate_output():
    generation = {
        "bleu": {"value": 1.02, "ci95": [0.35, 1.86]},
        "continuation_nll": 6.7484,
        "distinct_2": 0.0282,
        "degenerate_fraction": 0.75,
    }
    (row,) = generation_rows({"half": {"generation": generation}})
    assert row == {
        "model": "half",
        "BLEU (95% CI over prompts)": "1.02 [0.35, 1.86]",
        "NLL of the true continuation": "6.748",
        "distinct-2 (greedy)": "0.028",
        "degenerate outputs": "75%",
    }
