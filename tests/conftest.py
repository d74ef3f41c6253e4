"""Shared fixtures: a tiny, fully-run copy of the pipeline that tests can clone and change, and an S3 server.

``tiny_pipeline`` is the tiny preset's whole pipeline (tests/tiny_pipeline.py), built once per test run in the
background while the unit tests run, and shared by every xdist worker. ``tiny_repo`` gives each test its own copy of
that finished repo (git history and DVC cache included).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmask.determinism import pin_cpu
from tests.s3_server import start_s3_server
from tests.tiny_pipeline import copy_project, env, make_tiny_repo, markers, run

__all__ = ["copy_project", "env", "make_tiny_repo", "run", "stages_ran"]

# Tests train in-process, and lmask.train refuses to train on an unpinned CPU: pin this process as the stages pin
# theirs, before any test module imports torch. Under xdist, one thread per worker: two workers (and the background
# build) on two cores, instead of OpenMP teams fighting for them.
pin_cpu(1 if os.environ.get("PYTEST_XDIST_WORKER") else None)

ROOT = Path(__file__).resolve().parents[1]
# The pipeline-backed tests: they run last, so the unit tests overlap the tiny pipeline's background build.
PIPELINE_FIXTURES = {"tiny_pipeline", "tiny_repo"}
NEEDS_TINY = pytest.StashKey[bool]()  # set at collection: does any selected test use them?


def stages_ran(dvc_output: str) -> list[str]:
    """Stage names DVC 3.67 reports as run ("Running stage 'NAME':"), in order."""
    return re.findall(r"Running stage '([^']+)':", dvc_output)


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: only tests that will run count
def pytest_collection_modifyitems(config, items) -> None:
    uses = [not PIPELINE_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())) for item in items]
    items[:] = [item for _, item in sorted(zip(uses, items), key=lambda pair: pair[0])]  # stable: False first
    config.stash[NEEDS_TINY] = any(uses)


def _tiny_dir(factory: pytest.TempPathFactory) -> Path:
    """Where the tiny pipeline lives: one folder shared by every xdist worker of this run (their common parent)."""
    base = factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tiny" / "repo"


@pytest.fixture(scope="session", autouse=True)
def _tiny_pipeline_build(request, tmp_path_factory) -> None:
    """Start the tiny pipeline's build in the background at the first test, once per run (the first worker wins)."""
    if not request.config.stash.get(NEEDS_TINY, False):
        return
    dest = _tiny_dir(tmp_path_factory)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # The build is the suite's critical path (one core, and every pipeline test waits for it): xdist workers, and
    # what they start, yield the CPU to it. They lower their priority after the build starts, so it keeps priority 0.
    yield_cpu = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    try:
        os.close(os.open(dest.parent / "started", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        if yield_cpu:
            os.nice(10)
        return  # another worker started it
    with (dest.parent / "build.log").open("w") as log:  # the child keeps its own handle
        subprocess.Popen(
            [sys.executable, "-m", "tests.tiny_pipeline", str(dest)],
            cwd=ROOT,
            env=env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if yield_cpu:
        os.nice(10)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """The tiny preset's whole pipeline, run once per test run (tests/tiny_pipeline.py); treat it as read-only."""
    dest = _tiny_dir(tmp_path_factory)
    done, failed = markers(dest)
    deadline = time.monotonic() + 1800
    while not done.exists():
        if failed.exists():
            log = (dest.parent / "build.log").read_text()
            pytest.fail(f"the tiny pipeline failed to build: {failed.read_text()}{log[-4000:]}", pytrace=False)
        assert time.monotonic() < deadline, "the tiny pipeline did not finish in 30 min"
        time.sleep(1)
    return dest


@pytest.fixture
def tiny_repo(tiny_pipeline, tmp_path) -> Path:
    """A private copy of the finished tiny pipeline (git history and DVC cache included) that a test may change."""
    dest = tmp_path / "repo"
    # Not .dvc/tmp: DVC's locks and queue state belong to the original (a fresh clone has none either).
    skip = tiny_pipeline / ".dvc"
    shutil.copytree(tiny_pipeline, dest, symlinks=True, ignore=lambda d, names: {"tmp"} if Path(d) == skip else set())
    return dest


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS ``weed mini``) on 127.0.0.1, free ports, throwaway data and keys; one per session.

    Tests keep apart by using their own path in the bucket. Yields tests/s3_server.py's S3Server.
    """
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()
