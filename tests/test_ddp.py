"""DDP on CPU: 2 gloo processes under torchrun train like 1 process with the same global batch, and resume.

The 1-process reference runs in-process; the 2-process runs go through the stage exactly as dvc.yaml's cmd does
(`python -m stages.train_baseline ...` with train.nproc 2 relaunches itself under torchrun), in a copy of the project
on the tiny preset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmask.data import download, load_blocks, tokenize_project
from lmask.model import load_model
from lmask.params import load_params
from lmask.train import mean_loss, train_baseline
from tests.conftest import copy_project, run
from tools.preset import apply_preset

# One worker runs the module: its fixtures train once. Launches torchrun (a few process starts, ~1-2 min on 2 cores)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ddp")]

# Global batch 8 = micro 4 × 2 processes, or micro 4 × 2 accumulation steps in one process. Logging every step
# gives the whole trajectory; 2 eval batches give each rank one.
OVERRIDES = {"eval_every": 1, "eval_batches": 2, "batch_size": 8, "micro_batch_size": 4, "steps": 6}
ARGS = ["data/tokenized", "data/tokenizer", "models/baseline", "metrics/train/baseline", "checkpoints/baseline"]
STAGE = [
    "python",
    "-m",
    "stages.train_baseline",
    "--baseline",
    "0",
    "--checkpoints",
    "checkpoints/baseline",
    "--data",
    "data/tokenized",
    "--tokenizer",
    "data/tokenizer",
    "--model",
    "models/baseline",
    "--live",
    "metrics/train/baseline",
]
# Pinned like the stage (lmask.train refuses otherwise): unpinned, its first steps would use the host's widest kernels
# (AVX-512 where there is one) and the resumed, pinned steps AVX2, and the resume would not be exact there.
STOP_SCRIPT = f"""\
import os, sys
from pathlib import Path
from lmask.determinism import PINNED, pin_cpu
from lmask.params import load_params
os.environ.pop(PINNED, None)  # not inherited from the test process: this script pins for itself
params = load_params()
pin_cpu(params.cpu_threads)
from lmask.train import train_baseline
args = [Path(a) for a in {ARGS!r}]
print(train_baseline(params, 0, *args, stop_after=int(sys.argv[1])))
"""


def set_train(repo: Path, **values) -> None:
    path = repo / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(values)
    raw["cpu_threads"] = 1
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def shrink_validation(tokenized: Path, blocks: int = 32) -> None:
    """Keep the first ``blocks`` validation blocks: the final full-validation pass dominates tiny runs otherwise."""
    path = tokenized / "validation.npy"
    np.save(path, np.load(path)[:blocks])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Project copy on the tiny preset with data prepared (in-process, no DVC)."""
    repo = copy_project(tmp_path_factory.mktemp("ddp") / "repo")
    apply_preset("tiny", repo / "params.yaml")
    set_train(repo, **OVERRIDES)
    params = load_params(repo / "params.yaml")
    download(params.data, repo / "data/raw")
    tokenize_project(params, repo / "data/raw", repo / "data/tokenizer", repo / "data/tokenized")
    shrink_validation(repo / "data/tokenized")
    return repo


def clone(project: Path, dest: Path, nproc: int) -> Path:
    shutil.copytree(project, dest)
    set_train(dest, nproc=nproc)
    return dest


def curve(repo: Path) -> list[dict[str, float]]:
    import pandas as pd

    live = repo / "metrics/train/baseline/plots/metrics"
    df = pd.read_csv(live / "train_loss.tsv", sep="\t").merge(pd.read_csv(live / "val_loss.tsv", sep="\t"), on="step")
    return df[["step", "train_loss", "val_loss"]].to_dict("records")


@pytest.fixture(scope="module")
def one_proc(project, tmp_path_factory) -> Path:
    repo = clone(project, tmp_path_factory.mktemp("one") / "repo", nproc=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        train_baseline(load_params(), 0, *(Path(a) for a in ARGS))
    return repo


@pytest.fixture(scope="module")
def two_proc_resumed(project, tmp_path_factory) -> tuple[Path, str]:
    """2 processes, stopped after step 3 and resumed by the stage command: exercises the DDP checkpoint."""
    repo = clone(project, tmp_path_factory.mktemp("two") / "repo", nproc=2)
    (repo / "stop_after.py").write_text(STOP_SCRIPT)
    torchrun = ["torchrun", "--standalone", "--nproc_per_node=2"]
    stopped = run([*torchrun, "stop_after.py", "3"], repo)
    assert "{'stopped_at': 3}" in stopped.stdout
    assert (repo / "checkpoints/baseline/state.pt").is_file()
    resumed = run(STAGE, repo)
    return repo, resumed.stdout + resumed.stderr


def test_two_processes_follow_the_one_process_trajectory(one_proc, two_proc_resumed):
    two, log = two_proc_resumed
    assert "resuming from checkpoints/baseline/state.pt at step 3" in log
    ref, got = curve(one_proc), curve(two)
    assert [r["step"] for r in got] == [r["step"] for r in ref] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(ref, got):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=2e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], abs=2e-4)

    info = json.loads((two / "models/baseline/train_info.json").read_text())
    assert info["world_size"] == 2 and info["metrics"]["steps"] == 6
    assert not (two / "checkpoints/baseline").exists()
    # Exactly one writer: rank 0 printed the resume line once.
    assert log.count("resuming from") == 1


def test_ddp_model_loads_and_matches_its_metrics(two_proc_resumed):
    two, _ = two_proc_resumed
    model = load_model(two / "models/baseline")
    val = load_blocks(two / "data/tokenized", "validation")
    metrics = json.loads((two / "metrics/train/baseline/metrics.json").read_text())
    eval_batches = yaml.safe_load((two / "params.yaml").read_text())["train"]["eval_batches"]
    got = mean_loss(model, val, 4, torch.device("cpu"), eval_batches)
    assert got == pytest.approx(metrics["val_loss"], abs=1e-4)


def test_ddp_resume_is_exact(project, two_proc_resumed, tmp_path):
    """An uninterrupted 2-process run ends with exactly the weights of the interrupted one."""
    two, _ = two_proc_resumed
    straight = clone(project, tmp_path / "repo", nproc=2)
    run(STAGE, straight)
    a = load_file(two / "models/baseline/model.safetensors")
    b = load_file(straight / "models/baseline/model.safetensors")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
