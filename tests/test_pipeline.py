"""End to end: the whole DVC pipeline on the tiny preset, in a copy of the repo; every output checked."""

import json
import math

import numpy as np
import pytest
import yaml

from lmask.schedule import layer_windows, pair_fraction
from tests.conftest import run

pytestmark = pytest.mark.slow


def test_every_stage_runs_and_writes_its_outputs(tiny_pipeline):
    repo = tiny_pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    schedules = list(params["schedules"])
    stages = run(["dvc", "stage", "list", "--name-only"], repo).stdout.split()
    for name in ["download", "tokenize", "train_baseline", "evaluate"] + [f"train_masked@{s}" for s in schedules]:
        assert name in stages

    for split in ("train", "validation", "test"):
        assert (repo / "data/raw" / f"{split}.jsonl").stat().st_size > 0
        blocks = np.load(repo / "data/tokenized" / f"{split}.npy")
        assert blocks.shape[1] == params["data"]["context_length"]
    assert (repo / "data/tokenizer/tokenizer.json").is_file()

    for name in ["baseline"] + schedules:
        model_dir = repo / ("models/baseline" if name == "baseline" else f"models/masked/{name}")
        assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
        train = json.loads((repo / "metrics/train" / f"{name}.json").read_text())
        assert math.isfinite(train["val_loss"]) and train["tokens_per_s"] > 0
        curve = (repo / "plots/train" / f"{name}.csv").read_text().splitlines()
        assert curve[0] == "step,train_loss,val_loss,lr,tokens_per_s" and len(curve) > 1
        config = json.loads((model_dir / "config.json").read_text())
        if name != "baseline":
            assert config["layer_windows"] == layer_windows(params["schedules"][name], params["model"]["n_layer"])

    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert set(metrics) >= {"baseline", *schedules}
    for name in schedules:
        row = metrics[name]
        for key in (
            "test_ppl",
            "val_ppl",
            "zero_shot_test_ppl",
            "test_ppl_change_vs_baseline_pct",
            "test_ppl_change_vs_full_pct",
        ):
            assert math.isfinite(row[key]), (name, key)
    context = params["data"]["context_length"]
    aggressive = layer_windows(params["schedules"]["aggressive"], params["model"]["n_layer"])
    assert metrics["full"]["attention_pairs"] == 1.0
    assert metrics["aggressive"]["attention_pairs"] == round(pair_fraction(aggressive, context), 4) < 1.0
    positions = (repo / "plots/eval/loss_by_position.csv").read_text().splitlines()
    assert positions[0] == "position,model,loss"
    assert len(positions) == 1 + (params["data"]["context_length"] - 1) * (1 + len(schedules))
    assert not list(repo.glob("checkpoints/**/state.pt"))  # finished runs clean their checkpoints


def test_second_repro_is_a_no_op(tiny_repo):
    out = run(["dvc", "repro"], tiny_repo).stdout
    assert "Running stage" not in out
    assert run(["dvc", "status"], tiny_repo).stdout.strip().startswith("Data and pipelines are up to date")


def test_metrics_show_works_from_git_alone(tiny_repo):
    out = run(["dvc", "metrics", "show", "--json"], tiny_repo).stdout
    assert "test_ppl" in out and "baseline" in out
