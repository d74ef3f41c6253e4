"""Same seed, same machine type, same bits: pin what makes CPU training results differ between runs.

Measured here (tests/test_train.py keeps it true): with the same thread count, CPU training is bit-identical with or
without a competing load. Two things change the bits: the number of threads that actually run (the CPU LayerNorm
backward splits its row sum by thread; OpenMP with ``OMP_DYNAMIC`` shrinks the team under load) and the instruction
set the kernels target (ATen's dispatch and MKL's GEMM paths differ between AVX2 and AVX-512 hosts). So every torch
stage runs with a fixed thread count and, on x86 hosts with AVX2, AVX2 kernels. Cost on the 2-core CPU: none
measurable (these are the defaults on an AVX2-only host).

The variables are read when the OpenMP/MKL runtimes and torch load, so ``pin_cpu`` must run before torch is
imported (stage entry points call it first); it does not import torch itself. It also sets glibc's allocator to keep
freed memory (``keep_freed_memory``): speed only, no bits depend on it.
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

PINNED = "LMASK_CPU_PINNED"  # set by pin_cpu; lmask.train refuses to train on CPU without it
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _has_avx2() -> bool:
    return platform.machine() in ("x86_64", "AMD64") and " avx2" in _cpuinfo()


def host_cpu() -> dict[str, str]:
    """The CPU model and the instruction-set flags that change kernel choice (bits can differ between hosts that
    differ here even with the pin). Recorded in each run's metrics, not in the model folder: it would give
    bit-identical weights trained on two hosts different DVC hashes."""
    info = _cpuinfo()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "isa": " ".join(f for f in ISA_FLAGS if f in flags),
    }


def require_pinned(what: str) -> None:
    """Refuse CPU work whose bits depend on the pin when this process was started without it (a script or a
    torchrun worker that skipped ``pin_cpu``: its kernels would follow the host's widest instruction set)."""
    if PINNED not in os.environ:
        raise RuntimeError(
            f"{what}: CPU numerics are not pinned; call lmask.determinism.pin_cpu(params.cpu_threads) before "
            "importing torch (the stage entry points do), so that results do not depend on the host"
        )


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve every allocation from its heap and keep what is freed there (``mallopt``:
    ``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 1 GiB); returns whether it applied (glibc only; elsewhere nothing changes).

    Why: a training step allocates and frees tensors of 4-32 MB (the logits, the MLP's activations). By default glibc
    maps large blocks fresh and unmaps them on free, so every step faults their pages in again. The default
    baseline's own loop ran 4364 tokens/s without this and 4807 with it (2-core CPU, 2026-12-08; same bits).
    ``benchmark_train`` hid it: its reference step, interleaved in one process, left freed memory that the pipeline's
    step reused. A process's resident memory stays at its peak instead of shrinking after it.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def pin_cpu(threads: int | None) -> dict[str, str]:
    """Set the environment for reproducible CPU numerics; returns what was set (recorded with each model).

    ``threads`` None leaves the thread count to torch (results then depend on the machine's core count).
    """
    if "torch" in __import__("sys").modules:
        raise RuntimeError("pin_cpu must run before torch is imported (the runtimes read these variables at load)")
    env = {"OMP_DYNAMIC": "FALSE", "MKL_DYNAMIC": "FALSE"}
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if _has_avx2():
        env.update(ATEN_CPU_CAPABILITY="avx2", MKL_CBWR="AVX2")
    os.environ.update(env)
    os.environ[PINNED] = str(threads)  # inherited by torchrun workers and other children, as the variables above are
    keep_freed_memory()  # speed only: not in the returned (recorded) settings
    return env


__all__ = ["host_cpu", "keep_freed_memory", "pin_cpu", "require_pinned"]
