"""Atomic outputs: every file and folder lmask writes appears complete or not at all.

A killed or failing stage leaves the previous output (or nothing) in place, never half a file, and no temp folder
behind. Everything is written beside its destination and renamed into place (a rename is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A bad or missing input file; the message names the file (and the field, where one applies)."""


class WriteError(Exception):
    """An output could not be written (disk full, file size limit, ...); names the destination, left untouched."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: could not write it ({reason}); it was left as it was")
        self.path, self.reason = Path(path), reason


# What torch (PytorchStreamWriter) and safetensors say when the disk is full or a file size limit is hit, besides
# a plain OSError: RuntimeError("... unexpected pos ..."), SafetensorError("... FileTooLarge ...").
_WRITE_FAILURES = ("unexpected pos", "failed writing", "file too large", "filetoolarge", "no space left", "storagefull")


def _write_failure(err: BaseException) -> str | None:
    """The reason, in one line, if ``err`` is a failed write; None for any other error (re-raised as it is)."""
    text = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    if "unexpected pos" in text.lower():  # torch's writer, cut short: the file hit a size limit or the disk filled
        return f"file too large for the file size limit (ulimit -f) or the disk is full; torch said: {text}"
    if isinstance(err, OSError) or any(s in str(err).lower() for s in _WRITE_FAILURES):
        return text
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_with(path: Path | str, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temp path beside ``path``, then rename it into place (removed if ``write`` fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes files private (0600); outputs get the usual permissions
        tmp.replace(path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        reason = None if isinstance(err, WriteError) else _write_failure(err)
        if reason is None:
            raise
        raise WriteError(path, reason) from err


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


TMP_MARK = ".lmask-tmp-"  # temp folders and files carry it (.gitignore and .dvcignore skip it)


def sweep_stale(final: Path) -> None:
    """Remove what a killed writer of ``final`` left beside it (its temp folder, the previous version it was
    replacing): otherwise a stray folder inside an output's parent changes that folder's hash for the next stage."""
    for stray in final.parent.glob(f".{final.name}{TMP_MARK}*"):
        if stray.is_dir():
            shutil.rmtree(stray, ignore_errors=True)
        else:
            stray.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield a fresh temp folder beside ``final``; on success it replaces ``final``, on any error it is removed.
    Leftovers of a writer killed mid-way (kill -9 gives no chance to clean up) are swept at the next start."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_MARK}", dir=final.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private (0700)
        yield tmp
        old = final.with_name(f".{final.name}{TMP_MARK}old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except WriteError as err:
        if tmp not in err.path.parents:
            raise
        # A file written inside: name the folder (the temp path means nothing to the user).
        raise WriteError(final, f"{err.path.relative_to(tmp)}: {err.reason}") from err
    except Exception as err:
        reason = _write_failure(err)
        if reason is None:
            raise
        raise WriteError(final, reason) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


REMOTE = re.compile(r"""\[\s*'?remote\s+"([^"]+)"'?\s*\]""")  # ['remote "name"'], as `dvc remote add` writes it


def dvc_config_files(root: Path | str = ".") -> list[Path]:
    """DVC's config files in the order DVC merges them (later wins): system, user (global), repo, local."""
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    system = [Path(d) / "dvc" / "config" for d in os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d]
    return [*system, xdg / "dvc" / "config", Path(root) / ".dvc" / "config", Path(root) / ".dvc" / "config.local"]


def unverified_remotes(root: Path | str = ".") -> list[str]:
    """Names of the DVC remotes in every config DVC reads for ``root`` (merged, as DVC merges them) that
    lack ``verify = true``: without it `dvc pull` checks out a corrupted object and exits 0. Reads the ini files
    directly (importing dvc would cost the validate stage seconds): the system, user, repo and local configs.
    """
    remotes: dict[str, dict[str, str]] = {}
    for path in dvc_config_files(root):
        section = None
        for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
            line = line.strip()
            if line.startswith("["):
                match = REMOTE.fullmatch(line)
                section = remotes.setdefault(match.group(1), {}) if match else None
            elif section is not None and "=" in line and not line.startswith(("#", ";")):
                key, value = line.split("=", 1)
                section[key.strip()] = value.strip().lower()
    return sorted(n for n, options in remotes.items() if options.get("verify") not in ("true", "yes", "1"))


def remote_warnings(root: Path | str = ".") -> list[str]:
    return [
        f"warning: DVC remote '{name}' does not verify downloads (a corrupted object would be checked out with exit "
        f"0): run `dvc remote modify {name} verify true`"
        for name in unverified_remotes(root)
    ]


__all__ = [
    "TMP_MARK",
    "DataError",
    "WriteError",
    "atomic_dir",
    "read_json",
    "remote_warnings",
    "sweep_stale",
    "unverified_remotes",
    "write_json",
    "write_text",
    "write_with",
]
