"""Layer-wise windowed causal attention that skips the masked work: the dispatch.

Every attention call in lmask goes through ``windowed_attention``. Shapes follow transformers'
AttentionInterface: query [B, H, Tq, D], key/value [B, H, Tk, D]; queries are the last Tq keys. Returns
[B, Tq, H, D].

Window semantics: query i sees key j iff j <= i and (i - j < window or j < sinks). ``window=None`` is full causal.

Paths (``select_path`` picks one; ``backend`` forces one where it is correct), one module each:

- ``causal`` (``lmask.dense``): full layers, SDPA with ``is_causal`` (flash on GPU), where ``tiled`` does not run.
- ``tiled`` (``lmask.band.tiled_attention``): full layers and windows above the band kernel's on the CPU (fp32, no
  sinks): the same C++ file's GEMM-tiled kernel, forward and backward. Against causal SDPA it skips the extra pairs
  of SDPA's fixed 512-key blocks: 1.3-1.4x as fast fwd+bwd at T = 1024, 4 heads x 32.
- ``band`` (``lmask.band``): small windows on the CPU (w <= ``lmask.band.BAND_MAX_WINDOW``, the measured
  crossover), forward and backward: a fused C++ kernel that computes exactly the visible pairs. ``auto`` picks it
  where it built; elsewhere those windows take ``blocked``.
- ``blocked`` (``lmask.blocked``): windowed prefill without an explicit mask. Queries are cut into blocks of ``b``;
  each block attends to a slab of its own and the preceding keys the window reaches (plus sink keys), one batched
  attention call over all blocks. Work is O(T·(w + b)) instead of O(T²), forward and backward. On CPU the slabs
  are overlapping strided views of the keys fed to SDPA's flash kernel and its backward directly; elsewhere they
  are unfold copies under autograd.
- ``flex`` (``lmask.flex``): compiled FlexAttention with a cached sliding-window BlockMask (``auto`` picks it on
  CUDA; it runs on CPU too when forced). A failed flex call falls back to ``blocked`` and is counted as
  ``flex_fallback``.
- ``masked`` (``lmask.dense``): the dense reference with an explicit mask; used for padding masks, KV-cache decoding
  (Tq < Tk) and attention dropout, where correctness matters more than the O(Tq·Tk) cost.

KV caches from ``lmask.kv_cache`` prune a windowed layer to its first ``sinks`` keys plus a contiguous recent
suffix. In that "compressed" key index the window rule above still holds exactly (sink keys keep their positions,
suffix distances are true distances), so no path needs the absolute positions; only an explicit padding mask,
built by transformers for the absolute length, has its columns mapped (see ``lmask.dense._mask_columns``).
"""

from __future__ import annotations

import torch

from lmask.backends import ATTENTION_BACKENDS, PATH_COUNTS
from lmask.band import BAND_MAX_WINDOW, band_attention, band_available, tiled_attention, tiled_available
from lmask.blocked import blocked_attention
from lmask.dense import causal_attention, masked_attention
from lmask.flex import flex_available, flex_windowed_attention

# What ``backend`` accepts: the paths params.yaml's attention.backend may force, and the C++ kernels ``band`` and
# ``tiled``, which the kernel benchmark forces to time them against ``blocked`` (lmask.benchmark.KERNELS).
BACKENDS = tuple(sorted({*ATTENTION_BACKENDS, "band", "tiled"}))


def band_by_default(window: int, device: torch.device) -> bool:
    """``auto``'s rule for the band kernel (where it built): a window up to the measured crossover, on the CPU."""
    return window <= BAND_MAX_WINDOW and device.type == "cpu"


def select_path(
    query: torch.Tensor,
    key: torch.Tensor,
    window: int | None,
    attention_mask: torch.Tensor | None = None,
    dropout: float = 0.0,
    backend: str = "auto",
    sinks: int = 0,
) -> str:
    """Which path ``windowed_attention`` takes: causal | tiled | band | blocked | flex | masked. The one dispatch
    rule."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    q_len, k_len = query.shape[-2], key.shape[-2]
    plain = attention_mask is None and q_len == k_len
    if backend == "masked":
        return "masked"
    full = window is None or window >= k_len
    if full and plain:
        # Full attention: the tiled kernel on the CPU (fp32, where it built); SDPA elsewhere and with dropout
        if backend in ("auto", "tiled") and dropout == 0 and tiled_available(query):
            return "tiled"
        return "causal"
    if not plain or dropout > 0 or full:
        return "masked"  # padding, cache decoding, dropout: the explicit mask is the correct path
    if backend == "tiled":
        if sinks or not tiled_available(query):
            raise ValueError("backend 'tiled' needs fp32 CPU tensors, no sinks and the kernel built with AVX2")
        return "tiled"
    if backend == "flex" or (backend == "auto" and flex_available(query.device)):
        return "flex"
    if backend == "band" or (backend == "auto" and band_by_default(window, query.device) and band_available()):
        # Small windows on the CPU: the band kernel beat the blocked one below the measured crossover, forward and
        # fwd+bwd (metrics/benchmark/kernel.json); where it did not build, blocked is exact too.
        return "band"
    if backend == "auto" and sinks == 0 and tiled_available(query):
        return "tiled"  # long windows on the CPU: GEMM tiles beat the blocked path from w = 256 (lmask.band)
    return "blocked"


def windowed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window: int | None,
    sinks: int = 0,
    attention_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal attention with an optional sliding window and sink tokens; returns [B, Tq, H, D]."""
    path = select_path(query, key, window, attention_mask, dropout, backend, sinks)
    if path != "flex":  # flex counts itself: it knows whether it fell back
        PATH_COUNTS[path] += 1
    if path == "causal":
        return causal_attention(query, key, value, scaling, dropout)
    if path == "tiled":
        return tiled_attention(query, key, value, key.shape[-2] if window is None else window, scaling)
    if path == "band":
        return band_attention(query, key, value, window, sinks, scaling)
    if path == "blocked":
        return blocked_attention(query, key, value, window, sinks, scaling)
    if path == "flex":
        return flex_windowed_attention(query, key, value, window, sinks, scaling)
    return masked_attention(query, key, value, window, sinks, attention_mask, scaling, dropout)


__all__ = ["BACKENDS", "PATH_COUNTS", "band_by_default", "select_path", "windowed_attention"]
