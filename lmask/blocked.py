"""The blocked path: windowed prefill (Tq == Tk) without an explicit mask, CPU and CUDA.

Queries are cut into blocks of ``b``; each block attends to a slab of its own and the preceding keys the window
reaches (plus sink keys), one batched attention call over all blocks. Work is O(T·(w + b)) instead of O(T²), forward
and backward. On CPU the slabs are overlapping strided views of the keys fed to SDPA's flash kernel and its backward
directly (``_CpuSlabAttention``); elsewhere they are unfold copies under autograd. How the sequence is cut (head,
middle blocks, tail) is ``lmask.block_layout``, which ``lmask.flops`` also counts. Window rule and shapes as in
``lmask.attention``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from lmask.block_layout import blocked_layout
from lmask.dense import causal_attention, masked_attention, window_mask
from lmask.schedule import visible


@functools.lru_cache(maxsize=64)
def _slab_mask(
    b: int, window: int, sinks: int, n_blocks: int, first_query: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """[n_blocks, 1, b, sinks + P + b] mask of the middle blocks (cached: it depends only on shapes).

    Block n holds queries first_query + n·b + a and the slab holds keys first_query - P + n·b + c. ``dtype`` bool
    gives a boolean mask, a float dtype an additive one (0 / -inf), which the CPU flash kernel takes directly.
    Materialised per block (not broadcast over dim 0): SDPA on CPU is 3-5x slower when its mask broadcasts over the
    batch dim.
    """
    P = blocked_layout(window, first_query + n_blocks * b, sinks, b).prev
    block_start = first_query + torch.arange(n_blocks, device=device)[:, None, None, None] * b
    i = block_start + torch.arange(b, device=device)[:, None]  # absolute query positions [n, 1, b, 1]
    j = block_start - P + torch.arange(P + b, device=device)  # absolute key positions of the slab [n, 1, 1, P + b]
    # Slab columns follow the rule without sinks: a sink inside the slab is counted by its own column below.
    mask = visible(i, j, window)
    if sinks > 0:
        # Sink key s is an extra column, visible only where the window alone does not reach it (no key twice).
        s = torch.arange(sinks, device=device)
        mask = torch.cat([visible(i, s, window, sinks) & ~visible(i, s, window), mask], dim=-1)
    if dtype == torch.bool:
        return mask.contiguous()
    return torch.zeros(mask.shape, device=device, dtype=dtype).masked_fill_(~mask, float("-inf"))


class _Slabs(torch.autograd.Function):
    """Overlapping key slabs [B, n, L, H, D] (slab n = rows n·b .. n·b + L of x [B, n·b + L - b, H, D]).

    Forward is one unfold copy. The backward adds L/b shifted block views into one buffer; autograd's own
    ``unfold_backward`` was 5x slower than the whole SDPA backward here.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, b: int, L: int) -> torch.Tensor:
        ctx.shape, ctx.b, ctx.L = x.shape, b, L
        return x.unfold(1, L, b).permute(0, 1, 4, 2, 3).contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        B, T, H, D = ctx.shape
        b, L = ctx.b, ctx.L
        n, per = grad.shape[1], L // b
        gx = grad.new_zeros(B, T // b, b, H, D)
        g = grad.view(B, n, per, b, H, D)
        for r in range(per):
            gx[:, r : r + n] += g[:, :, r]
        return gx.view(B, T, H, D), None, None


def _strided_blocks(x: torch.Tensor, b: int, length: int, n: int) -> torch.Tensor:
    """[n, H, length, D] view of x [H, T, D] (any strides): block m = rows m·b .. m·b + length. No copy; the blocks
    overlap when length > b."""
    s_h, s_t, s_d = x.stride()
    return x.as_strided((n, x.shape[0], length, x.shape[2]), (b * s_t, s_h, s_t, s_d), x.storage_offset())


_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CPU_FLASH_BACKWARD = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


def _cpu_slabs_supported(query: torch.Tensor) -> bool:
    return (
        query.device.type == "cpu"
        and query.dtype in (torch.float32, torch.float64, torch.bfloat16)
        and _CPU_FLASH is not None
        and _CPU_FLASH_BACKWARD is not None
    )


class _CpuSlabAttention(torch.autograd.Function):
    """The middle query blocks on CPU: SDPA's flash kernel over overlapping strided key slabs, nothing copied.

    q: [B, H, n·b, D] (queries P .. P + n·b), k/v: [B, H, P + n·b, D], any strides (transformers' q/k/v are
    transposed slices of the fused QKV projection). Returns [B, n·b, H, D].

    The generic path copies every key and value P/b + 1 times (unfold) and lets autograd run SDPA's backward; here
    forward and backward call the flash kernel and its backward directly on views, and the backward folds the slab
    gradients straight into [B, T, H, D] buffers. Forward is ~2x faster at w=64, T=4096; see lmask.benchmark.
    """

    @staticmethod
    def _slabs(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: int, b: int, sinks: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = q.shape[2] // b
        slab = k.shape[2] - q.shape[2] + b
        qs = _strided_blocks(q[i], b, b, n)
        ks, vs = _strided_blocks(k[i], b, slab, n), _strided_blocks(v[i], b, slab, n)
        if sinks > 0:  # sink keys as leading columns of every slab (a copy; only sink schedules pay it)
            H, D = k.shape[1], k.shape[3]
            ks = torch.cat([k[i, None, :, :sinks].expand(n, H, sinks, D), ks], dim=2)
            vs = torch.cat([v[i, None, :, :sinks].expand(n, H, sinks, D), vs], dim=2)
        return qs, ks, vs

    @staticmethod
    def forward(
        ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, sinks: int, b: int, scale: Any
    ) -> torch.Tensor:
        B, H, Tq, D = q.shape
        out = q.new_empty(B, Tq, H, D)
        saved = _CpuSlabAttention.forward_into(out, q, k, v, window, sinks, b, scale)
        ctx.save_for_backward(q, k, v, *saved)
        ctx.config = (window, sinks, b, scale)
        return out

    @staticmethod
    def forward_into(
        out: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        window: int,
        sinks: int,
        b: int,
        scale: Any,
    ) -> list[torch.Tensor]:
        """Write the middle blocks' output into ``out`` [B, Tq, H, D] (rows contiguous per batch element); returns
        what backward needs (each batch element's flash output and log-sum-exp). No autograd: forward calls it."""
        B, H, Tq, D = q.shape
        n, P = Tq // b, k.shape[2] - Tq
        bias = _slab_mask(b, window, sinks, n, P, q.device, q.dtype)
        saved = []
        for i in range(B):  # batch elements cannot share one strided view (T is not a multiple of b)
            o, lse = _CPU_FLASH(*_CpuSlabAttention._slabs(q, k, v, i, b, sinks), attn_mask=bias, scale=scale)
            out[i].view(n, b, H, D).copy_(o.transpose(1, 2))
            saved += [o, lse]
        return saved

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        window, sinks, b, scale = ctx.config
        q, k, v, *saved = ctx.saved_tensors
        B, H, Tq, D = q.shape
        n, P, T = Tq // b, k.shape[2] - Tq, k.shape[2]
        bias = _slab_mask(b, window, sinks, n, P, q.device, q.dtype)
        gq = q.new_empty(B, Tq, H, D)
        gk, gv = q.new_zeros(B, T, H, D), q.new_zeros(B, T, H, D)
        for i in range(B):
            go = grad_out[i].reshape(n, b, H, D).transpose(1, 2)  # reshape: the incoming grad may be strided
            o, lse = saved[2 * i], saved[2 * i + 1]
            gqs, gks, gvs = _CPU_FLASH_BACKWARD(
                go, *_CpuSlabAttention._slabs(q, k, v, i, b, sinks), o, lse, 0.0, False, attn_mask=bias, scale=scale
            )
            gq[i].view(n, b, H, D).copy_(gqs.transpose(1, 2))
            for g, acc in ((gks, gk[i]), (gvs, gv[i])):
                if sinks > 0:
                    acc[:sinks] += g[:, :, :sinks].sum(0).transpose(0, 1)
                    g = g[:, :, sinks:]
                for r in range(P // b + 1):  # slab part r of block m is key block m + r
                    acc[r * b : r * b + n * b].view(n, b, H, D).add_(g[:, :, r * b : (r + 1) * b].transpose(1, 2))
        return gq.transpose(1, 2), gk.transpose(1, 2), gv.transpose(1, 2), None, None, None, None


def blocked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window: int,
    sinks: int = 0,
    scaling: float | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Sliding-window(+sinks) causal attention for Tq == Tk without an explicit mask; returns [B, T, H, D].

    Three pieces, each as sparse backward as forward: head (queries < P, dense over keys < P), middle (full query
    blocks, one batched call over key slabs: no T×T tensor, no padding copy), tail (the last < b queries). Without
    autograd (evaluation, generation) every piece writes into one preallocated output: one pass over the output
    fewer than concatenating them, which autograd needs.
    """
    B, H, T, D = query.shape
    layout = blocked_layout(window, T, sinks, block)
    b, P, L, n_mid = layout.block, layout.prev, layout.slab, layout.n_mid
    # [B, T, H, D] views: transformers' q/k/v are transposes of this layout, so these are usually free.
    q_t, k_t, v_t = (x.transpose(1, 2) for x in (query, key, value))
    tracked = torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value))
    out = None if tracked else query.new_empty(B, T, H, D)
    pieces = []

    def put(start: int, piece: torch.Tensor) -> None:
        if out is None:
            pieces.append(piece)
        else:
            out[:, start : start + piece.shape[1]].copy_(piece)

    head = layout.head
    if head > 0:
        qh, kh, vh = query[:, :, :head], key[:, :, :head], value[:, :, :head]
        if layout.head_is_causal:  # every key of the head is inside the window: plain causal
            put(0, causal_attention(qh, kh, vh, scaling))
        else:
            put(0, masked_attention(qh, kh, vh, window, sinks, scaling=scaling))

    end = P + n_mid * b
    if n_mid > 0 and _cpu_slabs_supported(query):
        q_mid, k_mid, v_mid = query[:, :, P:end], key[:, :, :end], value[:, :, :end]
        if out is None:
            pieces.append(_CpuSlabAttention.apply(q_mid, k_mid, v_mid, window, sinks, b, scaling))
        else:
            _CpuSlabAttention.forward_into(out[:, P:end], q_mid, k_mid, v_mid, window, sinks, b, scaling)
    elif n_mid > 0:
        # Query blocks [B, n, H, b, D]; key slabs [B, n, H, L, D] as overlapping views (unfold, step b).
        qm = q_t[:, P:end].reshape(B, n_mid, b, H, D).transpose(2, 3)
        km = _Slabs.apply(k_t[:, :end], b, L).transpose(2, 3)
        vm = _Slabs.apply(v_t[:, :end], b, L).transpose(2, 3)
        if sinks > 0:
            ks = k_t[:, None, :sinks].transpose(2, 3).expand(B, n_mid, H, sinks, D)
            vs = v_t[:, None, :sinks].transpose(2, 3).expand(B, n_mid, H, sinks, D)
            km, vm = torch.cat([ks, km], dim=-2), torch.cat([vs, vm], dim=-2)
        mask = _slab_mask(b, window, sinks, n_mid, P, query.device, torch.bool)
        if B > 1:
            mask = mask.repeat(B, 1, 1, 1)
        mid = F.scaled_dot_product_attention(
            qm.reshape(B * n_mid, H, b, D),
            km.reshape(B * n_mid, H, km.shape[-2], D),
            vm.reshape(B * n_mid, H, vm.shape[-2], D),
            attn_mask=mask,
            scale=scaling,
        )
        mid = mid.view(B, n_mid, H, b, D).transpose(2, 3)  # [B, n, b, H, D]
        if out is None:
            pieces.append(mid.reshape(B, n_mid * b, H, D))
        else:  # straight into the output: reshaping first would copy the middle twice
            out[:, P:end].view(B, n_mid, b, H, D).copy_(mid)

    start, k0 = layout.tail_start, layout.tail_key_start
    if start < T:  # tail: fewer than b queries; keys from start - P (the window) plus the sinks
        qt, kt, vt = query[:, :, start:], key[:, :, k0:], value[:, :, k0:]
        # Sinks inside [k0, T) are handled by window_mask (shifted); those before k0 become extra columns.
        mask = window_mask(T - start, T - k0, window, max(0, sinks - k0), query.device)
        n_s = min(sinks, k0)
        if n_s > 0:
            i = torch.arange(start, T, device=query.device)[:, None]
            s = torch.arange(n_s, device=query.device)
            sink_cols = visible(i, s, window, sinks) & ~visible(i, s, window)
            kt, vt = torch.cat([key[:, :, :n_s], kt], dim=2), torch.cat([value[:, :, :n_s], vt], dim=2)
            mask = torch.cat([sink_cols, mask], dim=-1)
        put(start, F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scaling).transpose(1, 2))

    if out is not None:
        return out
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


__all__ = ["blocked_attention"]
