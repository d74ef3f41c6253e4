"""Shared fixtures: a tiny, fully-run copy of the pipeline that tests can clone and change.

``tiny_pipeline`` copies the repository's git-tracked files (plus uncommitted changes) into a temp folder, makes it a
fresh git + DVC repo with presets/tiny.yaml applied, and runs `dvc repro` once per test session. ``tiny_repo`` gives
each test its own copy of that finished repo (git history and DVC cache included).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmask.determinism import pin_cpu

# Tests train in-process, and lmask.train refuses to train on an unpinned CPU: pin this process as the stages pin
# theirs, before any test module imports torch (thread count left to torch, as before).
pin_cpu(None)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc, python, torchrun


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Subprocess environment: this venv first on PATH, no hub access attempts, no DVC analytics (+ ``extra``)."""
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        DVC_NO_ANALYTICS="1",
        TOKENIZERS_PARALLELISM="false",
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
        # S3 remotes: fail fast instead of probing the EC2 metadata address when credentials are missing.
        AWS_EC2_METADATA_DISABLED="true",
    )
    e.pop("PYTHONPATH", None)
    e.update(extra or {})
    return e


def run(
    cmd: list[str] | str, cwd: Path, check: bool = True, timeout: float = 900, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` (environment: env(extra_env)); on failure show its output in the assertion message."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env(extra_env), capture_output=True, text=True, timeout=timeout, shell=isinstance(cmd, str)
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def stages_ran(dvc_output: str) -> list[str]:
    """Stage names DVC 3.67 reports as run ("Running stage 'NAME':"), in order."""
    return re.findall(r"Running stage '([^']+)':", dvc_output)


def copy_project(dest: Path) -> Path:
    """Copy the project's tracked and untracked-but-not-ignored files (not data, models or caches)."""
    from lmask.replicate import copy_project as copy

    return copy(ROOT, dest)


def make_tiny_repo(dest: Path) -> Path:
    """A fresh git repo holding the project with the tiny preset applied, committed."""
    copy_project(dest)
    for stale in ("dvc.lock", "metrics", "plots/report", "plots/train", "plots/eval", "plots/benchmark"):
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


def _load_s3_server_module():
    """scripts/s3_server.py, imported by path (scripts/ is not a package; the file is stdlib-only)."""
    spec = importlib.util.spec_from_file_location("lmask_s3_server", ROOT / "scripts" / "s3_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building the class
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS ``weed mini``) on 127.0.0.1, free ports, throwaway data and keys; one per session.

    Tests keep apart by using their own path in the bucket. Yields scripts/s3_server.py's S3Server.
    """
    server = _load_s3_server_module().start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()
