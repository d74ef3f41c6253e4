"""The benchmark's protocol (warm-up excluded, alternating order, per-round speedups), its records and files, the
stage's handling of full attention, and named errors for bad benchmark params, at tiny shapes."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from lmask import benchmark as bench
from lmask.band import BAND_MAX_WINDOW
from lmask.flops import attention_ceiling, flops_ceiling, tiled_pairs
from lmask.params import BenchmarkParams, ParamsError, Schedule, params_from_dict
from lmask.schedule import attention_pairs
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]

NARROW = Schedule("narrow", [None, 8], 0)
SINKY = Schedule("sinky", [16, 4], 2)


def tiny(**kw) -> BenchmarkParams:
    p = BenchmarkParams(
        seq_lens=[32, 64],
        fwd_bwd_seq_lens=[64],
        kernel_windows=[8, 64],
        kernel_seq_lens=[32, 64],
        n_embd=16,
        n_head=2,
        vocab_size=50,
        warmup=1,
        repeats=3,
        kernel_repeats=3,
        device="cpu",
    )
    for key, value in kw.items():
        setattr(p, key, value)
    p.check()
    return p


def test_rounds_alternate_and_warmup_is_not_timed(tmp_path, monkeypatch, capsys):
    """Spy on apply_windows and _timed: the order of the calls, and which times reach the records."""
    applied: list[str] = []
    real_apply = bench.apply_windows

    def spy_apply(model, windows, sinks=0, backend=None):
        applied.append("full" if windows == [None, None] else "narrow")
        return real_apply(model, windows, sinks, backend)

    # Scripted times per call of each schedule within one (T, mode): the warm-up call is slow (1000 s) and must not
    # show; over the 3 timed rounds the per-round ratios full / narrow are 1, 5, 1 (median 1), while the ratio of
    # the medians would be 3 / 2.
    script = {"full": [1000.0, 1.0, 10.0, 3.0], "narrow": [1000.0, 1.0, 2.0, 3.0]}
    calls: dict[str, int] = {"full": 0, "narrow": 0}

    def fake_timed(fn, device):
        fn()  # the real model step still runs (and counts its attention paths)
        name = applied[-1]
        t = script[name][calls[name] % 4]
        calls[name] += 1
        return t, 123

    monkeypatch.setattr(bench, "apply_windows", spy_apply)
    monkeypatch.setattr(bench, "_timed", fake_timed)
    p = tiny()
    out = tmp_path / "metrics/benchmark/narrow.json"
    result = bench.run_schedule(p, NARROW, out)

    # One warm-up round (full last), then timed rounds full-first, full-last, full-first: a linear drift cancels.
    one_mode = ["narrow", "full"] + ["full", "narrow"] + ["narrow", "full"] + ["full", "narrow"]
    assert applied == one_mode * 3  # T=32 fwd, T=64 fwd, T=64 fwd_bwd

    records = result["records"]  # the schedule's rows only: full attention's times are their full_time_s
    assert [(r["schedule"], r["seq_len"], r["mode"]) for r in records] == [
        ("narrow", T, m) for T, m in ((32, "fwd"), (64, "fwd"), (64, "fwd_bwd"))
    ]
    for r in records:
        name = r["schedule"]
        assert r["times_s"] == script[name][1:]  # warm-up round excluded
        assert r["time_s"] == statistics.median(script[name][1:])
        assert r["full_time_s"] == 3.0
        assert r["peak_mem_bytes"] == 123
        assert r["round_speedups"] == pytest.approx([1.0, 5.0, 1.0])
        assert r["speedup"] == pytest.approx(1.0)  # median of the per-round ratios, not 3 / 2
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["ceiling"])
        windows = [None, None] if name == "full" else [None, 8]
        assert r["ceiling"] == pytest.approx(flops_ceiling(windows, r["seq_len"], 16, 50, 0))
        assert r["tokens_per_s"] == pytest.approx(r["seq_len"] / r["time_s"])
        # Paths counted over every call, warm-up included: narrow's full layer is the tiled kernel (CPU, fp32), its
        # small window the band kernel (CPU, w <= BAND_MAX_WINDOW), forward and fwd+bwd.
        assert r["attention_paths"] == (["tiled"] if name == "full" else ["band", "tiled"])

    on_disk = json.loads(out.read_text())
    assert set(on_disk) == {"summary", "run", "records"}
    assert on_disk["records"] == records and on_disk["run"]["device"] == "cpu"
    assert on_disk["summary"]["narrow"]["fwd_bwd"]["64"] == {
        "speedup": 1.0,
        "ceiling": pytest.approx(round(records[-1]["ceiling"], 4)),
        "efficiency": pytest.approx(round(records[-1]["efficiency"], 4)),
    }
    assert re.search(r"^fwd_bwd\s+narrow\s+64\s", capsys.readouterr().out, re.MULTILINE)


def test_schedule_records_measure_real_calls(tmp_path):
    p = tiny(repeats=2)
    records = bench.run_schedule(p, SINKY, tmp_path / "sinky.json")["records"]
    by_name = {(r["schedule"], r["seq_len"], r["mode"]): r for r in records}
    assert set(by_name) == {("sinky", T, m) for T, m in ((32, "fwd"), (64, "fwd"), (64, "fwd_bwd"))}
    for (name, T, _mode), r in by_name.items():
        assert len(r["times_s"]) == len(r["round_speedups"]) == 2 and all(t > 0 for t in r["times_s"])
        assert r["speedup"] == pytest.approx(statistics.median(r["round_speedups"]))
        windows, sinks = ([None, None], 0) if name == "full" else ([16, 4], 2)
        assert r["ceiling"] == pytest.approx(flops_ceiling(windows, T, 16, 50, sinks))
        assert r["kv_cache_bytes"] <= r["full_kv_cache_bytes"]
        assert r["device"] == "cpu"
        # The paths that ran: full layers take the tiled kernel (CPU, fp32); small windows below T on CPU the band
        # path, forward and fwd+bwd.
        assert r["attention_paths"] == (["tiled"] if name == "full" else ["band"])


def test_experiment_dims_section(tmp_path):
    """The experiment's own dims and context, timed beside the benchmark dims, with the ceiling check."""
    p = tiny(repeats=2, experiment_repeats=2)
    dims = {"n_embd": 8, "n_head": 2, "vocab_size": 30, "seq_len": 48}
    result = bench.run_schedule(p, NARROW, tmp_path / "narrow.json", dims)
    exp = result["experiment"]
    assert exp["dims"] == {"n_layer": 2, **dims}  # the depth is the schedule's (model.n_layer), recorded beside
    assert [(r["seq_len"], r["mode"]) for r in exp["records"]] == [(48, "fwd"), (48, "fwd_bwd")]
    for r in exp["records"] + result["records"]:
        assert len(r["round_speedups"]) == 2
        assert r["within_ceiling"] == (r["speedup"] <= r["ceiling"])
        assert r["ceiling_in_spread"] == (min(r["round_speedups"]) <= r["ceiling"])
        assert r["round_spread"] == [min(r["round_speedups"]), max(r["round_speedups"])]
    assert exp["records"][0]["ceiling"] == pytest.approx(flops_ceiling([None, 8], 48, 8, 30, 0))
    assert set(exp["summary"]["narrow"]) == {"fwd", "fwd_bwd"}
    assert "experiment" not in bench.run_schedule(tiny(experiment_repeats=0), NARROW, tmp_path / "n.json", dims)


