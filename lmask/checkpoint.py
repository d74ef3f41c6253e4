"""Training checkpoints: resume a killed run to the exact weights of an uninterrupted one; survive a corrupt file.

A run keeps its last two checkpoints (``state.pt`` and ``state.prev.pt``), each written atomically. On resume the
newest readable one made from the same inputs wins: every dep and param its stage declares in dvc.yaml (code, the C++
kernel, data by content), the thread count and the host's instruction set (``lmask.provenance.stage_inputs``). A
checkpoint made from other inputs is refused in one line naming what changed, and training starts from step 0. An
unreadable file (truncated, garbage) is reported by path, moved aside to ``<name>.corrupt``, and the next one is tried.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmask.device import Distributed
from lmask.io import write_with
from lmask.provenance import changed_inputs

NEWEST, PREVIOUS = "state.pt", "state.prev.pt"


@dataclass
class Progress:
    """Where a run stands: what a checkpoint restores besides the model and optimizer."""

    step: int = 0
    rows: list[dict] = field(default_factory=list)  # logged rows so far
    elapsed: float = 0.0  # training seconds so far
    log_window: dict | None = None  # the open logging window: the next row averages the same steps as without a stop
    attention_calls: dict = field(default_factory=dict)  # per attention path, so far (the run's metrics report them)


def save(folder: Path, model, optimizer, progress: Progress, inputs: dict[str, str], world: Distributed) -> None:
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
        "inputs": inputs,
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


def load(folder: Path, model, optimizer, inputs: dict[str, str], name: str, world: Distributed) -> Progress:
    """Restore the newest good checkpoint in ``folder`` matching ``fingerprint``; every rank reads it.

    Ranks must agree on the step: a checkpoint visible to some ranks only (multi-node without a shared filesystem)
    would silently desynchronise the optimizers, so that is an error.
    """
    progress = Progress()
    refused = None  # the first checkpoint refused for its inputs: one line, printed if none resumes
    for file in (NEWEST, PREVIOUS):
        path = folder / file
        state = _read(path, name) if path.is_file() else None
        if state is None:
            continue
        changed = changed_inputs(state.get("inputs"), inputs) if "progress" in state else ["format"]
        if changed:
            refused = refused or f"{name}: checkpoint {path} was made from other inputs ({_listed(changed)} changed)"
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
    else:
        if refused and world.is_main:
            print(f"{refused}; starting from step 0")
    steps = world.gather(progress.step)
    if len(set(steps)) > 1:
        raise RuntimeError(
            f"{name}: ranks found different checkpoints in {folder} (resume steps {steps}); the checkpoint "
            "folder must be on a filesystem shared by all nodes"
        )
    return progress


def _listed(files: list[str], most: int = 3) -> str:
    return ", ".join(files[:most]) + (f" and {len(files) - most} more" if len(files) > most else "")


__all__ = ["Progress", "load", "save"]
