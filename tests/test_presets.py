"""Presets merge into params.yaml and pass the same validation as every stage, without network access; the GPU
entry points (python -m tools.gpu_smoke / tools.gpu_benchmark, and their wrappers tools/gpu_smoke.sh,
tools/gpu_benchmark.sh) prepare valid params, reject bad input in one line and run on a CPU at tiny shapes."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from lmask.params import ParamsError, load_params
from tests.conftest import copy_project, run
from tools.preset import apply_preset

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
    assert (p.model.init, p.model.pretrained_name, p.model.position_init) == ("pretrained", "gpt2", "default")
    assert (p.model.n_layer, p.model.n_embd, p.model.n_head, p.model.n_positions) == (12, 768, 12, 1024)
    assert p.attention.backend in ("auto", "flex")
    assert p.mix.fraction == 0  # a pretrained GPT-2 already copies: no synthetic sequences
    assert p.finetune_seeds == [0, 1]
    for cfg in (p.train, p.masked):
        assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.warmup_steps) == (4000, 16, 5e-5, 1000)  # the original project's
        assert isinstance(cfg.lr, float) and (cfg.micro_batch_size, cfg.nproc) == (16, 1)
    assert p.evaluate.max_documents is None  # every test article
    # Every copy distance fits context 1024, up to near the context.
    assert max(p.copy.distances) >= 512
    assert all(p.copy.offset + d + p.copy.span <= 1024 for d in p.copy.distances)
    b = p.benchmark
    assert (b.fwd_bwd_seq_lens, b.warmup, b.repeats) == (None, 1, 5)  # fwd+bwd at every T
    assert b.gpu_seq_lens == [1024, 2048, 4096, 8192, 16384]
    assert (b.n_embd, b.n_head, b.vocab_size) == (768, 12, 50257)  # GPT-2 small (depth: model.n_layer, 12)
    # Comments and untouched sections survive the merge.
    text = params_copy.read_text()
    assert "# Per-layer windows" in text and set(p.schedules) == set(yaml.safe_load(text)["schedules"])


def test_gpu_preset_gives_every_model_the_same_token_budget(params_copy):
    """The budget the preset's header describes, computed from the merged, validated values: every baseline and
    every fine-tune sees steps × batch × context = 65.5M tokens, and each global batch splits into whole micro-batches
    per GPU."""
    apply_preset("gpu", params_copy)
    p = load_params(params_copy)
    budgets = {cfg.steps * cfg.batch_size * p.data.context_length for cfg in (p.train, p.masked)}
    assert budgets == {65_536_000}
    for cfg in (p.train, p.masked):
        assert cfg.batch_size % (cfg.micro_batch_size * cfg.nproc) == 0


def test_gpu_preset_scales_to_two_gpus_by_halving_the_micro_batch(params_copy, tmp_path):
    apply_preset("gpu", params_copy)
    two = tmp_path / "two.yaml"
    two.write_text("train: {nproc: 2, micro_batch_size: 8}\nmasked: {nproc: 2, micro_batch_size: 8}\n")
    apply_preset(two, params_copy, stack=True)  # on top of the GPU preset, on purpose
    p = load_params(params_copy)
    for cfg in (p.train, p.masked):
        assert (cfg.nproc, cfg.micro_batch_size, cfg.batch_size) == (2, 8, 16)  # global batch unchanged
    before = params_copy.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {nproc: 3}\n")
    with pytest.raises(ParamsError, match=r"train\.batch_size \(16\) must be a multiple"):
        apply_preset(bad, params_copy, stack=True)
    assert params_copy.read_text() == before  # a bad preset leaves params.yaml untouched


def test_tiny_preset_merges(params_copy):
    apply_preset("tiny", params_copy)
    p = load_params(params_copy)
    assert (p.train.steps, p.masked.steps, p.data.context_length, p.model.n_positions) == (400, 2, 64, 64)
    assert (p.model.n_embd, p.tokenizer.vocab_size, p.cpu_threads) == (32, 320, 1)
    assert p.evaluate.max_documents == 12 and p.copy.distances == [4, 16, 40]
    assert (p.benchmark.seq_lens, p.benchmark.n_embd, p.benchmark.vocab_size) == ([64, 128], 32, 320)
    assert p.model.position_init == "sinusoidal"  # untouched keys keep params.yaml's values
    assert "# Per-layer windows" in params_copy.read_text()


def test_missing_preset_is_named(params_copy):
    with pytest.raises(ParamsError, match="no such preset"):
        apply_preset("nope", params_copy)


SMOKE_PREPARE = {
    # The wrapper as the device docs call it (environment variables), and the module with its flags.
    "script": "SMOKE_PREPARE_ONLY=1 NPROC=2 BACKEND=flex bash tools/gpu_smoke.sh {out}",
    "module": f"{sys.executable} -m tools.gpu_smoke {{out}} --prepare-only --nproc 2 --backend flex",
}


@pytest.mark.parametrize("how", SMOKE_PREPARE)
def test_gpu_smoke_prepares_valid_params(tmp_path, how):
    """python -m tools.gpu_smoke's params (GPU preset, offline fallback, 50 steps) validate; CPU, no training."""
    out = tmp_path / "results"
    params_before = (ROOT / "params.yaml").read_text()
    proc = run(SMOKE_PREPARE[how].format(out=out), ROOT, timeout=120)
    assert "variant: offline" in proc.stdout  # hub unreachable in CI (HF_HUB_OFFLINE=1 in conftest.env)
    assert (ROOT / "params.yaml").read_text() == params_before  # worked in a temporary copy
    p = load_params(out / "params.yaml")
    assert (p.data.source, p.model.init, p.tokenizer.kind) == ("embedded", "scratch", "gpt2")
    assert p.model.position_init == "default" and p.mix.fraction == 0
    assert (p.model.n_layer, p.model.n_embd, p.model.n_head, p.data.context_length) == (12, 768, 12, 1024)
    for cfg in (p.train, p.masked):
        assert (cfg.steps, cfg.nproc, cfg.micro_batch_size, cfg.batch_size) == (50, 2, 8, 16)
    assert p.attention.backend == "flex" and p.evaluate.max_documents == 4
    assert "variant: offline" in (out / "smoke.txt").read_text()
    assert sorted(f.name for f in out.iterdir()) == ["params.yaml", "smoke.txt"]  # nothing trained
    # The stages run with dvc.yaml's cmd lines (new flags; nproc handled by the stage itself, no torchrun here).
    lines = proc.stdout.splitlines()
    assert (
        "train_masked@half-0-0: python -m stages.train_masked --schedule half --baseline 0 --seed 0 "
        "--baseline-model models/baseline/b0 --data data/tokenized --model models/masked/half/b0-s0 "
        "--live metrics/train/half-b0-s0"
    ) in lines
    assert [line.split(":")[0] for line in lines if ": python -m stages." in line] == [
        "validate",
        "download",
        "tokenize",
        "train_baseline@0",
        "train_masked@half-0-0",
    ]
    assert "torchrun" not in proc.stdout


