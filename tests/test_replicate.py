"""The replicate check counts changed verdict words and reversals over every comparison of two summaries."""

from __future__ import annotations

import copy

from tools.replicate import compare, verdicts


def summary(vs_full: str, code: str, gate: str) -> dict:
    gap = {"verdict": vs_full}
    return {
        "baseline": {"copy_loss_drop": {"8": {"verdict": gate}, "512": {"verdict": "no clear difference"}}},
        "half": {
            "gaps": {"vs_full": gap, "zero_shot_vs_baseline": {"verdict": "worse"}},
            "domains": {"test": {"vs_full": gap}, "code": {"vs_full": {"verdict": code}}},
            "by_position": {"0-63": {"verdict": "no clear difference"}},
            "vs_equal_pairs": {},
        },
    }


def test_every_word_is_compared_once():
    words = verdicts(summary("better", "worse", "better"))
    assert words == {
        "baseline/copy_gate/d=8": "better",
        "baseline/copy_gate/d=512": "no clear difference",
        "half/vs_full": "better",
        "half/zero_shot_vs_baseline": "worse",
        "half/vs_full/code": "worse",  # the test domain's word is half/vs_full, not counted twice
        "half/vs_full/positions 0-63": "no clear difference",
    }


def test_changes_and_reversals_by_hand():
    a = summary("better", "worse", "better")
    b = summary("worse", "no clear difference", "better")
    result = compare(a, b, [0, 1, 2], [3, 4, 5])
    assert (result["total"], result["changed"], result["reversals"]) == (6, 2, 1)
    assert result["changed_comparisons"] == ["half/vs_full", "half/vs_full/code"]
    assert result["verdicts"]["half/vs_full"] == ["better", "worse"]
    assert result["seeds_a"] == [0, 1, 2] and result["seeds_b"] == [3, 4, 5]
    same = compare(a, copy.deepcopy(a), [0], [1])
    assert (same["changed"], same["reversals"], same["changed_fraction"]) == (0, 0, 0.0)
