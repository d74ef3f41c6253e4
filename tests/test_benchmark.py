"""The benchmark's protocol (warm-up excluded, alternating order, records and files) at tiny shapes."""

import json
import re
import statistics

import pytest

from lmask import benchmark as bench
from lmask.flops import attention_ceiling, flops_ceiling

SCHEDULES = {
    "full": {"type": "none"},
    "narrow": {"type": "explicit", "windows": [None, 8]},
    "sinky": {"type": "explicit", "windows": [16, 4], "sinks": 2},
}


def tiny(tmp_path, **kw):
    raw = dict(
        seq_lens=[32, 64],
        fwd_bwd_seq_lens=[64],
        kernel_windows=[8, 64],
        n_layer=2,
        n_embd=16,
        n_head=2,
        vocab_size=50,
        device="cpu",
        output=str(tmp_path / "metrics/benchmark.json"),
        summary=str(tmp_path / "metrics/benchmark_summary.json"),
        plot=str(tmp_path / "plots/speedup.csv"),
    )
    raw.update(kw)
    return bench.benchmark_params(raw)


def test_rounds_alternate_and_warmup_is_not_timed(tmp_path, monkeypatch, capsys):
    applied = []
    real_apply = bench.apply_windows

    def spy(model, windows, sinks=0):
        applied.append((tuple(windows), sinks))
        return real_apply(model, windows, sinks)

    monkeypatch.setattr(bench, "apply_windows", spy)
    p = tiny(tmp_path, warmup=1, repeats=2)
    records = bench.run(p, SCHEDULES)

    full, narrow, sinky = ((None, None), 0), ((None, 8), 0), ((16, 4), 2)
    # Warm-up round, then timed rounds full-first and full-last (a drift cancels in the median of two).
    one_mode = [sinky, narrow, full] + [full, narrow, sinky] + [sinky, narrow, full]
    assert applied == one_mode * 3  # T=32 fwd, T=64 fwd, T=64 fwd_bwd

    model_rows = [r for r in records if r["mode"] != "kernel"]
    # The params' "full" schedule (type none) is the baseline itself: timed once per round, reported once.
    assert sorted((r["schedule"], r["seq_len"], r["mode"]) for r in model_rows) == sorted(
        (s, T, m) for s in ("full", "narrow", "sinky") for T, m in ((32, "fwd"), (64, "fwd"), (64, "fwd_bwd"))
    )
    full_times = {(r["seq_len"], r["mode"]): r["times_s"] for r in model_rows if r["schedule"] == "full"}
    for r in model_rows:
        assert len(r["times_s"]) == 2  # warm-up round excluded
        # speedup: median over rounds of t(full) / t(schedule) in the same round
        paired = [f / t for f, t in zip(full_times[r["seq_len"], r["mode"]], r["times_s"], strict=True)]
        assert r["round_speedups"] == pytest.approx(paired)
        assert r["speedup"] == pytest.approx(statistics.median(paired))
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["ceiling"])
        windows, sinks = {"full": ([None, None], 0), "narrow": ([None, 8], 0), "sinky": ([16, 4], 2)}[r["schedule"]]
        assert r["ceiling"] == pytest.approx(flops_ceiling(windows, r["seq_len"], 16, 50, sinks))
        assert r["device"] == "cpu" and r["peak_mem_bytes"] is not None

    kernel = [r for r in records if r["mode"] == "kernel"]
    # w=64 is not a window at T=32 or T=64 (it covers every key), so only w=8 is timed.
    assert [(r["window"], r["seq_len"]) for r in kernel] == [(8, 32), (8, 64)]
    assert kernel[1]["ceiling"] == pytest.approx(attention_ceiling(8, 64))
    for r in kernel:
        assert len(r["times_s"]) == len(r["round_speedups"]) == p.kernel_repeats
        assert r["speedup"] == pytest.approx(statistics.median(r["round_speedups"]))
        # The memory floor caps the ideal: attainable = min(ideal, causal / floor).
        assert r["floor_time_s"] > 0
        assert r["attainable"] == pytest.approx(min(r["ceiling"], r["full_time_s"] / r["floor_time_s"]))

    on_disk = json.loads((tmp_path / "metrics/benchmark.json").read_text())
    assert len(on_disk) == len(records)
    assert {"schedule", "seq_len", "mode", "speedup", "ceiling", "efficiency", "device"} <= set(on_disk[0])
    summary = json.loads((tmp_path / "metrics/benchmark_summary.json").read_text())
    assert set(summary["narrow"]["fwd_bwd"]["64"]) == {"speedup", "ceiling", "efficiency"}
    assert (tmp_path / "plots/speedup.csv").read_text().startswith("schedule,mode,seq_len,speedup,ceiling,efficiency")
    assert re.search(r"^fwd_bwd\s+narrow\s+64\s", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.parametrize(
    "key,value",
    [("repeats", 0), ("warmup", -1), ("seq_lens", []), ("n_head", 5), ("device", "tpu"), ("colour", 1)],
)
def test_bad_params_name_the_field(tmp_path, key, value):
    with pytest.raises(ValueError, match=f"benchmark.{key}"):
        tiny(tmp_path, **{key: value})


def test_unknown_schedule_is_rejected_before_any_timing(tmp_path):
    p = tiny(tmp_path, schedules=["narrow", "nope"])
    with pytest.raises(ValueError, match="benchmark.schedules: 'nope'"):
        bench.run(p, SCHEDULES)
    assert not (tmp_path / "metrics").exists()
