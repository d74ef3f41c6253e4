"""Shared fixtures: a tiny, fully-run copy of the pipeline that tests can clone and change.

``tiny_pipeline`` copies the repository's git-tracked files (plus uncommitted changes) into a temp folder, makes it a
fresh git + DVC repo with presets/tiny.yaml applied, and runs `dvc repro` once per test session. ``tiny_repo`` gives
each test its own copy of that finished repo (git history and DVC cache included).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc, python, torchrun


def env() -> dict[str, str]:
    """Subprocess environment: this venv first on PATH, no hub access attempts, no DVC analytics."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1", TOKENIZERS_PARALLELISM="false",
             GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
             GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    e.pop("PYTHONPATH", None)
    return e


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command in ``cwd``; on failure show its output in the assertion message."""
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout,
                          shell=isinstance(cmd, str))
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_project(dest: Path) -> Path:
    """Copy the project's tracked and untracked-but-not-ignored files (not data, models or caches)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def make_tiny_repo(dest: Path) -> Path:
    """A fresh git repo holding the project with the tiny preset applied, committed."""
    copy_project(dest)
    for stale in ("dvc.lock", "metrics", "plots/train", "plots/eval"):
        p = dest / stale
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    run([sys.executable, "-m", "lmask.preset", "tiny"], dest)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "tiny"], dest)
    return dest


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    repo = make_tiny_repo(tmp_path_factory.mktemp("tiny") / "repo")
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "tiny pipeline run"], repo)
    return repo


@pytest.fixture
def tiny_repo(tiny_pipeline, tmp_path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(tiny_pipeline, dest, symlinks=True)
    return dest
