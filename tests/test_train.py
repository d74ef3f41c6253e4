"""Training loop, single process: exact resume, corrupt checkpoints survived, non-finite loss stops the run, the same
bits with or without a competing CPU load.

Runs lmask.train in-process on the tiny preset (data prepared in-process, no DVC), so each run takes seconds.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import lmask.train
from lmask.data import download, tokenize_splits
from lmask.params import Params, load_params
from lmask.train import train_baseline
from tests.conftest import copy_project, env
from tools.preset import apply_preset

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("models", "metrics", "checkpoints")
TRAIN_ARGS = ("data/tokenized", "data/tokenizer", "models/baseline", "metrics/train/baseline", "checkpoints/baseline")


def shrink_validation(tokenized: Path, blocks: int = 32) -> None:
    path = tokenized / "validation.npy"
    np.save(path, np.load(path)[:blocks])


def prepare(root: Path, **train) -> Params:
    """params.yaml with the tiny preset (plus ``train`` overrides), and data/ prepared in-process."""
    apply_preset("tiny", root / "params.yaml")
    if train:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        raw["train"].update(train)
        (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(root / "params.yaml")
    download(params.data, root / "data/raw")
    tokenize_splits(
        root / "data/raw",
        params.tokenizer,
        params.context,
        params.data.code_package,
        params.data.test_documents,
        root / "data/tokenizer",
        root / "data/tokenized",
    )
    shrink_validation(root / "data/tokenized")
    return params


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train_data")
    shutil.copy2(ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(ROOT / "presets", root / "presets")
    prepare(root, steps=8, checkpoint_every=2, eval_every=2)
    return root


@pytest.fixture
def workdir(tiny_data, tmp_path, monkeypatch) -> Path:
    dest = tmp_path / "w"
    shutil.copytree(tiny_data, dest)
    monkeypatch.chdir(dest)
    return dest


def train(params: Params, stop_after: int | None = None) -> dict:
    return train_baseline(params, 0, *(Path(p) for p in TRAIN_ARGS), stop_after=stop_after)


def clean_outputs() -> None:
    for d in OUTPUTS:
        shutil.rmtree(d, ignore_errors=True)


def weights(folder: str = "models/baseline") -> dict[str, torch.Tensor]:
    return load_file(f"{folder}/model.safetensors")


def curve() -> str:
    return Path("metrics/train/baseline/plots/metrics/val_loss.tsv").read_text()


def with_train(params: Params, **changes) -> Params:
    return dataclasses.replace(params, train=dataclasses.replace(params.train, **changes))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def test_interrupted_run_resumes_to_identical_weights(workdir):
    params = load_params()
    assert params.train.steps == 8 and params.train.checkpoint_every == 2
    full = train(params)
    ref_weights, ref_curve = weights(), curve()
    clean_outputs()

    # Stop twice, at steps that are not checkpoint_every multiples: stop_after must still leave a checkpoint.
    assert train(params, stop_after=3) == {"stopped_at": 3}
    assert Path("checkpoints/baseline/state.pt").is_file() and not Path("models/baseline").exists()
    assert train(params, stop_after=5) == {"stopped_at": 5}
    resumed = train(params)

    assert_same_weights(ref_weights, weights())
    assert curve() == ref_curve
    assert resumed["val_loss"] == full["val_loss"] and resumed["train_loss"] == full["train_loss"]
    assert not Path("checkpoints/baseline").exists(), "a finished run removes its checkpoints"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_is_moved_aside_and_the_previous_one_resumes(workdir, damage):
    params = load_params()
    train(params)
    ref_weights = weights()
    clean_outputs()
    train(params, stop_after=4)  # checkpoints at steps 2 (state.prev.pt) and 4 (state.pt)
    newest = Path("checkpoints/baseline/state.pt")
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x00garbage" * 100)
    with pytest.warns(
        UserWarning, match=r"checkpoints/baseline/state\.pt is unreadable .* moved to .*state\.pt\.corrupt"
    ):
        train(params)
    assert_same_weights(ref_weights, weights())  # resumed from step 2: the same weights as an uninterrupted run


def test_both_checkpoints_corrupt_restarts_from_scratch(workdir):
    params = load_params()
    train(params)
    ref_weights = weights()
    clean_outputs()
    train(params, stop_after=4)
    for name in ("state.pt", "state.prev.pt"):
        (Path("checkpoints/baseline") / name).write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        train(params)
    assert_same_weights(ref_weights, weights())


def test_stale_checkpoint_is_ignored(workdir, capsys):
    params = load_params()
    train(params, stop_after=2)
    changed = with_train(params, lr=params.train.lr / 2)
    train(changed)
    assert "ignoring stale checkpoint" in capsys.readouterr().out
    after_stale = weights()
    clean_outputs()
    train(changed)  # a fresh run with the new params is the reference
    assert_same_weights(after_stale, weights())


def test_non_finite_loss_stops_with_a_clear_error(workdir, monkeypatch):
    make = lmask.train.initial_model

    def poisoned(params, tokenizer, seed):
        model = make(params, tokenizer, seed)
        with torch.no_grad():
            model.transformer.ln_f.weight[0] = float("nan")
        return model

    monkeypatch.setattr(lmask.train, "initial_model", poisoned)
    with pytest.raises(
        FloatingPointError, match=r"training loss became nan at step 0 \(lr 0\.001\); lower the learning rate"
    ):
        train(load_params())
    assert not Path("models/baseline").exists() and not Path("metrics/train/baseline").exists()


def test_huge_learning_rate_diverges_with_a_clear_error(workdir):
    params = with_train(load_params(), lr=1e30, min_lr=0.0, warmup_steps=0, grad_clip=1e30)
    with pytest.raises(FloatingPointError, match=r"lr=1e\+30"):
        train(params)
    assert not Path("models/baseline").exists()


def test_world_larger_than_the_batch_allows_is_rejected(workdir, monkeypatch):
    """params check nproc; a bigger torchrun world (multi-node: nnodes × nproc) is refused before training."""
    params = load_params()  # tiny: batch 4 = micro 4 × 1 process
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"not divisible by micro_batch_size 4 × 2 processes"):
        train(params)


def test_mixed_batches_are_a_function_of_seed_and_step():
    from lmask.params import MixParams
    from lmask.synthetic import mix_batch

    blocks = np.random.default_rng(0).integers(1, 1000, size=(64, 32))
    mix = MixParams(fraction=0.5, min_period=4, max_period=8)
    a, b = mix_batch(blocks, mix, 1, 7), mix_batch(blocks, mix, 1, 7)
    assert np.array_equal(a, b) and not np.array_equal(a, mix_batch(blocks, mix, 1, 8))
    changed = [i for i in range(len(a)) if not np.array_equal(a[i], blocks[i])]
    assert 16 <= len(changed) <= 48  # about half the rows
    for i in changed:  # each is a segment of that row's own text, repeated with a period in [4, 8]
        period = next(p for p in range(4, 9) if np.array_equal(a[i][p:], a[i][:-p]))
        segment = a[i][:period]
        assert any(np.array_equal(blocks[i][s : s + period], segment) for s in range(32 - period + 1))
    assert np.array_equal(mix_batch(blocks, MixParams(fraction=0.0), 1, 7), blocks)


@pytest.mark.slow
def test_same_bits_with_and_without_a_competing_cpu_load(tmp_path):
    """The stage trains twice, once beside two busy (niced) processes; the weights are byte-identical
    (lmask.determinism)."""
    repo = copy_project(tmp_path / "repo")
    prepare(repo, steps=10, checkpoint_every=10, eval_every=5)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["cpu_threads"] = 2  # the default run's setting: two threads, which a busy machine could otherwise shrink
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cmd = [sys.executable, "-m", "stages.train_baseline", "--baseline", "0", "--data", "data/tokenized"]
    cmd += ["--tokenizer", "data/tokenizer"]

    def run_stage(out: str) -> bytes:
        subprocess.run(
            [*cmd, "--model", out, "--live", f"live-{out}"],
            cwd=repo,
            env=env({"OMP_DYNAMIC": "TRUE"}),
            check=True,
            capture_output=True,
            timeout=900,
        )
        return (repo / out / "model.safetensors").read_bytes()

    idle = run_stage("idle")
    # Niced: still runnable (the load average OMP_DYNAMIC reads counts them), but they leave the cores to the
    # rest of the suite when it needs them.
    busy = "import os; os.nice(19)\nwhile True: pass"
    load = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2)]
    try:
        loaded = run_stage("loaded")
    finally:
        for p in load:
            p.kill()
    assert idle == loaded, "weights differ when another process competes for the CPU"
    assert os.environ.get("OMP_DYNAMIC") != "TRUE"  # the test's own process was not changed
