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
    names, bases, seeds = list(params.schedules), params.baseline_seeds, params.finetune_seeds
    runs = [(b, k) for b in bases for k in seeds]
    stages = set(run(["dvc", "stage", "list", "--name-only"], repo).stdout.split())
    expected = {"validate", "download", "tokenize", "evaluate_baseline", "summarize", "report"}
    expected |= {f"train_baseline@{b}" for b in bases}
    expected |= {"benchmark_kernel", "benchmark_train"}
    expected |= {f"benchmark@{s}" for s in names} | {f"evaluate@{s}" for s in names}
    expected |= {f"train_masked@{s}-{b}-{k}" for s in names for b, k in runs}
    assert stages == expected

    for split in ("train", "validation", "test", "code"):
        blocks = np.load(repo / "data/tokenized" / f"{split}.npy")
        assert blocks.ndim == 2 and blocks.shape[1] == params.context
    for b in bases:
        info = json.loads((repo / "models/baseline" / f"b{b}" / "train_info.json").read_text())
        assert info["baseline"] == b and info["seed"] == params.seed + 1000 * b  # each baseline its own seed
    n_docs = min(params.evaluate.max_documents, len(np.load(repo / "data/tokenized/test.npy")))
    for name in names:
        for b, k in runs:
            model_dir = repo / "models/masked" / name / f"b{b}-s{k}"
            config = json.loads((model_dir / "config.json").read_text())
            assert config["layer_windows"] == params.schedules[name].windows
            assert config["attention_sinks"] == params.schedules[name].sinks
            info = json.loads((model_dir / "train_info.json").read_text())
            assert (info["baseline"], info["finetune_seed"]) == (b, k) and set(info["weights_sha256"]) == {
                "model.safetensors"
            }
            live = repo / "metrics/train" / f"{name}-b{b}-s{k}"
            metrics = json.loads((live / "metrics.json").read_text())
            assert math.isfinite(metrics["val_loss"]) and metrics["threads"] == params.cpu_threads
            assert (live / "plots/metrics/val_loss.tsv").read_text().startswith("step\tval_loss")
        evaluated = json.loads((repo / "metrics/eval" / f"{name}.json").read_text())
        assert set(evaluated) >= {*(f"b{b}-zs" for b in bases), *(f"b{b}-s{k}" for b, k in runs)}
        copy_shape = (len(params.copy.distances), params.copy.n_sequences, 2)
        with np.load(repo / "eval" / name / "b0-s0.npz") as arrays:
            for domain in ("test", "code", "repeated"):  # one row per document; fine-tuned runs score every domain
                assert arrays[f"nll_{domain}"].shape == (n_docs, params.context - 1)
            assert arrays["copy_nll"].shape == copy_shape
        with np.load(repo / "eval" / name / "b0-zs.npz") as arrays:
            assert arrays["copy_nll"].shape == copy_shape and "nll_repeated" in arrays
    assert not list(repo.glob("checkpoints/**/state*.pt"))  # finished runs clean their checkpoints
    page = (repo / "plots/report.html").read_text()
    assert all(name in page for name in names)


def test_summary_contract(tiny_pipeline):
    summary = json.loads((tiny_pipeline / "metrics/summary.json").read_text())
    params = load_params(tiny_pipeline / "params.yaml")
    assert set(summary) == {"baseline", *params.schedules}
    for name, s in params.schedules.items():
        rec = summary[name]
        assert rec["n_seeds"] == len(params.finetune_seeds) and rec["n_baselines"] == len(params.baseline_seeds)
        assert len(rec["zero_shot_vs_baseline_pct_baselines"]) == len(params.baseline_seeds)
        assert len(rec["zero_shot_vs_baseline_pct_ci95"]) == 2
        lo, hi = rec["zero_shot_vs_baseline_pct_ci95"]
        assert lo <= rec["zero_shot_vs_baseline_pct"] <= hi
        if not s.is_full:
            lo, hi = rec["vs_full_pct_ci95"]
            assert lo <= rec["vs_full_pct"] <= hi
            assert rec["vs_full"] in ("better", "worse", "no clear difference")
    # zero-shot `full` is the baseline itself: exactly no change, a zero-width interval, and no test (no Holm member)
    zero = summary["full"]["gaps"]["zero_shot_vs_baseline"]
    assert zero["pct"] == 0.0 and zero["pct_ci95"] == [0.0, 0.0] and zero["p_holm"] is None
    drop = summary["baseline"]["copy_loss_drop"]
    assert set(drop) == {str(d) for d in params.copy.distances}
    assert all(len(e["ci95"]) == 2 and e["df"] > 0 and e["mde80"] > 0 for e in drop.values())
    docs = min(params.evaluate.max_documents, params.data.test_documents)
    assert summary["baseline"]["test_documents"] == {"test": docs, "code": docs, "repeated": docs}
    # Issue 27's contract: the positive control and what each windowed schedule removes from it
    copy = summary["baseline"]["copy"]
    est, lo, hi = copy["repeated_drop_nats"]
    assert lo <= est <= hi and set(copy["gate_passed_at"]) <= set(params.copy.distances)
    # where copying reaches: the drop by the first occurrence's position, buckets from report.position_buckets
    assert list(copy["repeated_drop_by_source"]) == ["1-15", "16-31"]  # context 64, edges [16, 32]
    assert all(e["documents"] > 0 and len(e["ci95"]) == 2 for e in copy["repeated_drop_by_source"].values())
    for name, s in params.schedules.items():
        if s.is_full:
            continue
        gains = summary[name]["copy_gain_vs_full"]
        assert set(gains) == {str(d) for d in params.copy.distances}
        for e in [*gains.values(), summary[name]["repeated_drop_vs_full"]]:
            assert set(e) >= {"estimate", "ci95", "verdict", "df", "mde80"} and e["ci95"][0] <= e["estimate"]
    # Issue 28's contract: every interval record has df and mde80
    records = [g for rec in summary.values() for g in rec.get("gaps", {}).values()]
    assert records and all("df" in g and "mde80" in g for g in records)


