"""The flex path: compiled FlexAttention with a cached sliding-window BlockMask, the fast path on CUDA (compiled on
CPU too, for tests and comparison). A failed flex call falls back to ``lmask.blocked`` and is counted as
``flex_fallback`` in ``lmask.backends.PATH_COUNTS``. Window rule and shapes as in ``lmask.attention``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch

from lmask.backends import PATH_COUNTS
from lmask.blocked import blocked_attention
from lmask.schedule import visible


def flex_mask_mod(window: int | torch.Tensor, sinks: int | torch.Tensor = 0) -> Any:
    """FlexAttention mask_mod for the window rule (also usable with ``create_mask`` on CPU, for tests).

    Pass window/sinks as 0-d tensors for the compiled kernel: ints would be baked into the graph and every new
    window would recompile (and past dynamo's cache limit fall back to slow eager flex).
    """

    def mask_mod(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return visible(q_idx, kv_idx, window, sinks)

    return mask_mod


@functools.cache
def _flex_kernel() -> Any:
    """Compiled flex_attention, built once per process; None when this torch has no FlexAttention."""
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError:
        return None
    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=64)
def _flex_block_mask(seq_len: int, window: int, sinks: int, device: torch.device) -> Any:
    """Sliding-window BlockMask per (T, window, sinks, device): built once, reused by every layer and step."""
    from torch.nn.attention.flex_attention import create_block_mask

    mask_mod = flex_mask_mod(torch.tensor(window, device=device), torch.tensor(sinks, device=device))
    return create_block_mask(mask_mod, None, None, seq_len, seq_len, device=device)


_FLEX_BROKEN: list[str] = []  # set once a flex call fails, so later calls go straight to the blocked path


def flex_supported() -> bool:
    """This torch has FlexAttention and no flex call has failed in this process."""
    return not _FLEX_BROKEN and _flex_kernel() is not None


def flex_available(device: torch.device) -> bool:
    """``backend: auto`` uses FlexAttention on CUDA only (on CPU the blocked path is faster and has a backward)."""
    return device.type == "cuda" and flex_supported()


def flex_windowed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window: int,
    sinks: int = 0,
    scaling: float | None = None,
) -> torch.Tensor:
    """Compiled FlexAttention with a cached sliding-window BlockMask (any device); on failure, ``blocked_attention``."""
    if flex_supported():
        try:
            block_mask = _flex_block_mask(query.shape[-2], window, sinks, query.device)
            out = _flex_kernel()(query, key, value, block_mask=block_mask, scale=scaling)
            PATH_COUNTS["flex"] += 1
            return out.transpose(1, 2)
        except Exception as err:  # compile or kernel errors: keep training on the blocked path, and say so
            _FLEX_BROKEN.append(repr(err))
            warnings.warn(f"FlexAttention failed ({err!r}); using blocked attention", stacklevel=2)
    PATH_COUNTS["flex_fallback"] += 1
    return blocked_attention(query, key, value, window, sinks, scaling)


__all__ = ["flex_available", "flex_mask_mod", "flex_supported", "flex_windowed_attention"]
