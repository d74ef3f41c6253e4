"""params.yaml validation: every bad field is named, before any stage does work."""

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lmask.params import load_params, params_from_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(raw: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(raw)
    node = out
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return out


def test_default_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.model.n_layer == 12 and p.data.context_length <= p.model.n_positions
    assert {"full", "half", "quarter", "aggressive"} <= set(p.schedules)


@pytest.mark.parametrize(
    "dotted, value, message",
    [
        ("train.lrr", 0.1, "train.lrr"),
        ("train.lr", "fast", "train.lr"),
        ("train.steps", 0, "train.steps"),
        ("train.batch_size", 6, "train.batch_size"),
        ("train.device", "tpu", "train.device"),
        ("masked.warmup_steps", -1, "masked.warmup_steps"),
        ("model.n_head", 3, "model.n_embd"),
        ("model.init", "random", "model.init"),
        ("data.source", "web", "data.source"),
        ("data.context_length", 512, "data.context_length"),
        ("data.test_fraction", 0.7, "data.test_fraction"),
        ("tokenizer.kind", "sentencepiece", "tokenizer.kind"),
        ("tokenizer.vocab_size", 100, "tokenizer.vocab_size"),
        ("attention.backend", "triton", "attention.backend"),
        ("schedules.half.end_windw", 16, "schedules.half.end_windw"),
        ("schedules.quarter.start_layer", 12, "schedules.quarter.start_layer"),
        ("evaluate.batch_size", 0, "evaluate.batch_size"),
        ("bogus", {}, "bogus"),
    ],
)
def test_bad_field_is_named(raw, dotted, value, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        params_from_dict(with_change(raw, dotted, value))


def test_text_source_needs_existing_files(raw, tmp_path):
    bad = with_change(raw, "data.source", "text")
    bad["data"]["text_files"] = {"train": str(tmp_path / "missing.txt")}
    with pytest.raises(ValueError, match=r"data\.text_files\.train"):
        params_from_dict(bad)


def test_stage_fails_fast_naming_the_field(raw, tmp_path):
    """A typo in a schedule stops a training stage in seconds, before data or model work."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_change(raw, "schedules.half.end_windw", 16)))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train_masked", "half"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode != 0
    assert "schedules.half.end_windw" in proc.stderr
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "models").exists()
