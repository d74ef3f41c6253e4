"""Analytic FLOP ceiling of a window schedule: the best speedup skipping masked attention pairs can give.

Forward FLOPs per token (multiply-add = 2 FLOPs), GPT-2 layout:
  per layer: 24·d² (QKV 6d², output projection 2d², MLP 16d²) + 4·d·pairs/T (QKᵀ and PV over attended pairs)
  LM head:   2·d·V
Embeddings, layer norms and softmax are ignored (O(d) per token). The ceiling is flops(full) / flops(schedule): the
speedup if wall time were proportional to FLOPs. Backward is ~2x forward for every term, so the fwd+bwd ceiling
is the same ratio.
"""

from __future__ import annotations

from lmask.block_layout import blocked_layout
from lmask.schedule import Windows, attention_pairs


def forward_flops_per_token(windows: Windows, seq_len: int, n_embd: int, vocab_size: int, sinks: int = 0) -> float:
    """Forward FLOPs per token of a GPT-2 with one window per layer (``None`` = full) at context ``seq_len``."""
    d = n_embd
    layers = sum(24 * d * d + 4 * d * attention_pairs(w, seq_len, sinks) / seq_len for w in windows)
    return layers + 2 * d * vocab_size


def flops_ceiling(windows: Windows, seq_len: int, n_embd: int, vocab_size: int, sinks: int = 0) -> float:
    """flops(full attention in every layer) / flops(schedule): the whole-model speedup ceiling."""
    full = forward_flops_per_token([None] * len(windows), seq_len, n_embd, vocab_size)
    return full / forward_flops_per_token(windows, seq_len, n_embd, vocab_size, sinks)


def attention_ceiling(window: int | None, seq_len: int, sinks: int = 0) -> float:
    """Ideal speedup of one layer's attention alone: causal pairs / windowed pairs."""
    return attention_pairs(None, seq_len) / attention_pairs(window, seq_len, sinks)


def blocked_pairs(window: int, seq_len: int, sinks: int = 0, block: int | None = None) -> int:
    """(query, key) scores the blocked path (``lmask.blocked.blocked_attention``) computes, masked ones included.

    It mirrors that function's three pieces: the first P queries (causal when P <= window: half the square; else
    dense), n full blocks of b queries against sinks + P + b keys each, and the last < b queries against the keys
    from their window's edge plus the sinks before it. blocked_pairs / attention_pairs is the work the blocking adds
    over an exact sliding window; the benchmark reports it beside the kernel's speed.
    """
    layout = blocked_layout(window, seq_len, sinks, block)
    head, b, T = layout.head, layout.block, seq_len
    pairs = head * (head + 1) // 2 if layout.head_is_causal else head * head
    pairs += layout.n_mid * b * (sinks + layout.slab)
    if layout.tail_start < T:
        k0 = layout.tail_key_start
        pairs += (T - layout.tail_start) * (T - k0 + min(sinks, k0))
    return pairs


TILED_QUERY_TILE = 64  # kQueryTile in lmask/csrc/band.cpp


def tiled_pairs(window: int | None, seq_len: int, tile: int = TILED_QUERY_TILE) -> int:
    """(query, key) scores the tiled kernel (``lmask.band.tiled_attention``) computes, masked ones included: each tile
    of ``tile`` queries [t0, t1) scores the keys from its first query's window edge to its last query, [lo, t1).
    tiled_pairs / attention_pairs is the work the tiling adds over an exact window (1.06x at T = 1024, full)."""
    w = seq_len if window is None else window
    pairs = 0
    for t0 in range(0, seq_len, tile):
        t1 = min(seq_len, t0 + tile)
        pairs += (t1 - t0) * (t1 - max(0, t0 - w + 1))
    return pairs


def attention_share(n_layer: int, seq_len: int, n_embd: int, vocab_size: int) -> float:
    """Fraction of a full model's forward FLOPs spent on attention scores (QKᵀ and PV)."""
    d = n_embd
    attn = n_layer * 4 * d * attention_pairs(None, seq_len) / seq_len
    return attn / forward_flops_per_token([None] * n_layer, seq_len, d, vocab_size)


__all__ = [
    "TILED_QUERY_TILE",
    "attention_ceiling",
    "attention_share",
    "blocked_pairs",
    "flops_ceiling",
    "forward_flops_per_token",
    "tiled_pairs",
]
