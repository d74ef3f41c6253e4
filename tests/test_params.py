"""params.yaml validation: every bad field is named, before any stage does work."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmask.params import Params, ParamsError, load_params, params_from_dict

ROOT = Path(__file__).resolve().parents[1]


class _Delete:
    def __repr__(self) -> str:  # a stable test id: xdist workers must collect the same names
        return "DELETE"


DELETE = _Delete()  # with_change: remove the key


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(raw: dict, changes: dict) -> dict:
    """A deep copy of ``raw`` with each dotted key set to its value (or removed, for DELETE)."""
    out = copy.deepcopy(raw)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return out


def test_default_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert isinstance(p, Params)
    assert p.model.n_layer == 12 and p.data.context_length <= p.model.n_positions
    assert {"full", "half", "aggressive"} <= set(p.schedules)
    assert p.schedule("half").windows == [None] * 6 + [512, 256, 128, 64, 32, 16]
    assert p.context == p.data.context_length
    with pytest.raises(ParamsError, match=r"schedules\.nope"):
        p.schedule("nope")


def test_params_error_is_a_value_error():
    assert issubclass(ParamsError, ValueError)


PHASE = {"context": 512, "steps": 2, "batch_size": 2, "max_period": 8}  # a copy warm-up phase the default accepts
BAD = [
    # (changes, dotted field the message must contain)
    ({"schedules.half.end_windw": 16}, "schedules.half.end_windw"),
    ({"schedules.mine": {"type": "explicit", "windows": [0] + [None] * 11}}, "schedules.mine.windows[0]"),
    ({"schedules.mine": {"type": "explicit", "windows": [-4] + [None] * 11}}, "schedules.mine.windows[0]"),
    ({"schedules.mine": {"type": "explicit", "windows": ["16"] + [None] * 11}}, "schedules.mine.windows[0]"),
    ({"schedules.mine": {"type": "explicit", "windows": [16] * 13}}, "schedules.mine.windows"),
    ({"schedules": {}}, "schedules"),
    ({"schedules": DELETE}, "schedules"),
    ({"schedules.baseline": {"type": "none"}}, "schedules.baseline"),
    ({"schedules.aggressive.start_layer": 12}, "schedules.aggressive.start_layer"),
    ({"schedules.aggressive.sinks": 1024}, "schedules.aggressive.sinks"),
    ({"schedules.aggressive.sinks": 5000}, "schedules.aggressive.sinks"),
    ({"train.batch_size": 0}, "train.batch_size"),
    ({"train.batch_size": 3}, "train.batch_size"),
    ({"train.lrr": 0.1}, "train.lrr"),
    ({"train.lr": "fast"}, "train.lr"),
    ({"train.steps": 0}, "train.steps"),
    ({"train.device": "tpu"}, "train.device"),
    ({"masked.warmup_steps": -1}, "masked.warmup_steps"),
    ({"masked.nproc": 0}, "masked.nproc"),
    ({"model.n_head": 3}, "model.n_embd"),
    ({"model.init": "random"}, "model.init"),
    ({"model.init": "pretrained"}, "model.position_init"),  # the default position_init is sinusoidal
    ({"model.position_init": "rope"}, "model.position_init"),
    ({"model.initializer_range": 0}, "model.initializer_range"),
    ({"model.initializer_range": 2.0}, "model.initializer_range"),
    ({"model.initializer_range": "big"}, "model.initializer_range"),
    ({"model.train_positions": "no"}, "model.train_positions"),
    ({"model.train_positions": 0}, "model.train_positions"),
    (
        {"model.init": "pretrained", "model.position_init": "default", "model.initializer_range": 0.1},
        "model.initializer_range",
    ),
    ({"data.source": "web"}, "data.source"),
    ({"data.context_length": 2048}, "data.context_length"),
    ({"data.test_fraction": 0.7}, "data.test_fraction"),
    ({"data.text_files": {"train": "../x"}}, "data.text_files.train"),
    ({"data.text_files": {"train": "/etc/passwd"}}, "data.text_files.train"),
    ({"data.text_files": {"dev": "x.txt"}}, "data.text_files.dev"),
    ({"data.source": "text", "data.text_files": {"train": "missing.txt"}}, "data.text_files.train"),
    ({"data.source": "text"}, "data.text_files.train"),
    ({"tokenizer.kind": "sentencepiece"}, "tokenizer.kind"),
    ({"tokenizer.vocab_size": 100}, "tokenizer.vocab_size"),
    ({"attention.backend": "triton"}, "attention.backend"),
    ({"evaluate.batch_size": 0}, "evaluate.batch_size"),
    ({"copy.span": 0}, "copy.span"),
    ({"copy.span": 1}, "copy.span"),
    ({"copy.distances": [8, 1020]}, "copy.distances"),  # 16 + 1020 + 8 > 1024
    ({"copy.distances": []}, "copy.distances"),
    ({"copy.offset": -1}, "copy.offset"),
    ({"generation.new_tokens": 0}, "generation.new_tokens"),
    ({"generation.prompt_tokens": 1000}, "generation.prompt_tokens"),
    ({"generation.temperature": 0}, "generation.temperature"),
    ({"finetune_seeds": []}, "finetune_seeds"),
    ({"finetune_seeds": [0, 1, 0]}, "finetune_seeds"),
    ({"finetune_seeds": [0, -1]}, "finetune_seeds"),
    ({"finetune_seeds": 0}, "finetune_seeds"),
    ({"finetune_seeds": [[0], [1]]}, "finetune_seeds"),
    ({"benchmark.fwd_bwd_seq_lens": [999]}, "benchmark.fwd_bwd_seq_lens"),
    ({"seed": "x"}, "seed"),
    ({"mix.fraction": 1.5}, "mix.fraction"),
    ({"mix.max_period": 1024}, "mix"),
    ({"mix.copy_prefix": "no"}, "mix.copy_prefix"),
    # prefixed short copy rows need up to copy_context - 1 distinct ids
    (
        {"mix.copy_rows": 2, "mix.copy_context": 512, "mix.copy_prefix": True, "tokenizer.vocab_size": 260},
        "mix.copy_context",
    ),
    ({"train.copy_warmup.phases": [{**PHASE, "prefix": "yes"}]}, "train.copy_warmup.phases[0].prefix"),
    ({"train.copy_warmup.phases": [{**PHASE, "prefix": 1.5}]}, "train.copy_warmup.phases[0].prefix"),
    ({"mix.copy_prefix": -0.5}, "mix.copy_prefix"),
    ({"train.copy_warmup.phases": [{**PHASE, "position_offsets": 1}]}, "train.copy_warmup.phases[0].position_offsets"),
    ({"train.copy_warmup.phases": [{**PHASE, "offsets": True}]}, "optionally 'prefix' and 'position_offsets'"),
    ({"mix.copy_position_offsets": "yes"}, "mix.copy_position_offsets must be bool"),
    # a share of prefixed rows needs as many distinct ids as all of them
    (
        {"mix.copy_rows": 2, "mix.copy_context": 512, "mix.copy_prefix": 0.5, "tokenizer.vocab_size": 260},
        "mix.copy_context",
    ),
    ({"mix.kind": "random", "mix.max_period": 300, "tokenizer.vocab_size": 260}, "mix.max_period"),
    ({"train.copy_warmup.phases": [{**PHASE, "prefx": True}]}, "train.copy_warmup.phases[0]"),
    (
        {"train.copy_warmup.phases": [{**PHASE, "context": 1024, "max_period": 300}], "tokenizer.vocab_size": 260},
        "phases[0].max_period",
    ),
    ({"train.copy_warmup.phases": [{**PHASE, "prefix": True}], "tokenizer.vocab_size": 260}, "phases[0].context"),
    ({"report.confidence": 2}, "report.confidence"),
    ({"report.bootstrap_samples": 10}, "report.bootstrap_samples"),
    ({"benchmark.seq_lens": []}, "benchmark.seq_lens"),
    ({"benchmark.device": "tpu"}, "benchmark.device"),
    ({"analysis.heatmap_layers": [12]}, "analysis.heatmap_layers"),
    ({"bogus": {}}, "bogus"),
]


@pytest.mark.parametrize("changes, field", BAD, ids=[str(b[0] if isinstance(b, tuple) else b.values[0]) for b in BAD])
def test_bad_value_names_the_field(raw, changes, field):
    with pytest.raises(ParamsError) as err:
        params_from_dict(with_change(raw, changes))
    assert field in str(err.value)


@pytest.mark.parametrize("key, source", [("n_layer", "model.n_layer"), ("threads", "cpu_threads")])
def test_benchmark_depth_and_threads_have_one_source(raw, key, source):
    """benchmark.n_layer and benchmark.threads are gone (they only repeated model.n_layer and cpu_threads): even at
    the value of the param they repeated, either is rejected as unknown, in one message naming it."""
    value = raw["model"]["n_layer"] if source == "model.n_layer" else raw["cpu_threads"]
    assert key not in raw["benchmark"] and value is not None
    with pytest.raises(ParamsError, match=rf"^benchmark\.{key} is not a known parameter \(known: [^\n]*$"):
        params_from_dict(with_change(raw, {f"benchmark.{key}": value}))


def test_changes_in_the_table_are_applied(raw):
    """The helper really changes the mapping (else every BAD row would test the default file)."""
    changed = with_change(raw, {"train.batch_size": 0, "schedules": DELETE})
    assert changed["train"]["batch_size"] == 0 and "schedules" not in changed
    assert raw["train"]["batch_size"] != 0 and "schedules" in raw


def test_text_source_with_existing_files_is_valid(raw, tmp_path, monkeypatch):
    """Text files are looked up relative to data.text_dir (relative to the working directory, like DVC)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "all.txt").write_text(" = A = \n text \n")
    p = params_from_dict(with_change(raw, {"data.source": "text", "data.text_files": {"train": "all.txt"}}))
    assert p.data.text_files == {"train": "all.txt"} and p.data.text_dir == "corpus"


