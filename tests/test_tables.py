"""Generated words and tables (lmask/tables.py, lmask/answers.py) follow the numbers they are given, never fixed names
or thresholds."""

from __future__ import annotations

from pathlib import Path

import yaml

from lmask.answers import Q3, Q3_ELSEWHERE, q1, q3, research_answers
from lmask.params import params_from_dict
from lmask.summary import random_id_tokens_of, run_tokens_of
from lmask.tables import gap_cell, generation_rows, interval, nats_cell, pct, scale_note
from tools.preset import merge_into


def gate(values: dict[int, tuple[float, float, float, str]]) -> dict[str, dict]:
    return {str(d): {"value": v, "ci95": [lo, hi], "verdict": w} for d, (v, lo, hi, w) in values.items()}


def baseline(drop: dict[str, dict], reach: int | None, repeated: float = 0.01) -> dict:
    by_source = {"1-63": {"value": 4 * repeated, "ci95": [3 * repeated, 5 * repeated]}, "64-511": dict(ci95=None)}
    by_source["64-511"].update(value=0.0, no_interval="one baseline")
    return {
        "copy_loss_drop": drop,
        "copy_range": reach,
        "copy": {
            "repeated_drop": {"value": repeated, "ci95": [repeated - 0.01, repeated + 0.01], "mde80": 0.02},
            "repeated_drop_by_source": by_source,
        },
    }


def test_q1_says_not_testable_when_no_distance_passes_the_gate():
    drop = gate({8: (0.02, -0.01, 0.05, "no clear difference"), 512: (0.001, -0.002, 0.004, "no clear difference")})
    text = q1({"baseline": baseline(drop, None)})
    assert "Q1 is not testable here" in text and "(8, 512 tokens; largest +0.020 [-0.010, +0.050]" in text
    assert "repeated-text drop" in text and "+0.010 [+0.000, +0.020] mde80 0.020" in text


def test_q1_reports_the_longest_distance_that_passes():
    drop = gate({8: (0.5, 0.3, 0.7, "better"), 128: (0.2, 0.1, 0.3, "better"), 512: (0.0, -0.1, 0.1, "no")})
    text = q1({"baseline": baseline(drop, 128, repeated=2.5)})
    assert "use distant context" in text and "up to d = 128 tokens (+0.200 [+0.100, +0.300]" in text
    assert "not testable" not in text and "+2.500 [+2.490, +2.510]" in text
    # where copying reaches: the drop by the first occurrence's position, each bucket with its interval
    assert "first occurrence's position, 1-63: +10.000 [+7.500, +12.500]; 64-511: +0.000 [one baseline]" in text


def test_a_cell_shows_interval_baselines_mde_and_word_or_why_there_is_none():
    g = {"pct": -0.5, "pct_ci95": [-0.9, -0.1], "pct_baselines": [-0.4, -0.6, -0.5], "mde80": 0.55, "verdict": "better"}
    assert gap_cell(g) == "-0.50% [-0.90, -0.10] (-0.40, -0.60, -0.50; mde80 0.55%): better"
    assert pct(0.3, None) == "+0.30% [too few documents]"
    one = {
        "pct": 0.4,
        "pct_ci95": None,
        "pct_baselines": [0.4],
        "mde80": None,
        "verdict": "one baseline",
        "no_interval": "one baseline",
    }
    assert gap_cell(one) == "+0.40% [one baseline] (+0.40): one baseline"
    assert interval(1.234, [1.0, 1.5], 1, " pt") == "+1.2 pt [+1.0, +1.5]"
    tested = {"estimate": -2.5, "ci95": [-3.0, -2.0], "mde80": 0.7, "verdict": "worse"}
    assert nats_cell(tested) == "-2.500 [-3.000, -2.000] mde80 0.700: worse"


def test_generation_rows_show_bleu_beside_its_null():
    generation = {
        "prompts": 32,
        "bleu": {"value": 2.5, "ci95": [2.1, 2.9]},
        "bleu_null": {"value": 2.2, "ci95": [1.8, 2.6]},
        "beats_null": False,
        "distinct_2": 0.9282,
        "degenerate_fraction": 0.03125,
    }
    (row,) = generation_rows({"half": {"generation": generation}, "none": {"generation": {"prompts": 0}}})
    assert row == {
        "model": "half",
        "prompts": "32",
        "BLEU (95% CI)": "+2.50 [+2.10, +2.90]",
        "null BLEU (unrelated passage)": "+2.20 [+1.80, +2.60]",
        "beats its null": "no",
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
        monkeypatch.setattr(f"lmask.answers.{other}", lambda records: "")
    questions = [q for q, _ in research_answers(records, {})]
    assert questions[2] == Q3 and [q[:2] for q in questions] == ["Q1", "Q2", "Q3", "Q4"]
    assert dict(research_answers(records, {}))[Q3] == Q3_ELSEWHERE and "metrics/benchmark.md" in Q3_ELSEWHERE
    assert dict(research_answers(records, {}, benchmark))[Q3] == text


def test_the_training_mix_states_its_random_id_share_counted_by_hand_for_the_long_preset():
    """presets/long.yaml by hand: warm-up 3000 x 16 x 32 + 2000 x 8 x 128 = 3,584,000 random-id tokens, then 800
    natural steps of 3 x 1024 tokens with 4 x 128 copy-row tokens beside each (409,600 more); 6,451,200 in all.
    Its long-period rows are natural text; as random ids they would add 0.34 of 800 x 3 x 1024."""
    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    merge_into(raw, yaml.safe_load((root / "presets/long.yaml").read_text()))
    params = params_from_dict(raw)
    assert run_tokens_of(params) == 6_451_200
    assert random_id_tokens_of(params) == 3_993_600
    raw["mix"]["kind"] = "random"
    assert random_id_tokens_of(params_from_dict(raw)) == 3_993_600 + 0.34 * 800 * 3 * 1024
    meta = {
        "n_layer": 12, "n_embd": 128, "vocab_size": 4096, "context": 1024, "n_baselines": 3, "train_steps": 5800,
        "masked_steps": 32, "n_seeds": 1, "mix_fraction": 0.34, "mix_kind": "natural", "documents": {"test": 32},
        "copy_warmup_tokens": 3_584_000, "copy_rows": 4, "copy_context": 128, "random_id_tokens": 3_993_600,
        "train_tokens": 6_451_200,
    }  # fmt: skip
    note = scale_note(meta)
    assert "a copy warm-up of 3.58M tokens of repeated random ids first, then 34% of the natural-text" in note
    assert "with 4 short rows of repeated random ids (128 tokens) beside each step" in note
    assert "random ids are 62% of a baseline's 6.45M training tokens" in note
    default = scale_note(meta | {"copy_warmup_tokens": 0, "copy_rows": 0, "random_id_tokens": 0})
    assert "random ids" not in default and "short rows" not in default
