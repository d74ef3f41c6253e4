"""How the blocked kernel cuts a windowed causal sequence into pieces (pure Python; no torch).

Kept apart from the kernel (``lmask.blocked``, which needs torch) so that ``lmask.flops`` stays torch-free.
``lmask.blocked.blocked_attention`` computes these pieces and ``lmask.flops.blocked_pairs`` counts their scores, so
the two cannot drift apart:

- head: queries [0, P) against keys [0, P): causal when P <= window (every key is inside the window), else dense
  with the window mask;
- middle: ``n_mid`` blocks of ``b`` queries; block m holds queries P + m·b .. and attends to a slab of P + b keys
  ending at its own last query, plus ``sinks`` sink columns;
- tail: the last < b queries against keys from ``tail_key_start`` (their window's edge) plus the sinks before it.

P is the smallest multiple of b that is >= window - 1, so a slab always covers the window.
"""

from __future__ import annotations

from dataclasses import dataclass


def block_size(window: int) -> int:
    """Query block length for a window.

    Smaller blocks waste fewer pairs (a block computes w + b keys per query, not w) but make smaller GEMMs. Measured
    on a 2-core CPU (fwd and fwd+bwd, T=2048/4096): 32 is best up to w=128, 64 at w=256, 128 from w=512. A power
    of two divides the windows of geometric schedules, so the slab starts exactly at the window edge.
    """
    return 32 if window <= 128 else 64 if window <= 256 else 128


@dataclass(frozen=True)
class BlockedLayout:
    seq_len: int
    window: int
    sinks: int
    block: int  # b
    prev: int  # P: keys before a block's first query that its slab holds

    @property
    def head(self) -> int:
        return min(self.prev, self.seq_len)

    @property
    def head_is_causal(self) -> bool:
        return self.head <= self.window

    @property
    def n_mid(self) -> int:
        return max(0, (self.seq_len - self.prev) // self.block)

    @property
    def slab(self) -> int:
        return self.prev + self.block

    @property
    def tail_start(self) -> int:
        return self.prev + self.n_mid * self.block

    @property
    def tail_key_start(self) -> int:
        return max(0, self.tail_start - self.prev)


def blocked_layout(window: int, seq_len: int, sinks: int = 0, block: int | None = None) -> BlockedLayout:
    b = block or block_size(window)
    return BlockedLayout(seq_len, window, sinks, b, -(-(window - 1) // b) * b)


__all__ = ["BlockedLayout", "block_size", "blocked_layout"]