def test_load_params_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_module_prints_the_resolved_schedules():
    proc = subprocess.run(
        [sys.executable, "-m", "lmask.params", str(ROOT / "params.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    half = next(line for line in proc.stdout.splitlines() if line.startswith("half "))
    assert "[- - - - - - 512 256 128 64 32 16]" in half


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _run_stage(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, env=_env(), timeout=300
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, field: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: params.yaml:"), lines[0]
    assert field in lines[0], lines[0]


@pytest.mark.parametrize(
    "changes, field",
    [({"schedules.half.end_windw": 16}, "schedules.half.end_windw"), ({"train.batch_size": 0}, "train.batch_size")],
)
def test_validate_stage_one_line_error(raw, tmp_path, changes, field):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_change(raw, changes)))
    out = tmp_path / "params.ok"
    proc = _run_stage(tmp_path, "stages.validate", "--out", str(out))
    _assert_one_line_error(proc, field)
    assert not out.exists()


def test_validate_stage_writes_its_marker_on_good_params(raw, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "params.ok"
    proc = _run_stage(tmp_path, "stages.validate", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.read_text()


def test_train_masked_fails_on_params_before_touching_anything(raw, tmp_path):
    """A typo in a schedule stops a training stage at once, before data, model or torchrun."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_change(raw, {"schedules.half.end_windw": 16})))
    before = sorted(p.name for p in tmp_path.iterdir())
    args = ["--schedule", "half", "--baseline", "0", "--seed", "0", "--baseline-model", "x", "--data", "x"]
    args += ["--model", "x", "--live", "x"]
    proc = _run_stage(tmp_path, "stages.train_masked", *args)
    _assert_one_line_error(proc, "schedules.half.end_windw")
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["params.yaml"]


def test_train_masked_unknown_schedule_is_a_params_error(raw, tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    args = ["--schedule", "halff", "--baseline", "0", "--seed", "0", "--baseline-model", "x", "--data", "x"]
    args += ["--model", "x", "--live", "x"]
    proc = _run_stage(tmp_path, "stages.train_masked", *args)
    _assert_one_line_error(proc, "schedules.halff")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
