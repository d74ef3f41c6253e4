"""Faults a user meets, tried on the tiny pipeline: each names its field or file in one line, and nothing is lost.

Bad params fail in the `validate` stage, which every other stage depends on, so DVC removes no result before the
check runs. Data errors name the file (and the params field). Remote corruption is covered in test_remote.py and a
truncated checkpoint in test_train.py.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.conftest import run, stages_ran

pytestmark = pytest.mark.slow

KEPT = ("metrics", "plots", "models", "eval", "data")


def snapshot(repo: Path) -> dict[str, str]:
    """SHA-256 of every result file (what a failed run must leave alone)."""
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in KEPT
        for p in sorted((repo / root).rglob("*"))
        if p.is_file()
    }


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


BAD_PARAMS = [
    ("typo", "    end_window: 16\n", "    end_windw: 16\n", "schedules.half.end_windw"),
    ("window 0", "windows: [16, 32,", "windows: [0, 32,", r"schedules.increasing.windows\[0\]"),
    ("window -4", "windows: [16, 32,", "windows: [-4, 32,", r"schedules.increasing.windows\[0\]"),
    ("string window", "windows: [16, 32,", "windows: [wide, 32,", r"schedules.increasing.windows\[0\]"),
    ("13 windows", "windows: [16, 32,", "windows: [16, 16, 32,", "schedules.increasing.windows has 13 entries"),
    ("batch 0", "  batch_size: 4\n", "  batch_size: 0\n", "train.batch_size"),
    (
        "sinks > context",
        "    end_window: 16\n",
        "    end_window: 16\n    sinks: 1000\n",
        r"schedules.half.sinks \(1000\)",
    ),
    ("probe span 0", "  span: 4\n", "  span: 0\n", "copy.span"),
    ("no new tokens", "  new_tokens: 8\n", "  new_tokens: 0\n", "generation.new_tokens"),
]


@pytest.mark.parametrize("label, old, new, field", BAD_PARAMS, ids=[b[0] for b in BAD_PARAMS])
def test_bad_params_change_nothing_on_disk(tiny_repo, label, old, new, field):
    params = tiny_repo / "params.yaml"
    original = params.read_text()
    before = snapshot(tiny_repo)
    edit(params, old, new)
    proc = run(["dvc", "repro"], tiny_repo, check=False)
    assert proc.returncode != 0
    assert re.search(field, one_error_line(proc.stderr + proc.stdout)), proc.stderr
    assert "Running stage 'validate'" in proc.stdout and stages_ran(proc.stdout) == ["validate"]
    assert snapshot(tiny_repo) == before, "a rejected params.yaml changed results on disk"
    params.write_text(original)
    out = run(["dvc", "repro"], tiny_repo).stdout
    # Only the cheap check reruns (or DVC's run-cache restores its marker); every result is still valid.
    assert stages_ran(out) in ([], ["validate"]), out
    assert snapshot(tiny_repo) == before


def test_empty_schedules_change_nothing_on_disk(tiny_repo):
    params = tiny_repo / "params.yaml"
    text = params.read_text()
    before = snapshot(tiny_repo)
    params.write_text(text[: text.index("\nschedules:")] + "\nschedules: {}\n")
    proc = run(["dvc", "repro"], tiny_repo, check=False)
    assert proc.returncode != 0
    assert "schedules must be a non-empty mapping" in one_error_line(proc.stderr + proc.stdout)
    assert snapshot(tiny_repo) == before


def use_text_corpus(repo: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (repo / "corpus" / name).write_bytes(content)
    edit(repo / "params.yaml", "  source: embedded", "  source: text")
    edit(
        repo / "params.yaml",
        "  text_files: {}",
        "  text_files: {" + ", ".join(f"{n.split('.')[0]}: {n}" for n in files) + "}",
    )


ARTICLE = " = {t} = \n" + "The quick brown fox jumps over the lazy dog near the river bank every morning. " * 40 + "\n"


def corpus(n: int) -> bytes:
    return "".join(ARTICLE.format(t=f"Article {i}") for i in range(n)).encode()


def test_invalid_utf8_names_the_file_and_field(tiny_repo):
    use_text_corpus(tiny_repo, {"train.txt": corpus(20) + b"\xff\xfe broken\n"})
    proc = run(["dvc", "repro", "download"], tiny_repo, check=False)
    assert proc.returncode != 0
    line = one_error_line(proc.stderr + proc.stdout)
    assert "corpus/train.txt: not valid UTF-8 at byte" in line and "data.text_files.train" in line
    assert not list((tiny_repo / "data").glob(".raw.*")), "a partial folder was left behind"


def test_changed_corpus_file_reruns_download(tiny_repo):
    use_text_corpus(tiny_repo, {"train.txt": corpus(20)})
    run(["dvc", "repro", "download"], tiny_repo)
    assert "download" not in run(["dvc", "status", "download"], tiny_repo).stdout
    (tiny_repo / "corpus" / "train.txt").write_bytes(corpus(21))  # same path, new content
    status = run(["dvc", "status", "download"], tiny_repo).stdout
    assert "download" in status and "modified:" in status and "corpus" in status, status
    out = run(["dvc", "repro", "tokenize"], tiny_repo).stdout
    assert {"download", "tokenize"} <= set(stages_ran(out))


def test_corpus_too_small_for_one_block_leaves_no_partial_folders(tiny_repo):
    use_text_corpus(tiny_repo, {"train.txt": (" = A = \nshort.\n = B = \nshort.\n = C = \nshort.\n" * 2).encode()})
    proc = run(["dvc", "repro", "tokenize"], tiny_repo, check=False)
    assert proc.returncode != 0
    line = one_error_line(proc.stderr + proc.stdout)
    assert "fewer than one block of data.context_length=64" in line and "data/raw/" in line, line
    leftovers = [p.name for p in (tiny_repo / "data").iterdir() if p.name.startswith(".") and p.name != ".gitignore"]
    assert not leftovers, leftovers
