"""Layer-wise windowed causal attention.

Every masked attention call in lmask goes through ``windowed_attention``. Shapes follow transformers'
AttentionInterface: query [B, H, Tq, D], key/value [B, H, Tk, D]; queries are the last Tq positions of the key
sequence. Returns [B, Tq, H, D].

Window semantics: query i sees key j iff j <= i and (i - j < window or j < sinks). ``window=None`` is full causal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_mask(
    q_len: int, k_len: int, window: int | None, sinks: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Boolean [Tq, Tk] mask (True = attend) for queries at the last Tq of Tk positions."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    mask = k_pos <= q_pos
    if window is not None:
        mask &= (q_pos - k_pos < window) | (k_pos < sinks)
    return mask


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

    Correct for every case (padding masks, cache decoding, dropout), but it computes all Tq×Tk scores.
    """
    mask = window_mask(query.shape[-2], key.shape[-2], window, sinks, query.device)
    if attention_mask is not None:
        if attention_mask.dtype != torch.bool:  # additive float mask
            attention_mask = attention_mask == 0
        mask = mask & attention_mask[..., -key.shape[-2] :]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2)


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
    q_len, k_len = query.shape[-2], key.shape[-2]
    full = window is None or window >= k_len
    if full and attention_mask is None and q_len == k_len:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, dropout_p=dropout, scale=scaling)
        return out.transpose(1, 2)
    return masked_attention(query, key, value, window, sinks, attention_mask, scaling, dropout)