@pytest.mark.parametrize(
    "cmd,message",
    [
        ("SMOKE_PREPARE_ONLY=1 NPROC=3 bash tools/gpu_smoke.sh {out}", "NPROC must divide the global batch 16"),
        ("{python} -m tools.gpu_smoke {out} --nproc 0", "NPROC must divide the global batch 16"),
        ("{python} -m tools.gpu_smoke {out} --nproc two", "got 'two'"),
        ("BACKEND=nope bash tools/gpu_smoke.sh {out}", "attention.backend must be one of"),
    ],
)
def test_gpu_smoke_names_a_bad_value_in_one_line(tmp_path, cmd, message):
    """NPROC and BACKEND fail in one line naming them, exit code 2, before anything is prepared or trained."""
    out = tmp_path / "results"
    proc = run(cmd.format(python=sys.executable, out=out), ROOT, check=False, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("gpu_smoke: ")  # no traceback
    assert not (out / "smoke.txt").exists()


def test_gpu_smoke_runs_a_stage_as_dvc_does(tmp_path):
    """A stage runs through a shell in the project copy, logged and timed (no GPU: no memory sampled); a failing
    one prints its log's tail, is recorded in smoke.txt and ends the run with exit code 1."""
    from tools import gpu_smoke

    work, results = tmp_path / "work", tmp_path / "results"
    work.mkdir()
    results.mkdir()
    log = gpu_smoke.Log(results / "smoke.txt")
    env = {"PATH": os.environ["PATH"]}
    gpu_smoke.run_stage("ok", "pwd; echo to-stderr >&2", work, results, env, log)
    assert (results / "ok.log").read_text().split() == [str(work), "to-stderr"]
    line = (results / "smoke.txt").read_text()
    assert line.startswith("ok ") and " s   peak GPU memory (busiest GPU, all processes) " in line
    with pytest.raises(SystemExit) as exc:
        gpu_smoke.run_stage("bad", "echo oops; exit 3", work, results, env, log)
    assert exc.value.code == 1
    assert (results / "smoke.txt").read_text().endswith("bad FAILED: echo oops; exit 3\n")
    (results / "m.mem").write_text("512\n80000\n1024\n")  # nvidia-smi: one line per GPU per sample
    assert gpu_smoke.peak_mib(results / "m.mem") == "80000 MiB" and gpu_smoke.peak_mib(results / "none") == "n/a"


TINY_BENCH = {
    "seq_lens": [64, 128],
    "gpu_seq_lens": [64, 128],
    "n_embd": 32,
    "n_head": 2,
    "vocab_size": 320,
    "kernel_windows": [16],
    "warmup": 0,
    "repeats": 3,
    "kernel_repeats": 1,
}


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory) -> Path:
    """A copy of the project with the tiny preset applied (the repo's params.yaml is never touched)."""
    dest = copy_project(tmp_path_factory.mktemp("project"))
    apply_preset("tiny", dest / "params.yaml")
    return dest