def test_kernel_records(tmp_path):
    p = tiny(kernel_windows=[4, 8, 64], band_max_window=4)
    out = tmp_path / "kernel.json"
    result = bench.run_kernel(p, out)
    kernel = result["records"]
    # w=64 is not a window at T=32 or T=64 (it covers every key); the band kernel runs up to band_max_window only;
    # the tiled kernel also at w = T (full causal attention).
    expected = [
        (mode, kernel, w, T)
        for T in (32, 64)
        for mode in ("kernel", "kernel_fwd_bwd")
        for w in (4, 8, T)
        for kernel in ("band", "blocked", "tiled")
        if (kernel != "band" or w <= 4) and (w < T or kernel == "tiled")
    ]
    assert [(r["mode"], r["kernel"], r["window"], r["seq_len"]) for r in kernel] == expected
    assert kernel[1]["ceiling"] == pytest.approx(attention_ceiling(4, 32))
    for r in kernel:
        assert len(r["times_s"]) == len(r["round_speedups"]) == p.kernel_repeats
        assert r["speedup"] == pytest.approx(statistics.median(r["round_speedups"]))
        assert r["attention_paths"] == [r["kernel"]]
        # fp32 on the CPU: band up to BAND_MAX_WINDOW, the tiled kernel above it and at w = T
        dispatched = "band" if r["window"] <= BAND_MAX_WINDOW and r["window"] < r["seq_len"] else "tiled"
        assert r["dispatched"] == (r["kernel"] == dispatched)
        assert r["pair_overhead"] == 1 if r["kernel"] == "band" else r["pair_overhead"] >= 1  # band: exact pairs
        if r["kernel"] == "tiled":
            assert r["pair_overhead"] == tiled_pairs(r["window"], r["seq_len"]) / attention_pairs(
                r["window"], r["seq_len"]
            )
        if r["mode"] == "kernel":  # the memory floor caps the forward ideal: attainable = min(ideal, causal / floor)
            assert r["floor_time_s"] > 0
            assert r["attainable"] == pytest.approx(min(r["ceiling"], r["full_time_s"] / r["floor_time_s"]))
        else:
            assert r["attainable"] is None
    assert json.loads(out.read_text()) == result
    assert set(result["summary"]) == {
        "band_w4",
        "blocked_w4",
        "blocked_w8",
        "tiled_w4",
        "tiled_w8",
        "tiled_w32",
        "tiled_w64",
    }
    cross = result["crossover"]
    assert cross["dispatch_band_max_window"] == BAND_MAX_WINDOW
    for key, other in (("measured", "blocked"), ("measured_tiled", "tiled")):
        assert set(cross[key]) == {"kernel", "kernel_fwd_bwd"}
        for by_T in cross[key].values():
            assert set(by_T) == {"32", "64"}
            for c in by_T.values():
                assert sorted(c["band_faster_at"] + c[f"{other}_faster_at"]) == [4]


