"""Band attention for small windows: tiles sized to the window, explicit batched matmuls, forward and backward.

Same window rule as ``lmask.attention`` (query i sees key j iff j <= i and (i - j < window or j < sinks)), for
Tq == Tk and no padding mask. Returns [B, T, H, D].

Why a second kernel. The blocked path feeds SDPA's CPU flash kernel with query blocks of 32 or more: at w = 16 each
query then computes 64 keys for 16 needed, and the flash kernel's per-block bookkeeping (online softmax, splits,
one task per block and head) costs more than the few pairs. Here the tiles are small (b = 4..16 queries, see
``band_block``), the scores are one dense [tiles, b, P + b] tensor, and the work is three batched GEMMs (one
``baddbmm`` that also adds the band mask, a softmax, one ``bmm``), all heads and tiles in a single call each.

Layout. q, k and v are copied once into per-(batch, head) buffers of R = P + T' rows (T' = T rounded up to b;
q scaled by ``scaling``): q at rows [0, T), k and v at rows [P, P + T) behind P zero rows. Tile g (all heads
flattened) then holds queries at rows g·b .. g·b + b and its key slab at rows g·b .. g·b + P + b of the key buffer:
one uniform stride, so every operand is an ``as_strided`` view and one GEMM call covers all heads. The zero rows in
front of each head are masked in that head's first P / b tiles only; tiles past T' in each head compute padding
that is never read. Sinks are extra score columns against each head's first ``sinks`` keys, one more GEMM.

Backward uses the saved probabilities (no recomputation: they are small when w is small): dS = P ∘ (dP − rowsum(dO
∘ O)); dQ = dS·K; dK and dV accumulate slab chunk r of tile g into key tile g + r with in-place ``baddbmm_``, so no
[tiles, P + b, D] slab gradient is ever built.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from lmask.schedule import visible

# Windows up to BAND_MAX_WINDOW take this path (``lmask.attention.select_path``); larger ones the blocked path.
# Measured crossover: see ``band_block`` and metrics/benchmark/kernel.json ("crossover").
BAND_MAX_WINDOW = 32


def band_block(window: int) -> int:
    """Queries per tile. A query computes P + b keys for w needed (P = w - 1 rounded up to b), so small tiles waste
    less, but tiles below 4 queries make GEMMs too small to pay for their call. Measured (roughly: the 2-core CPU was
    shared) at T = 3072, 12 × 64, fwd+bwd: b = 4 at w = 4, and 4, 8 and 16 within noise of each other at w = 16."""
    return 4 if window <= 4 else 8 if window <= 8 else 16


def band_prev(window: int, block: int) -> int:
    """P: keys before a tile's first query that its slab holds (the window's reach, rounded up to the tile)."""
    return -(-(window - 1) // block) * block


def band_pairs(window: int, seq_len: int, sinks: int = 0, block: int | None = None) -> int:
    """(query, key) scores the band kernel computes for one (batch, head), padding tiles included."""
    b = block or band_block(window)
    P = band_prev(window, b)
    tiles = (P + -(-seq_len // b) * b) // b
    return tiles * b * (P + b + min(sinks, seq_len))


@functools.lru_cache(maxsize=64)
def _masks(
    window: int, sinks: int, b: int, P: int, R: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Additive masks (0 / -inf): the band [b, P + b] shared by every tile, the edge [P / b, b, P + b] of each head's
    first tiles (slab rows before position 0), and the sink columns [R, sinks] (None without sinks)."""
    a = torch.arange(b, device=device)[:, None]
    c = torch.arange(P + b, device=device)[None, :]
    band = visible(a + P, c, window)  # query a + P against slab row c, in slab coordinates (causal and in window)
    m = torch.arange(P // b, device=device)[:, None, None]
    edge = (m * b + c - P >= 0).expand(P // b, b, P + b)  # slab row c of tile m is position m·b + c - P

    def additive(allowed: torch.Tensor) -> torch.Tensor:
        return torch.zeros(allowed.shape, device=device, dtype=dtype).masked_fill_(~allowed, float("-inf"))

    sink = None
    if sinks > 0:
        i = torch.arange(R, device=device)[:, None]
        j = torch.arange(sinks, device=device)[None, :]
        sink = additive(visible(i, j, window, sinks) & ~visible(i, j, window))  # only where the window misses it
    return additive(band), additive(edge), sink


def _views(buf: torch.Tensor, rows: int, tiles: int, b: int, D: int, first: int = 0) -> torch.Tensor:
    """[tiles, rows, D] view of a [N, D] buffer: tile g = rows first + g·b .. + rows (overlapping when rows > b)."""
    return buf.as_strided((tiles, rows, D), (b * D, D, 1), buf.storage_offset() + first * D)


def _buffer(x: torch.Tensor, P: int, R: int, scale: float | None = None) -> torch.Tensor:
    """[B·H·R + 2P, D] copy of x [B, H, T, D] (any strides): head h at rows h·R + P + position, zeros elsewhere."""
    B, H, T, D = x.shape
    buf = x.new_empty(B * H * R + 2 * P, D)
    heads = buf[: B * H * R].view(B, H, R, D)
    heads[:, :, :P].zero_()
    heads[:, :, P + T :].zero_()
    buf[B * H * R :].zero_()
    if scale is None:
        heads[:, :, P : P + T] = x
    else:
        torch.mul(x, scale, out=heads[:, :, P : P + T])
    return buf


def _unbuffer(buf: torch.Tensor, B: int, H: int, T: int, P: int, R: int) -> torch.Tensor:
    """The [B, H, T, D] view of a buffer's content rows."""
    return buf[: B * H * R].view(B, H, R, buf.shape[-1])[:, :, P : P + T]


class _BandAttention(torch.autograd.Function):
    """Tile g (all batch elements and heads flattened) = query rows P + g·b .. + b; its key slab = rows g·b .. + L.
    Read the other way, key tile g = rows P + g·b .. + b and the queries that can see it = rows P + g·b .. + L."""

    @staticmethod
    def forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, sinks: int, b: int, scale: float
    ) -> torch.Tensor:
        with torch.autocast(q.device.type, enabled=False):  # the GEMMs run in the inputs' dtype (fp32 or fp64)
            return _BandAttention._forward(ctx, q, k, v, window, sinks, b, scale)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        with torch.autocast(grad_out.device.type, enabled=False):
            return _BandAttention._backward(ctx, grad_out)

    @staticmethod
    def _forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, sinks: int, b: int, scale: float
    ) -> torch.Tensor:
        B, H, T, D = q.shape
        P = band_prev(window, b)
        R = P + -(-T // b) * b  # rows per head; a multiple of b
        BH, L = B * H, P + b
        G = BH * R // b
        qb, kb, vb = _buffer(q, P, R, scale), _buffer(k, P, R), _buffer(v, P, R)
        band, edge, sink_mask = _masks(window, sinks, b, P, R, q.device, q.dtype)
        s = torch.baddbmm(band.expand(G, b, L), _views(qb, b, G, b, D, P), _views(kb, L, G, b, D).transpose(1, 2))
        if P > 0:  # each head's first P / b tiles reach before position 0: mask those slab rows
            s.as_strided((BH, P // b, b, L), (R * L, b * L, L, 1)).add_(edge)
        if sinks > 0:
            s_sink = torch.baddbmm(sink_mask.expand(BH, R, sinks), _heads(qb, BH, R, P), _sink(kb, BH, R, P, sinks).mT)
            probs = torch.softmax(torch.cat([s_sink.view(G, b, sinks), s], dim=-1), dim=-1)
        else:
            probs = torch.softmax(s, dim=-1)
        del s
        ob = _rows_zeroed_outside(qb, P, G * b)
        torch.bmm(probs[..., sinks:], _views(vb, L, G, b, D), out=ob[P : P + G * b].view(G, b, D))
        if sinks > 0:
            _heads(ob, BH, R, P).baddbmm_(probs[..., :sinks].reshape(BH, R, sinks), _sink(vb, BH, R, P, sinks))
        ctx.save_for_backward(qb, kb, vb, probs, ob)
        ctx.config = (B, H, T, D, P, R, b, sinks, scale)
        return _unbuffer(ob, B, H, T, P, R).transpose(1, 2)

    @staticmethod
    def _backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        qb, kb, vb, probs, ob = ctx.saved_tensors
        B, H, T, D, P, R, b, sinks, scale = ctx.config
        BH, L, n = B * H, P + b, (P + b) // b
        G = BH * R // b
        gob = _buffer(grad_out.transpose(1, 2), P, R)  # padding query rows keep a zero gradient: they add nothing
        delta = (gob * ob).sum(-1, keepdim=True)  # rowsum(dO ∘ O) per query row
        p_slab = probs[..., sinks:]
        # Query-major: dS = P ∘ (dO·Vᵀ − δ) per query tile, dQ = dS·K_slab.
        ds = torch.bmm(_views(gob, b, G, b, D, P), _views(vb, L, G, b, D).mT)
        ds.sub_(_views(delta, b, G, b, 1, P)).mul_(p_slab)
        gqb = _rows_zeroed_outside(qb, P, G * b)
        torch.bmm(ds, _views(kb, L, G, b, D), out=gqb[P : P + G * b].view(G, b, D))
        # Key-major: chunk r of query tile g + r holds key tile g's scores; transpose those chunks into [G, b, L]
        # (one pass over the small band) so dK and dV are one GEMM each over every query that sees a key tile.
        gkb, gvb = _rows_zeroed_outside(kb, P, G * b), _rows_zeroed_outside(vb, P, G * b)
        for src, grad, other in ((p_slab, gvb, gob), (ds, gkb, qb)):
            tr = src.new_empty(G, b, L)
            tiles = tr.view(G, b, n, b)
            for r in range(n):
                tiles[: G - r, :, r].copy_(src[r:, :, P - r * b : P - r * b + b].mT)
                tiles[G - r :, :, r].zero_()
            torch.bmm(tr, _views(other, L, G, b, D, P), out=grad[P : P + G * b].view(G, b, D))
        if sinks > 0:
            p_sink = probs[..., :sinks].reshape(BH, R, sinks)
            ds_sink = torch.bmm(_heads(gob, BH, R, P), _sink(vb, BH, R, P, sinks).mT)
            ds_sink.sub_(_heads(delta, BH, R, P)).mul_(p_sink)
            _heads(gqb, BH, R, P).baddbmm_(ds_sink, _sink(kb, BH, R, P, sinks))
            _sink(gkb, BH, R, P, sinks).baddbmm_(ds_sink.mT, _heads(qb, BH, R, P))
            _sink(gvb, BH, R, P, sinks).baddbmm_(p_sink.mT, _heads(gob, BH, R, P))
        gq = _unbuffer(gqb, B, H, T, P, R).mul_(scale)
        return gq, _unbuffer(gkb, B, H, T, P, R), _unbuffer(gvb, B, H, T, P, R), None, None, None, None


def _rows_zeroed_outside(like: torch.Tensor, first: int, rows: int) -> torch.Tensor:
    """A buffer shaped like ``like`` whose rows [first, first + rows) are left for a GEMM to write (``out=``) and
    the rest are zero: clearing the whole buffer first cost a full pass over memory for rows about to be
    overwritten."""
    buf = torch.empty_like(like)
    buf[:first].zero_()
    buf[first + rows :].zero_()
    return buf


def _heads(buf: torch.Tensor, BH: int, R: int, P: int) -> torch.Tensor:
    """[BH, R, D] view of a buffer, row = position (each head's rows P .. P + R; padding included)."""
    return buf[P : P + BH * R].view(BH, R, buf.shape[-1])


def _sink(buf: torch.Tensor, BH: int, R: int, P: int, sinks: int) -> torch.Tensor:
    """[BH, sinks, D] view: each head's first ``sinks`` positions."""
    return _heads(buf, BH, R, P)[:, :sinks]


def band_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window: int,
    sinks: int = 0,
    scaling: float | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Sliding-window(+sinks) causal attention for Tq == Tk, computing only the band's tiles; returns [B, T, H, D].

    query/key/value: [B, H, T, D], any strides. ``block`` overrides the tile size (tests use it).
    """
    T, D = query.shape[-2], query.shape[-1]
    scale = D**-0.5 if scaling is None else scaling
    args = (window, min(sinks, T), block or band_block(window), scale)
    if query.dtype in (torch.bfloat16, torch.float16):  # scores and softmax in fp32, as SDPA's kernels do
        out = _BandAttention.apply(query.float(), key.float(), value.float(), *args)
        return out.to(query.dtype)
    return _BandAttention.apply(query, key, value, *args)


__all__ = ["BAND_MAX_WINDOW", "band_attention", "band_block", "band_pairs", "band_prev"]
