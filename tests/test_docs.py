"""Every command README.md and docs/ show runs as written: each is parsed by the program it names.

Commands come from ```bash blocks and from inline code spans. `python -m tools.*` and `python -m lmask.params` answer
`--help`; `python -m stages.*` parse their exact arguments (stages/cli.py's parse-only switch) and exit before work;
`dvc ...` lines are parsed by DVC's own argument parser, in-process. Install lines and the test command are skipped
(CI runs them). Applying a preset and undoing it is tried on a copy in tests/test_faults.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = ("python3 -m venv", "pip ", "python -m pytest", "python -m tests.")


def _split(text: str) -> list[str]:
    return [part.strip() for chunk in text.split(";") for part in chunk.split("&&")]


def _commands(text: str) -> dict[str, bool]:
    """{command: exact} from ```bash blocks (exact: run as written, continuation lines joined) and `python -m` /
    `dvc` code spans in prose (not exact: they may name a subcommand without its arguments)."""
    found = {}
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found |= dict.fromkeys(_split(line), True)
    for span in re.findall(r"`((?:python -m|dvc) [^`]+)`", text):
        for cmd in _split(span):
            found.setdefault(cmd, False)
    out = {}
    for cmd, exact in found.items():
        try:
            words = shlex.split(cmd, comments=True)
        except ValueError:
            continue  # an unbalanced quote in prose: not a command
        if words and words[0] in ("python", "dvc") and not cmd.startswith(SKIP) and "<" not in cmd:
            out[shlex.join(words)] = out.get(shlex.join(words), False) or exact
    return out


COMMANDS: dict[str, bool] = {}
for _doc in DOCS:
    for _cmd, _exact in _commands(_doc.read_text()).items():
        COMMANDS[_cmd] = COMMANDS.get(_cmd, False) or _exact


def test_the_docs_show_commands():
    assert any(c.startswith("dvc exp run") for c in COMMANDS) and any("tools.preset" in c for c in COMMANDS)


@pytest.mark.parametrize("cmd", sorted(c for c in COMMANDS if c.startswith("dvc ")))
def test_dvc_commands_parse(cmd):
    """Exact commands parse with their arguments; a subcommand named in prose exists (its --help)."""
    from dvc.cli import parse_args

    words = [w for w in shlex.split(cmd)[1:] if not re.fullmatch(r"\[.*\]", w)]  # [optional] arguments shown
    if COMMANDS[cmd]:
        parse_args(words)  # raises on an unknown command or option, or a missing argument
        return
    subcommand = list(itertools.takewhile(lambda w: not w.startswith("-"), words))
    with pytest.raises(SystemExit) as done:
        parse_args([*subcommand[:2], "--help"])
    assert done.value.code == 0


def _module(cmd: str) -> str:
    return shlex.split(cmd)[2]


@pytest.mark.parametrize(
    "module",
    sorted({_module(c) for c in COMMANDS if c.startswith("python -m ") and not c.startswith("python -m stages")}),
)
def test_python_tools_named_in_the_docs_exist_and_answer_help(module):
    assert importlib.util.find_spec(module) is not None, f"{module}: no such module"
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc


@pytest.mark.parametrize("cmd", sorted(c for c in COMMANDS if c.startswith("python -m stages.") and COMMANDS[c]))
def test_stage_commands_in_the_docs_parse_their_arguments(cmd):
    from stages.cli import PARSE_ONLY
    from tests.conftest import env

    proc = subprocess.run(
        [sys.executable, *shlex.split(cmd)[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env({PARSE_ONLY: "1", "PYTHONPATH": str(ROOT)}),
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stderr}"
