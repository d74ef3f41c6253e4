"""Training checkpoints: resume a killed run to the exact weights of an uninterrupted one; survive a corrupt file.

A run keeps its last two checkpoints (``state.pt`` and ``state.prev.pt``), each written atomically. On resume the
newest readable one whose fingerprint matches wins; an unreadable file (truncated, garbage) is reported by path,
moved aside to ``<name>.corrupt``, and the next one is tried, else training starts from scratch.
"""

from __future__ import annotations

import contextlib
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
    for file in (NEWEST, PREVIOUS):
        path = folder / file
        state = _read(path, name) if path.is_file() else None
        if state is None:
            continue
        if state.get("fingerprint") != fingerprint or "progress" not in state:
            if world.is_main:
                print(f"{name}: ignoring stale checkpoint {path} (params, inputs or format changed)")
            continue
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        progress = Progress(**state["progress"])
        rng = state["rng"][world.rank if len(state["rng"]) == world.world_size else 0]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if world.is_main:
            print(f"{name}: resuming from {path} at step {progress.step}")
        break
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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["Progress", "file_sha256", "fingerprint_parts", "load", "save"]
