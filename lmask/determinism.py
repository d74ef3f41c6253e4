"""Same seed, same machine type, same bits: pin what makes CPU training results differ between runs.

Measured here (tests/test_train.py keeps it true): with the same thread count, CPU training is bit-identical with or
without a competing load. Two things change the bits: the number of threads that actually run (the CPU LayerNorm
backward splits its row sum by thread; OpenMP with ``OMP_DYNAMIC`` shrinks the team under load) and the instruction
set the kernels target (ATen's dispatch and MKL's GEMM paths differ between AVX2 and AVX-512 hosts). So every torch
stage runs with a fixed thread count and, on x86 hosts with AVX2, AVX2 kernels. Cost on the 2-core CPU: none
measurable (these are the defaults on an AVX2-only host).

The variables are read when the OpenMP/MKL runtimes and torch load, so ``pin_cpu`` must run before torch is
imported (stage entry points call it first); it does not import torch itself.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _has_avx2() -> bool:
    try:
        return platform.machine() in ("x86_64", "AMD64") and " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


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
    return env


__all__ = ["pin_cpu"]
