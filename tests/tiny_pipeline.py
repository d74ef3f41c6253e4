"""The tiny pipeline the slow tests share: a copy of the project on presets/tiny.yaml, run once with `dvc repro`.

    python -m tests.tiny_pipeline DEST      # build DEST, then write DEST.done (or DEST.failed with the output)

conftest.py starts this in the background as soon as a collected test needs it, so the build (one core: the tiny
stages run single-threaded) overlaps the unit tests; every pytest worker then waits for the same marker file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc, python, torchrun
# Outputs a fresh copy must not inherit from the working tree: the tiny run writes its own.
STALE = ("dvc.lock", "metrics", "plots/report", "plots/train", "plots/eval", "plots/benchmark")


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


def copy_project(dest: Path) -> Path:
    """Copy the project's tracked and untracked-but-not-ignored files (not data, models or caches)."""
    from tools.replicate import copy_project as copy

    return copy(ROOT, dest)


def make_tiny_repo(dest: Path) -> Path:
    """A fresh git repo holding the project with the tiny preset applied, committed."""
    copy_project(dest)
    for stale in STALE:
        path = dest / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    run([sys.executable, "-m", "tools.preset", "tiny"], dest)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "tiny"], dest)
    return dest


def markers(dest: Path) -> tuple[Path, Path]:
    """(done, failed): the files the build leaves beside ``dest`` when it ends."""
    return dest.with_name(dest.name + ".done"), dest.with_name(dest.name + ".failed")


def build(dest: Path) -> None:
    """Make the tiny repo at ``dest``, run the whole pipeline and commit its results; mark the end either way."""
    done, failed = markers(dest)
    try:
        make_tiny_repo(dest)
        run(["dvc", "repro"], dest, timeout=1800)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "tiny pipeline run"], dest)
    except BaseException as err:
        failed.write_text(f"{type(err).__name__}: {err}\n")
        raise
    done.touch()


if __name__ == "__main__":
    build(Path(sys.argv[1]))