def test_crossover_is_the_last_window_of_an_unbroken_band_lead():
    def rec(kernel, w, speedup):
        return {"mode": "kernel", "seq_len": 100, "kernel": kernel, "window": w, "speedup": speedup}

    records = [rec("band", 1, 9), rec("blocked", 1, 5), rec("band", 4, 6), rec("blocked", 4, 5)]
    records += [rec("band", 16, 4), rec("blocked", 16, 5), rec("band", 64, 6), rec("blocked", 64, 5)]
    got = bench.crossover(records)["kernel"]["100"]
    assert got == {"band_faster_up_to": 4, "band_faster_at": [1, 4, 64], "blocked_faster_at": [16]}
    assert bench.crossover([rec("band", 1, 1), rec("blocked", 1, 2)])["kernel"]["100"]["band_faster_up_to"] is None


def load_schedule(params_file: Path, name: str) -> Schedule:
    return params_from_dict(yaml.safe_load(params_file.read_text())).schedule(name)


@pytest.fixture
def params_file(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    return path


def test_stage_skips_full_attention_without_importing_torch(params_file, tmp_path):
    assert load_schedule(params_file, "full").is_full
    out = tmp_path / "metrics/benchmark/full.json"
    script = (
        "import runpy, sys\n"
        "sys.argv = ['stages.benchmark', *sys.argv[1:]]\n"
        "runpy.run_module('stages.benchmark', run_name='__main__')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('no torch')\n"
    )
    args = ["--params", str(params_file), "--schedule", "full", "--out", str(out)]
    proc = run([sys.executable, "-c", script, *args], ROOT, timeout=120)
    assert "no torch" in proc.stdout
    result = json.loads(out.read_text())
    assert result["summary"] == {} and result["records"] == []
    assert "full attention in every layer" in result["run"]["note"]


def test_stage_names_an_unknown_schedule_and_a_bad_field(params_file, tmp_path):
    out = tmp_path / "x.json"
    proc = run(
        [
            sys.executable,
            "-m",
            "stages.benchmark",
            "--params",
            str(params_file),
            "--schedule",
            "nope",
            "--out",
            str(out),
        ],
        ROOT,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2 and "schedules.nope: no such schedule" in proc.stderr
    raw = yaml.safe_load(params_file.read_text())
    raw["benchmark"]["repeats"] = 0
    params_file.write_text(yaml.safe_dump(raw))
    proc = run(
        [sys.executable, "-m", "stages.benchmark", "--params", str(params_file), "--out", str(out)],
        ROOT,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: params.yaml: benchmark.repeats must be a positive integer, got 0"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    "key,value",
    [
        ("repeats", 0),
        ("kernel_repeats", 0),
        ("warmup", -1),
        ("seq_lens", []),
        ("gpu_seq_lens", [1024, 0]),
        ("fwd_bwd_seq_lens", [-1]),
        ("kernel_windows", []),
        ("kernel_seq_lens", [3072, 0]),
        ("band_max_window", 0),
        ("experiment_repeats", -1),
        ("n_head", 5),
        ("vocab_size", "big"),
        ("device", "tpu"),
        ("threads", 2),  # gone: CPU threads are cpu_threads
        ("n_layer", 12),  # gone: the depth is model.n_layer
        ("colour", 1),
    ],
)
def test_bad_params_name_the_field(key, value):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["benchmark"][key] = value
    with pytest.raises(ParamsError, match=rf"benchmark\.{key}\b"):
        params_from_dict(raw)
