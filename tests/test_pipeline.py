"""End to end: the whole DVC pipeline on the tiny preset, in a copy of the repo; every output checked."""

import json
import math

import numpy as np
import pytest
import yaml

from lmask.params import load_params
from tests.conftest import run

pytestmark = pytest.mark.slow


def test_every_stage_runs_and_writes_its_outputs(tiny_pipeline):
    repo = tiny_pipeline
    params = load_params(repo / "params.yaml")
    names, seeds = list(params.schedules), params.finetune_seeds
    stages = set(run(["dvc", "stage", "list", "--name-only"], repo).stdout.split())
    expected = {"validate", "download", "tokenize", "train_baseline", "evaluate_baseline", "summarize", "report"}
    expected |= {"benchmark_kernel"} | {f"benchmark@{s}" for s in names} | {f"evaluate@{s}" for s in names}
    expected |= {f"train_masked@{s}-{k}" for s in names for k in seeds}
    assert stages == expected

    for split in ("train", "validation", "test", "code"):
        blocks = np.load(repo / "data/tokenized" / f"{split}.npy")
        assert blocks.ndim == 2 and blocks.shape[1] == params.context
    for name in names:
        for k in seeds:
            model_dir = repo / "models/masked" / name / f"s{k}"
            config = json.loads((model_dir / "config.json").read_text())
            assert config["layer_windows"] == params.schedules[name].windows
            assert config["attention_sinks"] == params.schedules[name].sinks
            info = json.loads((model_dir / "train_info.json").read_text())
            assert info["finetune_seed"] == k and info["threads"] == params.cpu_threads
            live = repo / "metrics/train" / f"{name}-s{k}"
            assert math.isfinite(json.loads((live / "metrics.json").read_text())["val_loss"])
            assert (live / "plots/metrics/val_loss.tsv").read_text().startswith("step\tval_loss")
        evaluated = json.loads((repo / "metrics/eval" / f"{name}.json").read_text())
        assert set(evaluated) >= {"zero_shot", *(f"s{k}" for k in seeds)}
        with np.load(repo / "eval" / name / "s0.npz") as arrays:
            test_blocks = min(params.evaluate.max_blocks, len(np.load(repo / "data/tokenized/test.npy")))
            assert arrays["nll_test"].shape == (test_blocks, params.context - 1)
            assert arrays["copy_nll"].shape == (len(params.copy.distances), params.copy.n_sequences, 2)
    assert not list(repo.glob("checkpoints/**/state*.pt"))  # finished runs clean their checkpoints
    page = (repo / "plots/report.html").read_text()
    assert all(name in page for name in names)


def test_summary_contract(tiny_pipeline):
    summary = json.loads((tiny_pipeline / "metrics/summary.json").read_text())
    params = load_params(tiny_pipeline / "params.yaml")
    assert set(summary) == {"baseline", *params.schedules}
    for name, s in params.schedules.items():
        rec = summary[name]
        assert rec["n_seeds"] == len(params.finetune_seeds)
        assert len(rec["zero_shot_vs_baseline_pct_ci95"]) == 2
        lo, hi = rec["zero_shot_vs_baseline_pct_ci95"]
        assert lo <= rec["zero_shot_vs_baseline_pct"] <= hi
        if not s.is_full:
            lo, hi = rec["vs_full_pct_ci95"]
            assert lo <= rec["vs_full_pct"] <= hi
            assert rec["vs_full"] in ("better", "worse", "no clear difference")
    # zero-shot `full` is the baseline itself: exactly no change, and a zero-width interval
    assert summary["full"]["zero_shot_vs_baseline_pct"] == 0.0
    assert summary["full"]["zero_shot_vs_baseline_pct_ci95"] == [0.0, 0.0]
    drop = summary["baseline"]["copy_loss_drop"]
    assert set(drop) == {str(d) for d in params.copy.distances}
    assert all(len(e["ci95"]) == 2 for e in drop.values())


def test_tiny_baseline_beats_its_unigram_model(tiny_pipeline):
    """On the very tokens test_ppl averages over (the scored test blocks' labels), recomputed here with Counter."""
    from collections import Counter

    params = load_params(tiny_pipeline / "params.yaml")
    train = np.load(tiny_pipeline / "data/tokenized/train.npy").ravel().tolist()
    scored = np.load(tiny_pipeline / "data/tokenized/test.npy")[: params.evaluate.max_blocks, 1:].ravel().tolist()
    vocab = json.loads((tiny_pipeline / "metrics/eval/baseline.json").read_text())["vocab_size"]
    counts = Counter(train)
    total = len(train) + vocab  # add-one smoothing over the whole vocabulary
    unigram = math.exp(-sum(math.log((counts[t] + 1) / total) for t in scored) / len(scored))
    summary = json.loads((tiny_pipeline / "metrics/summary.json").read_text())
    assert summary["baseline"]["test_unigram_ppl"] == pytest.approx(unigram, rel=1e-4)
    assert summary["baseline"]["test_ppl"] < 0.9 * unigram


def test_second_repro_is_a_no_op(tiny_repo):
    out = run(["dvc", "repro"], tiny_repo).stdout
    assert "Running stage" not in out
    assert run(["dvc", "status"], tiny_repo).stdout.strip().startswith("Data and pipelines are up to date")


def test_metrics_show_works_from_git_alone(tiny_repo):
    out = json.loads(run(["dvc", "metrics", "show", "--json"], tiny_repo).stdout)
    data = out[""]["data"]
    assert "test_ppl" in json.dumps(data["metrics/eval/baseline.json"])
    assert "vs_full_pct" in json.dumps(data["metrics/summary.json"])


def test_readme_blocks_are_the_generated_markdown(tiny_pipeline):
    """`python -m lmask.readme` puts the summary and benchmark markdown between README's markers."""
    from lmask.readme import BENCH_END, BENCH_START, README_END, README_START

    run(["python", "-m", "lmask.readme"], tiny_pipeline)
    readme = (tiny_pipeline / "README.md").read_text()
    results = readme[readme.index(README_START) + len(README_START) : readme.index(README_END)]
    bench = readme[readme.index(BENCH_START) + len(BENCH_START) : readme.index(BENCH_END)]
    assert results.strip() == (tiny_pipeline / "metrics/summary.md").read_text().strip()
    assert bench.strip() == (tiny_pipeline / "metrics/benchmark.md").read_text().strip()
    run(["git", "checkout", "README.md"], tiny_pipeline)
    assert yaml.safe_load((tiny_pipeline / "params.yaml").read_text())["data"]["context_length"] == 64
