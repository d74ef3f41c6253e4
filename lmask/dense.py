"""The dense attention paths: the masked reference (an explicit window mask over all Tq×Tk scores) and full causal
attention through SDPA's ``is_causal``. Window rule and shapes as in ``lmask.attention``.

KV caches from ``lmask.kv_cache`` prune a windowed layer to its first ``sinks`` keys plus a contiguous recent suffix.
The window rule holds exactly in that compressed key index, so only an explicit padding mask, built by transformers
for the absolute length, has its columns mapped (``_mask_columns``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmask.schedule import visible


def window_mask(
    q_len: int, k_len: int, window: int | None, sinks: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Boolean [Tq, Tk] mask (True = attend) for queries at the last Tq of Tk positions."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    return visible(q_pos, k_pos, window, sinks)


def _mask_columns(attention_mask: torch.Tensor, k_len: int, sinks: int) -> torch.Tensor:
    """Columns of a [.., Tq, T_abs] mask that belong to the Tk cached keys.

    A pruned windowed cache keeps keys [0, sinks) and the last Tk - sinks positions, so the mask's first ``sinks``
    columns and its last Tk - sinks columns are the ones that match.
    """
    abs_len = attention_mask.shape[-1]
    if abs_len == k_len:
        return attention_mask
    if abs_len < k_len or sinks > k_len:
        raise ValueError(f"attention mask covers {abs_len} keys but attention got {k_len} (sinks={sinks})")
    if sinks == 0:
        return attention_mask[..., abs_len - k_len :]
    return torch.cat([attention_mask[..., :sinks], attention_mask[..., abs_len - (k_len - sinks) :]], dim=-1)


def masked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window: int | None,
    sinks: int = 0,
    attention_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Reference path: SDPA over the dense score matrix with an explicit window mask.

    Correct for every case (padding masks, cache decoding, pruned caches, dropout), but it computes all Tq×Tk scores.
    """
    k_len = key.shape[-2]
    mask = window_mask(query.shape[-2], k_len, window, sinks, query.device)
    if attention_mask is not None:
        if attention_mask.dtype != torch.bool:  # additive float mask
            attention_mask = attention_mask == 0
        mask = mask & _mask_columns(attention_mask, k_len, sinks)
        # A query whose every key is padding would softmax over nothing (NaN) and poison later layers through
        # its value; let such rows attend to all keys instead: finite, and never read by real tokens.
        mask = mask | ~mask.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2)


def causal_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Full causal attention (Tq == Tk) through SDPA's ``is_causal``: no mask tensor, flash kernels allowed."""
    out = F.scaled_dot_product_attention(query, key, value, is_causal=True, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2)


__all__ = ["causal_attention", "masked_attention", "window_mask"]