def test_tiny_baseline_beats_its_unigram_model(tiny_pipeline):
    """On the very tokens test_ppl averages over (each scored test document's labels), recomputed with Counter."""
    from collections import Counter

    params = load_params(tiny_pipeline / "params.yaml")
    train = np.load(tiny_pipeline / "data/tokenized/train.npy").ravel().tolist()
    n = params.evaluate.max_documents
    docs = np.load(tiny_pipeline / "data/tokenized/test.npy")[:n]
    lengths = np.load(tiny_pipeline / "data/tokenized/test.lengths.npy")[:n]
    scored = [t for row, length in zip(docs, lengths) for t in row[1:length].tolist()]
    vocab = json.loads((tiny_pipeline / "metrics/eval/baseline.json").read_text())["vocab_size"]
    counts = Counter(train)
    total = len(train) + vocab  # add-one smoothing over the whole vocabulary
    unigram = math.exp(-sum(math.log((counts[t] + 1) / total) for t in scored) / len(scored))
    summary = json.loads((tiny_pipeline / "metrics/summary.json").read_text())
    assert summary["baseline"]["test_unigram_ppl"] == pytest.approx(unigram, rel=1e-4)
    assert summary["baseline"]["test_ppl"] < 0.9 * unigram


def test_report_only_settings_rerun_no_evaluation(tiny_repo):
    """report.copy_min_gain and report.position_buckets are read by summarize and report alone: changing them leaves
    every training and evaluate stage up to date."""
    text = (tiny_repo / "params.yaml").read_text()
    text = text.replace("copy_min_gain: 0.05", "copy_min_gain: 0.1").replace(
        "position_buckets: [16, 32]", "position_buckets: [8, 32]"
    )
    (tiny_repo / "params.yaml").write_text(text)
    status = json.loads(run(["dvc", "status", "--json"], tiny_repo).stdout)
    assert set(status) <= {"validate", "summarize", "report"} and {"summarize", "report"} <= set(status), status


def test_second_repro_is_a_no_op(tiny_repo):
    out = run(["dvc", "repro"], tiny_repo).stdout
    assert "Running stage" not in out
    assert run(["dvc", "status"], tiny_repo).stdout.strip().startswith("Data and pipelines are up to date")


def test_metrics_show_works_from_git_alone(tiny_repo):
    out = json.loads(run(["dvc", "metrics", "show", "--json"], tiny_repo).stdout)
    data = out[""]["data"]
    assert "test_ppl" in json.dumps(data["metrics/eval/baseline.json"])
    assert "vs_full_pct" in json.dumps(data["metrics/summary.json"])


def test_readme_blocks_are_the_generated_markdown(tiny_repo):
    """`python -m tools.readme` fills every generated block from the pipeline's outputs; `--check` then passes, and
    fails again once an output changes. The replicate comparison of a summary with itself changes no word."""
    repo = tiny_repo
    out = run(
        [
            "python",
            "-m",
            "tools.replicate",
            "compare",
            "metrics/summary.json",
            "metrics/summary.json",
            "--out",
            "metrics/replicate.json",
        ],
        repo,
    ).stdout
    assert "0 of " in out and "0 reversals" in out
    run(["python", "-m", "tools.readme"], repo)
    assert run(["python", "-m", "tools.readme", "--check"], repo).returncode == 0
    readme = (repo / "README.md").read_text()
    head = readme[readme.index("<!-- headline:start -->") : readme.index("<!-- headline:end -->")]
    assert all(f"| {name} |" in head for name in load_params(repo / "params.yaml").schedules if name != "full")
    results = (repo / "docs/results.md").read_text()
    assert (repo / "metrics/summary.md").read_text().strip() in results
    assert (repo / "metrics/benchmark.md").read_text().strip() in results
    (repo / "metrics/benchmark.md").write_text("changed\n")
    assert run(["python", "-m", "tools.readme", "--check"], repo, check=False).returncode == 1
    assert yaml.safe_load((repo / "params.yaml").read_text())["data"]["context_length"] == 64
