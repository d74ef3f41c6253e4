"""Where training runs: device choice, bf16 autocast, and the torchrun (DDP) world.

``Distributed`` reads torchrun's environment and is a no-op for a single process, so the training loop has one code
path. Under torchrun each rank takes its LOCAL_RANK GPU (NCCL) or a share of the CPU cores (gloo).
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
import torch.distributed as dist


def pick_device(name: str = "auto") -> torch.device:
    """cuda > mps > cpu for 'auto'; under torchrun each rank takes its LOCAL_RANK GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 is slow and changes the numbers)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Distributed:
    """World info from torchrun's environment; a no-op for plain `python` and for torchrun with one process.

    NCCL on CUDA (one GPU per rank, cuda:LOCAL_RANK), gloo on CPU. Collectives below are no-ops when disabled, so
    the training loop has a single code path.
    """

    def __init__(self, device: torch.device) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        self.enabled = self.world_size > 1
        self.device = device
        self._owns_group = False
        if not self.enabled:
            return
        if device.type == "mps":
            raise RuntimeError("DDP needs CUDA (NCCL) or CPU (gloo); run mps with nproc: 1")
        if device.type == "cuda":
            # Without this every rank's NCCL barrier/collective defaults to cuda:0.
            torch.cuda.set_device(device)
        else:
            # The stage's thread budget (cpu_threads, pinned in OMP_NUM_THREADS before torch loaded; else the usable
            # cores) is shared by the local ranks, never oversubscribed.
            total = int(os.environ.get("OMP_NUM_THREADS") or _usable_cpus())
            torch.set_num_threads(max(1, total // self.local_world_size))
        if not dist.is_initialized():
            if device.type == "cuda":
                dist.init_process_group(backend="nccl", device_id=device)
            else:
                dist.init_process_group(backend="gloo")
            self._owns_group = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (the input itself when not distributed)."""
        if self.enabled:
            values = values.to(self.device)  # NCCL reduces GPU tensors only
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather(self, obj: object) -> list:
        """Every rank's ``obj``, in rank order (used for per-rank RNG states)."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Tear down the process group we created (avoids torch's exit warning)."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


__all__ = ["Distributed", "autocast", "pick_device"]
