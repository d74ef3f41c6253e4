"""Atomic outputs: every file and folder lmask writes appears complete or not at all.

A killed or failing stage leaves the previous output (or nothing) in place, never half a file, and no temp folder
behind. Everything is written beside its destination and renamed into place (a rename is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A bad or missing input file; the message names the file (and the field, where one applies)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_with(path: Path | str, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temp path beside ``path``, then rename it into place (removed if ``write`` fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes files private (0600); outputs get the usual permissions
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path | str, obj: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def read_json(path: Path | str, what: str = "") -> Any:
    """JSON from ``path``; a missing or corrupt file raises ``DataError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found{f' ({what})' if what else ''}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield a fresh temp folder beside ``final``; on success it replaces ``final``, on any error it is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700)
        yield tmp
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["DataError", "atomic_dir", "read_json", "write_json", "write_text", "write_with"]
