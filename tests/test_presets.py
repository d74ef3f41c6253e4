"""Presets merge into params.yaml and pass the same validation as every stage, without network access."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lmask.params import load_params
from lmask.preset import apply_preset
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_copy(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # validation must never need the hub
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    return tmp_path / "params.yaml"


def test_gpu_preset_is_the_seed_setup(params_copy):
    apply_preset("gpu", params_copy)
    p = load_params(params_copy)  # PyYAML, as the stages read it
    assert (p.data.source, p.data.hf_path, p.data.hf_name) == ("hf", "Salesforce/wikitext", "wikitext-103-raw-v1")
    assert p.data.context_length == 1024 and p.data.max_train_docs is None
    assert p.tokenizer.kind == "gpt2"
    assert (p.model.init, p.model.pretrained_name) == ("pretrained", "gpt2")
    assert (p.model.n_layer, p.model.n_embd, p.model.n_head, p.model.n_positions) == (12, 768, 12, 1024)
    assert p.attention.backend in ("auto", "flex")
    for cfg in (p.train, p.masked):
        assert (cfg.batch_size, cfg.lr, cfg.warmup_steps) == (16, 5e-5, 1000)  # the seed's
        assert isinstance(cfg.lr, float) and cfg.steps > cfg.warmup_steps
        assert cfg.batch_size % (cfg.micro_batch_size * cfg.nproc) == 0
    # Comments and untouched sections survive the merge.
    text = params_copy.read_text()
    assert "# Per-layer windows" in text and set(p.schedules) == set(yaml.safe_load(text)["schedules"])


def test_gpu_preset_scales_to_two_gpus_by_halving_the_micro_batch(params_copy, tmp_path):
    apply_preset("gpu", params_copy)
    two = tmp_path / "two.yaml"
    two.write_text("train: {nproc: 2, micro_batch_size: 8}\nmasked: {nproc: 2, micro_batch_size: 8}\n")
    apply_preset(two, params_copy)
    assert load_params(params_copy).train.nproc == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {nproc: 3}\n")
    with pytest.raises(ValueError, match=r"train\.batch_size \(16\) must be a multiple"):
        apply_preset(bad, params_copy)


def test_tiny_preset_merges(params_copy):
    apply_preset("tiny", params_copy)
    p = load_params(params_copy)
    assert p.train.steps == 6 and p.data.context_length == 64


def test_gpu_smoke_script_prepares_valid_params(tmp_path):
    """scripts/gpu_smoke.sh's params (GPU preset, offline fallback, 50 steps) validate; CPU, no training."""
    out = tmp_path / "results"
    proc = run(f"SMOKE_PREPARE_ONLY=1 NPROC=2 bash scripts/gpu_smoke.sh {out}", ROOT)
    assert "variant: offline" in proc.stdout  # hub unreachable in CI (HF_HUB_OFFLINE=1 in conftest.env)
    p = load_params(out / "params.yaml")
    assert (p.data.source, p.model.init, p.tokenizer.kind) == ("embedded", "scratch", "gpt2")
    assert (p.model.n_embd, p.model.n_head, p.data.context_length) == (768, 12, 1024)
    assert (p.train.steps, p.masked.steps, p.train.nproc, p.train.micro_batch_size) == (50, 50, 2, 8)


def test_gpu_benchmark_script_runs_on_cpu_with_tiny_shapes(tmp_path):
    """scripts/gpu_benchmark.sh end to end (BENCH_DEVICE=cpu, tiny dims): every schedule, fwd+bwd at every T."""
    import json

    overrides = {
        "seq_lens": [64],
        "kernel_windows": [16],
        "n_embd": 32,
        "n_head": 2,
        "vocab_size": 64,
        "warmup": 0,
        "repeats": 1,
        "kernel_repeats": 1,
    }
    proc = run(
        f"bash scripts/gpu_benchmark.sh {tmp_path}",
        ROOT,
        extra_env={"BENCH_DEVICE": "cpu", "BENCH_OVERRIDES": json.dumps(overrides)},
    )
    assert "device: cpu" in proc.stdout
    records = json.loads((tmp_path / "benchmark_cpu.json").read_text())
    schedules = set(load_params(ROOT / "params.yaml").schedules)
    model_rows = {(r["schedule"], r["mode"]) for r in records if r["mode"] != "kernel"}
    assert model_rows == {(s, m) for s in schedules for m in ("fwd", "fwd_bwd")}
    assert all(r["device_name"] == "cpu" for r in records)
