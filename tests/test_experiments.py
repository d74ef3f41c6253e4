"""DVC experiments on the tiny pipeline: -S reruns only the stages that depend on the changed params, a new schedule
becomes a new stage, diffs show the change, and queued experiments all complete.

Each test works in its own copy of the finished tiny pipeline (``tiny_repo``), so only the stages an experiment
really changes run.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import run

MASKED = ("full", "half", "quarter", "aggressive", "increasing", "interleaved")


def stages_ran(output: str) -> set[str]:
    """Stage names DVC 3.67 reports as run ("Running stage 'NAME':")."""
    return set(re.findall(r"Running stage '([^']+)':", output))


def stages_skipped(output: str) -> set[str]:
    """Stage names DVC 3.67 reports as unchanged ("Stage 'NAME' didn't change, skipping")."""
    return set(re.findall(r"Stage '([^']+)' didn't change, skipping", output))


def schedules(repo: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load((repo / "params.yaml").read_text())["schedules"])


def exp_show(repo: Path) -> list[dict[str, str]]:
    """`dvc exp show --csv` rows (workspace, baseline commit and each experiment)."""
    out = run(["dvc", "exp", "show", "--csv"], repo).stdout
    return list(csv.DictReader(io.StringIO(out)))


@pytest.mark.slow
def test_set_param_reruns_only_its_schedule(tiny_repo):
    masked = [f"train_masked@{name}" for name in schedules(tiny_repo)]
    out = run(["dvc", "exp", "run", "-n", "half-w32", "-S", "schedules.half.end_window=32"], tiny_repo).stdout
    # train_masked@half lists params schedules.half, so no other training stage reruns; evaluate and benchmark list
    # schedules (half's windows changed, so both are redone); report follows evaluate's outputs when they change.
    assert stages_ran(out) - {"report"} == {"train_masked@half", "evaluate", "benchmark"}, out
    assert stages_skipped(out) >= {"download", "tokenize", "train_baseline", *masked} - {"train_masked@half"}, out

    params = json.loads(run(["dvc", "params", "diff", "--json"], tiny_repo).stdout)
    assert params["params.yaml"]["schedules.half.end_window"] == {"old": 16, "new": 32, "diff": 16}
    assert list(params["params.yaml"]) == ["schedules.half.end_window"]

    # The workspace holds the experiment's results: only half's training metrics and the evaluation changed.
    metrics = json.loads(run(["dvc", "metrics", "diff", "--json", "--all"], tiny_repo).stdout)
    changed = {path for path, diff in metrics.items() if any(d.get("diff") for d in diff.values())}
    assert "metrics/train/half.json" in changed, metrics
    assert changed <= {"metrics/train/half.json", "metrics/eval.json", "metrics/benchmark_summary.json"}, changed

    rows = exp_show(tiny_repo)
    exp = next(r for r in rows if r["Experiment"] == "half-w32")
    assert exp["schedules.half.end_window"] == "32"
    assert any(r["schedules.half.end_window"] == "16" for r in rows if r["Experiment"] != "half-w32")


@pytest.mark.slow
def test_set_new_schedule_adds_a_stage(tiny_repo):
    new = "{type: progressive, start_layer: 8, start_window: 64, end_window: 8}"
    out = run(["dvc", "exp", "run", "-n", "eighth", "-S", f"+schedules.eighth={new}"], tiny_repo).stdout
    assert stages_ran(out) - {"report"} == {"train_masked@eighth", "evaluate", "benchmark"}, out
    assert "train_masked@eighth" in run(["dvc", "stage", "list"], tiny_repo).stdout
    assert (tiny_repo / "models" / "masked" / "eighth").is_dir()
    trained = json.loads((tiny_repo / "metrics" / "train" / "eighth.json").read_text())
    assert trained["windows"][:8] == [None] * 8 and trained["windows"][-1] == 8
    assert "eighth" in (tiny_repo / "metrics" / "eval.json").read_text()


@pytest.mark.slow
def test_queue_runs_every_experiment(tiny_repo):
    """Two queued experiments (evaluation settings only, so each reruns just `evaluate`), run by one worker."""
    queued = {"q-batches1": "evaluate.max_batches=1", "q-batch2": "evaluate.batch_size=2"}
    for name, change in queued.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", change], tiny_repo)
    run(["dvc", "queue", "start", "-j", "1"], tiny_repo)
    try:
        deadline = time.monotonic() + 900
        while True:
            status = run(["dvc", "queue", "status"], tiny_repo).stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                break
            assert time.monotonic() < deadline, f"queue not done in 15 min:\n{status}"
            time.sleep(5)
    finally:
        run(["dvc", "queue", "stop"], tiny_repo, check=False)
    assert all(re.search(rf"{name}\s.*Success", status) for name in queued), status

    rows = {r["Experiment"]: r for r in exp_show(tiny_repo)}
    assert set(queued) <= set(rows), rows.keys()
    assert rows["q-batches1"]["evaluate.max_batches"] == "1"
    assert rows["q-batch2"]["evaluate.batch_size"] == "2"
    failed = run(["dvc", "queue", "logs", "q-batch2"], tiny_repo).stdout
    assert "Running stage 'evaluate'" in failed and "Running stage 'train_masked" not in failed, failed
