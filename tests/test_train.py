"""Training loop, single process: exact resume, non-finite loss stops the run, stale checkpoints are ignored.

Runs lmask.train in-process on the tiny preset (data prepared in-process, no DVC), so each run takes seconds.
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import lmask.train
from lmask.data import download, tokenize_splits
from lmask.params import Params, load_params
from lmask.preset import apply_preset
from lmask.train import train_baseline

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("models", "metrics", "plots", "checkpoints")


def shrink_validation(tokenized: Path, blocks: int = 32) -> None:
    """Keep the first ``blocks`` validation blocks: the final full-validation pass dominates tiny runs otherwise."""
    path = tokenized / "validation.npy"
    np.save(path, np.load(path)[:blocks])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """params.yaml with the tiny preset applied, plus data/raw, data/tokenizer and data/tokenized."""
    root = tmp_path_factory.mktemp("train_data")
    shutil.copy2(ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(ROOT / "presets", root / "presets")
    apply_preset("tiny", root / "params.yaml")
    params = load_params(root / "params.yaml")
    download(params.data, root / "data/raw")
    tokenize_splits(
        root / "data/raw",
        params.tokenizer,
        params.data.context_length,
        root / "data/tokenizer",
        root / "data/tokenized",
    )
    shrink_validation(root / "data/tokenized")
    return root


@pytest.fixture
def workdir(tiny_data, tmp_path, monkeypatch) -> Path:
    """A private copy of tiny_data as the working directory (train_baseline uses repo-relative paths)."""
    dest = tmp_path / "w"
    shutil.copytree(tiny_data, dest)
    monkeypatch.chdir(dest)
    return dest


def clean_outputs() -> None:
    for d in OUTPUTS:
        shutil.rmtree(d, ignore_errors=True)


def weights() -> dict[str, torch.Tensor]:
    return load_file("models/baseline/model.safetensors")


def curve() -> list[dict[str, str]]:
    with open("plots/train/baseline.csv") as f:
        return [{k: row[k] for k in ("step", "train_loss", "val_loss", "lr")} for row in csv.DictReader(f)]


def with_train(params: Params, **changes) -> Params:
    return dataclasses.replace(params, train=dataclasses.replace(params.train, **changes))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def test_interrupted_run_resumes_to_identical_weights(workdir):
    params = load_params()
    assert params.train.steps == 6 and params.train.checkpoint_every == 2  # the tiny preset, as assumed below
    full = train_baseline(params)
    ref_weights, ref_curve = weights(), curve()
    clean_outputs()

    # Stop twice, at steps that are not checkpoint_every multiples: stop_after must still leave a checkpoint.
    assert train_baseline(params, stop_after=3) == {"stopped_at": 3}
    assert Path("checkpoints/baseline/state.pt").is_file() and not Path("models/baseline").exists()
    assert train_baseline(params, stop_after=5) == {"stopped_at": 5}
    resumed = train_baseline(params)

    assert_same_weights(ref_weights, weights())
    assert curve() == ref_curve
    assert resumed["val_loss"] == full["val_loss"] and resumed["train_loss"] == full["train_loss"]
    assert not Path("checkpoints/baseline").exists(), "a finished run removes its checkpoint"


def test_stale_checkpoint_is_ignored(workdir, capsys):
    params = load_params()
    train_baseline(params, stop_after=2)
    changed = with_train(params, lr=params.train.lr / 2)
    train_baseline(changed)
    assert "ignoring stale checkpoint" in capsys.readouterr().out
    after_stale = weights()
    clean_outputs()
    train_baseline(changed)  # a fresh run with the new params is the reference
    assert_same_weights(after_stale, weights())


def test_non_finite_loss_stops_with_a_clear_error(workdir, monkeypatch):
    make = lmask.train.initial_model

    def poisoned(params, tokenizer):
        model = make(params, tokenizer)
        with torch.no_grad():
            model.transformer.ln_f.weight[0] = float("nan")
        return model

    monkeypatch.setattr(lmask.train, "initial_model", poisoned)
    with pytest.raises(FloatingPointError, match=r"training loss became nan at step 0; lower the learning rate"):
        train_baseline(load_params())
    assert not Path("models/baseline").exists() and not Path("metrics/train/baseline.json").exists()


def test_huge_learning_rate_diverges_with_a_clear_error(workdir):
    params = with_train(load_params(), lr=1e30, min_lr=0.0, warmup_steps=0, grad_clip=1e30)
    with pytest.raises(FloatingPointError, match=r"train\.lr=1e\+30"):
        train_baseline(params)
    assert not Path("models/baseline").exists()


def test_world_larger_than_the_batch_allows_is_rejected(workdir, monkeypatch):
    """params check nproc; a bigger torchrun world (multi-node: nnodes × nproc) is refused before training."""
    params = load_params()  # tiny: batch 4 = micro 4 × 1 process
    monkeypatch.setenv("WORLD_SIZE", "2")  # checked before any process group is created
    with pytest.raises(ValueError, match=r"not divisible by micro_batch_size 4 × 2 processes"):
        train_baseline(params)
