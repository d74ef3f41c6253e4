"""Band attention on the CPU: fused C++ kernels that compute the window's pairs (small windows: exactly; long windows
and full causal attention: in GEMM tiles).

Same window rule as ``lmask.attention`` (query i sees key j iff j <= i and (i - j < window or j < sinks)), for
Tq == Tk and no padding mask. Returns [B, T, H, D].

Why a kernel of its own. At w = 16 every general path computes several times the pairs the window needs (SDPA's
flash kernel on query blocks of 32 or more; batched GEMMs on tiles of 4..16 queries) and pays one pass over memory
per op. ``csrc/band.cpp`` takes each query's visible keys directly: scores 8 keys at a time in AVX2 registers, a
vectorized softmax over a per-thread buffer of w floats, the weighted sum of value rows, the output written once
in the [B, T, H, D] layout the model wants. The backward recomputes the probabilities from the saved log-sum-exp
(flash-style) and accumulates dK and dV in key order. The work is O(T·w·D), the memory traffic one read of each
input and one write of each output. fp32 with D a multiple of 8 takes the AVX2 code; fp64 (the gradient tests),
other head sizes and CPUs without AVX2 take a plain C++ loop with the same rule.

Long windows and full layers (``tiled_attention``, fp32 on an AVX2 build, no sinks): the same file's tiled kernel,
flash attention's structure on BLAS tiles of 64 queries against key blocks of up to 256, each query tile's keys cut
to what its window reaches. At the experiment's dims (T = 1024, 4 heads x 32) a full layer's forward + backward ran
16.4-17.5 ms against causal SDPA's 22.1-23.3 ms in the same process: SDPA's CPU kernel walks fixed 512-key blocks and so
computes 1.5x the causal pairs; here only the diagonal tile is masked.

Building. ``torch.utils.cpp_extension.load`` compiles the source once per machine (about 20 s; ninja and a C++
compiler with OpenMP) and caches the library under ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``),
keyed by the source and flags. Where it cannot build, ``band_available`` says why once and the dispatch takes the
blocked path instead; forcing ``backend="band"`` then raises.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from lmask.io import write_with

SOURCE = Path(__file__).with_name("csrc") / "band.cpp"

# Windows up to BAND_MAX_WINDOW take this path on the CPU (``lmask.attention.select_path``); larger ones the tiled
# kernel (the blocked path where it cannot run). Measured crossovers (metrics/benchmark/kernel.json, "crossover",
# T = 1024 and 3072, 12 heads x 64): against tiled, band wins up to w = 64 at T = 1024 and up to 128 at 3072, forward
# and forward + backward, and tiled wins from 256 (at the experiment's 4 heads x 32, T = 1024, the two tie at 128:
# 6.0 against 6.1 ms fwd+bwd); against blocked, band is faster up to w = 256 forward + backward and the two tie at
# 128 forward. So band takes w <= 128.
BAND_MAX_WINDOW = 128


def compile_flags() -> list[str]:
    """The kernel's C++ flags on this host: one build for AVX2 and AVX-512 hosts alike (the kernel is written for
    AVX2), so they compute the same floats. ``tools.ab_band`` builds its candidates with the same."""
    capability = torch.backends.cpu.get_cpu_capability()  # AVX2 / AVX512 on x86 hosts that have them
    return ["-O3", "-fopenmp", *(["-mavx2", "-mfma"] if capability in ("AVX2", "AVX512") else [])]


@functools.cache
def _build() -> Any:
    """Compile and load the kernel; returns ``torch.ops.lmask``.

    The build directory is named by a hash of the source, the flags and the torch version, and compiles a copy of
    the source kept there: torch's own cache keys on the source *path*, so every checkout (a test's temporary copy
    of the repo, a DVC experiment's workspace) would otherwise rebuild it.
    """
    from torch.utils.cpp_extension import load

    flags = compile_flags()
    text = SOURCE.read_bytes()
    digest = hashlib.sha256(b"\0".join([text, " ".join(flags).encode(), torch.__version__.encode()])).hexdigest()
    name = f"lmask_band_{digest[:16]}"
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    build = root / "lmask" / name
    build.mkdir(parents=True, exist_ok=True)
    copy = build / SOURCE.name
    if not copy.is_file() or copy.read_bytes() != text:  # rewriting an equal copy would make ninja rebuild
        write_with(copy, lambda tmp: tmp.write_bytes(text))
    load(
        name=name,
        sources=[str(copy)],
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        build_directory=str(build),
        is_python_module=False,
    )
    return torch.ops.lmask


@functools.cache
def band_available() -> bool:
    """Whether the kernel builds and loads here; the first failure is warned about once, with its reason."""
    try:
        _build()
    except Exception as err:  # no compiler, no ninja, a failed build: the blocked path is still exact
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        message = (
            f"lmask.band: the CPU band kernel did not build ({reason}); windows take the blocked path and full layers "
            "causal SDPA"
        )
        warnings.warn(message, stacklevel=2)
        return False
    return True


class _KernelAttention(torch.autograd.Function):
    """One of the C++ kernels as an autograd function: ``kernel`` names the pair ``<kernel>_forward`` /
    ``<kernel>_backward`` in ``torch.ops.lmask`` (band, tiled); ``config`` is the kernel's arguments after q, k, v."""

    @staticmethod
    def forward(ctx: Any, kernel: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *config: Any) -> torch.Tensor:
        out, lse = getattr(_build(), f"{kernel}_forward")(q, k, v, *config)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.kernel, ctx.config = kernel, config
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = getattr(_build(), f"{ctx.kernel}_backward")(grad_out, q, k, v, out, lse, *ctx.config)
        # [B, T, H, D] buffers seen as the [B, H, T, D] inputs: no copy
        return None, dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), *(None for _ in ctx.config)