def test_gpu_benchmark_runs_on_cpu_with_tiny_shapes(tiny_project, tmp_path):
    """python -m tools.gpu_benchmark end to end (--device cpu, tiny dims): one file per windowed schedule plus
    kernel.json, in the pipeline's format, fwd and fwd+bwd at every T."""
    cmd = [sys.executable, "-m", "tools.gpu_benchmark", str(tmp_path), "--device", "cpu"]
    proc = run([*cmd, "--overrides", json.dumps(TINY_BENCH)], tiny_project, timeout=600)
    assert "device: cpu" in proc.stdout
    dest = tmp_path / "benchmark_cpu"
    params = load_params(tiny_project / "params.yaml")
    windowed = {name for name, s in params.schedules.items() if not s.is_full}
    assert "full" in params.schedules and "full" not in windowed  # full attention has nothing to time
    assert {f.stem for f in dest.glob("*.json")} == windowed | {"kernel"}

    for name in windowed:
        result = json.loads((dest / f"{name}.json").read_text())
        assert set(result) == {"summary", "run", "records"}  # as metrics/benchmark/<schedule>.json
        assert result["run"]["device"] == "cpu" and result["run"]["device_name"] == "cpu"
        assert result["run"]["source"] == "python -m tools.gpu_benchmark"
        records = result["records"]
        assert {(r["schedule"], r["mode"], r["seq_len"]) for r in records} == {
            (name, m, T) for m in ("fwd", "fwd_bwd") for T in (64, 128)
        }  # the override fwd_bwd_seq_lens: null (every T) beats the tiny preset's [128]
        paths = set()
        for r in records:
            assert len(r["times_s"]) == 3  # repeats 3, no warm-up round timed
            assert r["full_time_s"] > 0 and r["time_s"] == statistics.median(r["times_s"])
            assert min(r["round_speedups"]) <= r["speedup"] <= max(r["round_speedups"])
            assert r["speedup"] == pytest.approx(statistics.median(r["round_speedups"]))  # median of per-round ratios
            assert set(r["attention_paths"]) <= {"causal", "tiled", "band", "blocked", "masked"}  # CPU: no flex
            paths |= set(r["attention_paths"])
        assert result["run"]["attention_paths"] == ", ".join(sorted(paths))
        assert set(result["summary"]) == {name}
        assert set(result["summary"][name]["fwd_bwd"]["64"]) == {"speedup", "ceiling", "efficiency"}

    kernel = json.loads((dest / "kernel.json").read_text())
    assert set(kernel) == {"summary", "run", "crossover", "records"} and kernel["run"]["device_name"] == "cpu"
    timed = {(r["mode"], r["kernel"], r["window"], r["seq_len"]) for r in kernel["records"]}
    assert {("kernel", k, 16, t) for k in ("band", "blocked") for t in (64, 128)} <= timed  # both kernels, each T
    for r in kernel["records"]:
        assert r["speedup"] == pytest.approx(statistics.median(r["round_speedups"]))
        assert r["attention_paths"] == [r["kernel"]]  # each row timed the kernel it names
    assert "band_w16" in proc.stdout and "blocked_w16" in proc.stdout  # the printed table
    model_table = proc.stdout.split("\n\n")[-2]  # the whole-model table, then the kernel one, then the last line
    assert "fwd_bwd" in model_table and "kernel" not in model_table and "no FlexAttention" not in proc.stderr


