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
from pathlib import Path

import pytest
import yaml

from tests.conftest import run, stages_ran


def stages_skipped(output: str) -> set[str]:
    """Stage names DVC 3.67 reports as unchanged ("Stage 'NAME' didn't change, skipping")."""
    return set(re.findall(r"Stage '([^']+)' didn't change, skipping", output))


def schedules(repo: Path) -> list[str]:
    return list(yaml.safe_load((repo / "params.yaml").read_text())["schedules"])


def exp_show(repo: Path) -> list[dict[str, str]]:
    """`dvc exp show --csv` rows (workspace, baseline commit and each experiment)."""
    out = run(["dvc", "exp", "show", "--csv"], repo).stdout
    return list(csv.DictReader(io.StringIO(out)))


def runs(repo: Path) -> list[tuple[int, int]]:
    """(baseline, fine-tuning seed) of every fine-tuned run."""
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    return [(b, k) for b in raw["baseline_seeds"] for k in raw["finetune_seeds"]]


def chain(schedule: str, pairs: list[tuple[int, int]]) -> set[str]:
    """The stages one schedule owns: its fine-tuning runs, its evaluation and its benchmark."""
    return {*(f"train_masked@{schedule}-{b}-{k}" for b, k in pairs), f"evaluate@{schedule}", f"benchmark@{schedule}"}


AGGREGATION = {"validate", "summarize", "report"}


@pytest.mark.slow
def test_schedule_changes_rerun_exactly_their_chains(tiny_repo):
    """A changed schedule makes exactly its chain stale, and a new schedule adds (and runs) exactly its own stages.

    The change is checked with dvc status (what `dvc repro` would run), the new schedule with a real experiment: one
    DVC run instead of two, since this is the suite's critical path.
    """
    seeds = runs(tiny_repo)
    # Before running: dvc status names exactly the stages that read schedules.half (and the aggregation).
    params = tiny_repo / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("    end_window: 16\n", "    end_window: 32\n", 1))
    status = json.loads(run(["dvc", "status", "--json"], tiny_repo).stdout)
    assert set(status) == chain("half", seeds) | AGGREGATION, status
    params.write_text(original)

    new = "{type: progressive, start_layer: 8, start_window: 64, end_window: 8}"
    out = run(["dvc", "exp", "run", "-n", "eighth", "-S", f"+schedules.eighth={new}"], tiny_repo).stdout
    assert set(stages_ran(out)) == chain("eighth", seeds) | AGGREGATION, out
    others = {s for n in schedules(tiny_repo) if n != "eighth" for s in chain(n, seeds)}
    baselines = {f"train_baseline@{b}" for b, _ in seeds}
    assert stages_skipped(out) >= {"download", "tokenize", "evaluate_baseline", *baselines, *others}, out

    listed = run(["dvc", "stage", "list", "--name-only"], tiny_repo).stdout.split()
    assert chain("eighth", seeds) <= set(listed)
    config = json.loads((tiny_repo / "models/masked/eighth/b0-s0/config.json").read_text())
    assert config["layer_windows"][:8] == [None] * 8 and config["layer_windows"][-1] == 8
    assert "eighth" in json.loads((tiny_repo / "metrics/summary.json").read_text())

    diff = json.loads(run(["dvc", "params", "diff", "--json"], tiny_repo).stdout)["params.yaml"]
    assert diff and all(key.startswith("schedules.eighth") for key in diff), diff
    assert diff["schedules.eighth.end_window"]["new"] == 8, diff

    # dvc metrics diff shows that schedule's lines only: no timing noise from models that did not change.
    metrics = json.loads(run(["dvc", "metrics", "diff", "--json"], tiny_repo).stdout)
    changed = {f"{path}:{key}" for path, diff in metrics.items() for key, d in diff.items() if d["old"] != d["new"]}
    assert any("eighth" in item for item in changed), metrics
    for item in changed:
        path, key = item.split(":", 1)
        about_it = "eighth" in path or key.startswith("eighth.") or ".eighth." in key
        # Holm corrects within a family (one comparison across schedules), so another schedule's adjusted p-value
        # (and at most its word) follows the change; its estimates and intervals do not move.
        family_wise = key.endswith(".p_holm") or key.endswith(".verdict")
        assert about_it or family_wise, f"{item} changed although only eighth was added"

    rows = exp_show(tiny_repo)
    exp = next(r for r in rows if r["Experiment"] == "eighth")
    assert exp["schedules.eighth.end_window"] == "8"


@pytest.mark.slow
def test_queue_runs_every_experiment(tiny_repo):
    """Two queued experiments (report settings only, so each reruns just the aggregation), run by one worker."""
    queued = {"q-samples1": "report.max_samples=1", "q-conf": "report.confidence=0.9"}
    for name, change in queued.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", change], tiny_repo)
    # Run the queue in the foreground (one worker): the same queue `dvc queue start` serves, without polling it.
    run(["dvc", "exp", "run", "--run-all", "-j", "1"], tiny_repo, timeout=900)
    status = run(["dvc", "queue", "status"], tiny_repo).stdout
    assert all(re.search(rf"{name}\s.*Success", status) for name in queued), status

    rows = {r["Experiment"]: r for r in exp_show(tiny_repo)}
    assert set(queued) <= set(rows), rows.keys()
    assert rows["q-samples1"]["report.max_samples"] == "1"
    assert rows["q-conf"]["report.confidence"] == "0.9"
    log = run(["dvc", "queue", "logs", "q-conf"], tiny_repo).stdout
    assert "Running stage 'summarize'" in log and "Running stage 'train_masked" not in log, log