def _kernel_inputs(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """q, k, v with a contiguous head dimension (the kernels' one layout demand) and the softmax scale."""
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (query, key, value))
    return q, k, v, scale


@functools.cache
def _tiled_built() -> bool:
    """The kernel built with AVX2 (the tiled kernel is written for it) and found torch's BLAS."""
    return "-mavx2" in compile_flags() and band_available() and _build().tiled_supported()


def tiled_available(query: torch.Tensor) -> bool:
    """Whether ``tiled_attention`` runs for this query: fp32 on the CPU, where the kernel built with AVX2."""
    return query.device.type == "cpu" and query.dtype == torch.float32 and _tiled_built()


def tiled_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, window: int, scaling: float | None = None
) -> torch.Tensor:
    """Sliding-window causal attention for Tq == Tk, no sinks, on GEMM tiles (``window`` >= T: full causal); returns
    [B, T, H, D]. query/key/value: [B, H, T, D] fp32 on the CPU, any strides."""
    if not tiled_available(query):
        raise RuntimeError("tiled_attention: needs fp32 CPU tensors and the kernel built with AVX2")
    q, k, v, scale = _kernel_inputs(query, key, value, scaling)
    with torch.autocast("cpu", enabled=False):
        return _KernelAttention.apply("tiled", q, k, v, min(window, q.shape[-2]), scale)


def band_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window: int,
    sinks: int = 0,
    scaling: float | None = None,
) -> torch.Tensor:
    """Sliding-window(+sinks) causal attention for Tq == Tk on the CPU; returns [B, T, H, D].

    query/key/value: [B, H, T, D], any strides (the head dimension is made contiguous if it is not).
    """
    if query.device.type != "cpu":
        raise ValueError(f"band_attention runs on the CPU only, got {query.device}")
    if not band_available():
        raise RuntimeError("band_attention: the CPU band kernel did not build here (see the warning above)")
    q, k, v, scale = _kernel_inputs(query, key, value, scaling)
    args = (window, min(sinks, q.shape[-2]), scale)
    if q.dtype in (torch.bfloat16, torch.float16):  # scores and softmax in fp32, as SDPA's kernels do
        return _KernelAttention.apply("band", q.float(), k.float(), v.float(), *args).to(query.dtype)
    with torch.autocast("cpu", enabled=False):
        return _KernelAttention.apply("band", q, k, v, *args)


__all__ = ["BAND_MAX_WINDOW", "SOURCE", "band_attention", "band_available", "tiled_attention", "tiled_available"]