@pytest.mark.parametrize(
    "overrides,message",
    [
        ('{"repeats": 0}', "benchmark.repeats must be a positive integer"),
        ('{"colour": 1}', "benchmark.colour is not a known parameter"),
        ('{"seq_lens": "64"}', "benchmark.seq_lens must be"),
        ('{"n_layer": 3}', "benchmark.n_layer is not a known parameter"),  # the depth is model.n_layer
        ('{"threads": 1}', "benchmark.threads is not a known parameter"),  # CPU threads: cpu_threads
        ('{"device": "tpu"}', "benchmark.device must be one of"),
        ("[1]", "BENCH_OVERRIDES must be a JSON object"),
        ("{repeats: 3}", "BENCH_OVERRIDES is not valid JSON"),
    ],
)
def test_gpu_benchmark_names_a_bad_override(tiny_project, tmp_path, overrides, message):
    """One line naming the field, exit code 2, before torch loads: nothing is timed or written."""
    cmd = [sys.executable, "-m", "tools.gpu_benchmark", str(tmp_path), "--device", "cpu", "--overrides", overrides]
    proc = run(cmd, tiny_project, check=False, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("gpu_benchmark: params: ")
    assert not list(tmp_path.rglob("*.json"))  # failed before any timing


def test_gpu_benchmark_script_passes_its_environment(tiny_project, tmp_path):
    """tools/gpu_benchmark.sh runs the module from the repo root with BENCH_* as before (DEST relative to the
    caller's directory)."""
    env = {"BENCH_DEVICE": "cpu", "BENCH_OVERRIDES": '{"colour": 1}', "BENCH_PARAMS": "params.yaml"}
    proc = run(f"bash {tiny_project}/tools/gpu_benchmark.sh dest", tmp_path, check=False, extra_env=env)
    assert proc.returncode == 2 and "benchmark.colour is not a known parameter" in proc.stderr
    assert (tmp_path / "dest").is_dir() and not list(tmp_path.rglob("*.json"))
    proc = run(
        f"bash {tiny_project}/tools/gpu_benchmark.sh dest",
        tmp_path,
        check=False,
        extra_env={"BENCH_PARAMS": "x.yaml"},
    )
    assert proc.returncode == 2 and "gpu_benchmark: params: x.yaml: params file not found" in proc.stderr


def test_gpu_benchmark_names_every_record_that_missed_flex_attention():
    """On CUDA a windowed layer must run flex: a fallback, or a later schedule that silently ran the blocked path
    after one (lmask.attention stops choosing flex once a call failed), is named; wide windows and CPUs are not."""
    from lmask.params import Schedule
    from tools.gpu_benchmark import missing_flex

    schedule = Schedule("half", [None, 128, None, 512], 0)
    records = [
        {"mode": "fwd", "seq_len": 256, "attention_paths": ["causal", "flex"]},  # 128 < 256: flex ran
        {"mode": "fwd", "seq_len": 128, "attention_paths": ["causal"]},  # no window below T: nothing to miss
        {"mode": "fwd", "seq_len": 1024, "attention_paths": ["causal", "flex", "flex_fallback"]},  # failed mid-run
        {"mode": "fwd_bwd", "seq_len": 1024, "attention_paths": ["band", "blocked", "causal"]},  # flex never chosen
    ]
    assert missing_flex(schedule, records, "cuda") == [
        "fwd@1024 (causal, flex, flex_fallback)",
        "fwd_bwd@1024 (band, blocked, causal)",
    ]
    assert missing_flex(schedule, records, "cpu") == []  # backend auto never picks flex on a CPU


def test_long_prefix_preset_stacks_on_long(params_copy):
    """presets/long-prefix.yaml on top of the long preset: the long preset's natural phase unchanged (800 steps); a
    first warm-up phase of 32 unprefixed rows a step (twice the long preset's); prefixed 128-token rows at 16 a step,
    first at positions from 0, then at random position ids; prefixed 512-token rows at random position ids (7.27M
    warm-up tokens in all); prefixed short copy rows at random positions and a fixed position table."""
    apply_preset("long", params_copy)
    long = load_params(params_copy)
    apply_preset("long-prefix", params_copy, stack=True)
    p = load_params(params_copy)
    plan = p.train.copy_warmup.plan
    assert [(q.context, q.steps, q.batch_size, q.max_period, q.prefix, q.position_offsets) for q in plan] == [
        (32, 1600, 32, 8, False, False),
        (128, 1400, 16, 48, True, False),
        (128, 600, 16, 48, True, True),
        (512, 750, 4, 48, True, True),
    ]
    assert plan[0].batch_size == 2 * long.train.copy_warmup.plan[0].batch_size
    assert p.train.copy_warmup.tokens() == 32 * 32 * 1600 + 16 * 128 * 2000 + 4 * 512 * 750 == 7_270_400
    assert p.train.steps - p.train.copy_warmup.steps == long.train.steps - long.train.copy_warmup.steps == 800
    assert p.mix.copy_prefix and not long.mix.copy_prefix and p.mix.copy_rows == long.mix.copy_rows == 4
    assert p.mix.copy_position_offsets and not long.mix.copy_position_offsets
    assert p.model.train_positions is False and long.model.train_positions is True
    assert params_copy.read_text().startswith("# presets applied: long, long-prefix\n")
