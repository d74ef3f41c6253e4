"""Training checkpoints: resume a killed run to the exact weights of an uninterrupted one; survive a corrupt file.

A run keeps its last two checkpoints (``state.pt`` and ``state.prev.pt``), each written atomically. On resume the
newest readable one whose fingerprint matches wins; an unreadable file (truncated, garbage) is reported by path,
moved aside to ``<name>.corrupt``, and the next one is tried, else training starts from scratch. A checkpoint made
by other code (``code_fingerprint``: lmask and the training stages' sources) is refused the same way, naming the
changed files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmask.device import Distributed
from lmask.io import write_with

NEWEST, PREVIOUS = "state.pt", "state.prev.pt"


@dataclass
class Progress:
    """Where a run stands: what a checkpoint restores besides the model and optimizer."""

    step: int = 0
    rows: list[dict] = field(default_factory=list)  # logged rows so far
    elapsed: float = 0.0  # training seconds so far
    window: dict | None = None  # the open logging window, so the next row averages the same steps as without a stop


ROOT = Path(__file__).resolve().parents[1]
CODE = ("lmask/*.py", "stages/cli.py", "stages/train_*.py")  # what a training run executes, beside its libraries


@functools.cache
def code_fingerprint(root: Path = ROOT) -> dict[str, str]:
    """SHA-256 of each source file a training run executes (relative path -> hash), read once per process: the code
    that runs is the code that was imported. A checkpoint holds these, so a resume after a code change is refused
    (its weights would match neither the old code's run nor the new code's)."""
    files = sorted({p for pattern in CODE for p in root.glob(pattern) if p.is_file()})
    return {p.relative_to(root).as_posix(): file_sha256(p) for p in files}


def changed_code(saved: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """Files whose source differs between a checkpoint's code and this process's (added and removed included)."""
    if saved is None:
        return ["no code hashes recorded"]
    return sorted(f for f in saved.keys() | now.keys() if saved.get(f) != now.get(f))


def save(folder: Path, model, optimizer, progress: Progress, fingerprint: str, world: Distributed) -> None:
    """Rank 0 writes; every rank must call it (it gathers each rank's RNG state)."""
    rng = world.gather(
        {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
    )
    if not world.is_main:
        return
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": progress.__dict__,
        "fingerprint": fingerprint,
        "code": code_fingerprint(),
        "rng": rng,  # one entry per rank
    }
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / NEWEST).is_file():
        (folder / NEWEST).replace(folder / PREVIOUS)
    write_with(folder / NEWEST, lambda tmp: torch.save(state, tmp))


def _read(path: Path, name: str) -> dict | None:
    """The state in ``path``, or None (a corrupt file is moved aside, with a warning naming it)."""
    try:
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves weights/moments to the device.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        aside = path.with_name(path.name + ".corrupt")
        with contextlib.suppress(FileNotFoundError):  # another rank moved it first
            path.replace(aside)
        warnings.warn(f"{name}: checkpoint {path} is unreadable ({type(err).__name__}); moved to {aside}", stacklevel=3)
        return None


def load(folder: Path, model, optimizer, fingerprint: str, name: str, world: Distributed) -> Progress:
    """Restore the newest good checkpoint in ``folder`` matching ``fingerprint``; every rank reads it.

    Ranks must agree on the step: a checkpoint visible to some ranks only (multi-node without a shared filesystem)
    would silently desynchronise the optimizers, so that is an error.
    """
    progress = Progress()
    other_code = None  # the first checkpoint refused for its code: one line, printed if none resumes
    for file in (NEWEST, PREVIOUS):
        path = folder / file
        state = _read(path, name) if path.is_file() else None
        if state is None:
            continue
        if state.get("fingerprint") != fingerprint or "progress" not in state:
            if world.is_main:
                print(f"{name}: ignoring stale checkpoint {path} (params, inputs or format changed)")
            continue
        changed = changed_code(state.get("code"), code_fingerprint())
        if changed:
            other_code = other_code or f"{name}: checkpoint {path} was made by other code ({_listed(changed)} changed)"
            continue
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        progress = Progress(**state["progress"])
        rng = state["rng"][world.rank if len(state["rng"]) == world.world_size else 0]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if world.is_main:
            if other_code:
                print(other_code)
            print(f"{name}: resuming from {path} at step {progress.step}")
        break
    else:
        if other_code and world.is_main:
            print(f"{other_code}; starting from step 0")
    steps = world.gather(progress.step)
    if len(set(steps)) > 1:
        raise RuntimeError(
            f"{name}: ranks found different checkpoints in {folder} (resume steps {steps}); the checkpoint "
            "folder must be on a filesystem shared by all nodes"
        )
    return progress


def fingerprint_parts(*parts: Any) -> str:
    """Hash of everything a checkpoint depends on; a mismatch means the checkpoint is stale."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _listed(files: list[str], most: int = 3) -> str:
    return ", ".join(files[:most]) + (f" and {len(files) - most} more" if len(files) > most else "")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["Progress", "code_fingerprint", "file_sha256", "fingerprint_parts", "load", "save"]
