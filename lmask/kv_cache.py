"""Windowed KV cache for generation: a windowed layer keeps only its sinks and its last ``window - 1`` keys.

Built on transformers' cache classes (``DynamicCache`` holding one ``CacheLayerMixin`` per layer), not on a fork of
GPT-2: full layers use the stock ``DynamicLayer``; windowed layers use ``WindowedLayer``. Pass the cache to
``model.generate(..., past_key_values=windowed_cache(model))`` or to a forward call.

Layout of a pruned layer: keys at positions [0, sinks) followed by a contiguous suffix ending at the newest token.
``lmask.attention`` applies the window rule in that compressed index, which is exact (see its docstring), so
greedy generations equal those of a full cache under the same masks.

Memory after T tokens (what stays allocated between steps): a full layer holds T entries, a windowed layer
min(T, sinks + window - 1); during a step each layer also holds the new token's entry (``+1``: the newest token
attends to window keys, itself included).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from lmask.schedule import Windows, config_windows


class WindowedLayer(DynamicLayer):
    """A DynamicLayer that keeps the first ``sinks`` and the last ``window - 1`` keys/values."""

    is_sliding = True
    is_croppable = False  # pruned entries are gone: assisted decoding cannot roll back
    _layer_type = "lmask_windowed"  # registers the class with transformers' dynamic layer mapping

    def __init__(self, window: int, sinks: int = 0, **kwargs) -> None:
        super().__init__()
        if window < 1 or sinks < 0:
            raise ValueError(f"window must be >= 1 and sinks >= 0, got window={window}, sinks={sinks}")
        self.window = window
        self.sinks = sinks
        self.cumulative_length = 0  # tokens seen, not tokens kept

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new states, return everything the new queries may need, keep only what later ones need."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        self.keys, self.values = self._prune(keys), self._prune(values)
        return keys, values

    def _prune(self, states: torch.Tensor) -> torch.Tensor:
        n, keep = states.shape[-2], self.sinks + self.window - 1
        if n <= keep:
            return states
        # Explicit start index: a negative slice of length 0 would keep everything.
        recent = states[..., n - (self.window - 1) :, :]
        return torch.cat([states[..., : self.sinks, :], recent], dim=-2) if self.sinks else recent.contiguous()

    def get_seq_length(self) -> int:
        """Tokens seen so far (positions continue from here), not the number kept."""
        return self.cumulative_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Masks are built for absolute positions; the attention function picks this layer's columns."""
        return self.cumulative_length + query_length, 0

    def crop(self, tokens_to_remove: int) -> None:
        """Cropping is only exact while nothing has been pruned."""
        if self.cumulative_length > self.sinks + self.window - 1:
            raise RuntimeError("a pruned WindowedLayer cannot be cropped (its oldest entries are gone)")
        super().crop(tokens_to_remove)
        self.cumulative_length = self.keys.shape[-2] if self.is_initialized else 0


class WindowedCache(DynamicCache):
    """DynamicCache with one layer per window: ``DynamicLayer`` for ``None`` (full), ``WindowedLayer`` otherwise."""

    def __init__(self, windows: Windows, sinks: int = 0) -> None:
        layers = [DynamicLayer() if w is None else WindowedLayer(w, sinks) for w in windows]
        # Skip DynamicCache.__init__ (it builds layers from config fields GPT-2 lacks); Cache takes the layer list.
        super(DynamicCache, self).__init__(layers=layers)


def windowed_cache(model: torch.nn.Module) -> WindowedCache:
    """A fresh windowed cache matching a model masked with ``lmask.model.apply_windows``."""
    windows, sinks = config_windows(model.config)
    return WindowedCache(list(windows), sinks)


def kv_cache_entries(windows: Windows, seq_len: int, sinks: int = 0) -> list[int]:
    """Positions each layer keeps after ``seq_len`` tokens: T for full layers, min(T, sinks + w - 1) otherwise."""
    return [seq_len if w is None else min(seq_len, sinks + w - 1) for w in windows]


def kv_cache_bytes(
    windows: Windows,
    seq_len: int,
    sinks: int = 0,
    n_head: int = 12,
    head_dim: int = 64,
    batch_size: int = 1,
    dtype_bytes: int = 4,
) -> int:
    """Bytes of keys + values kept after generating up to ``seq_len`` tokens (the analytic count)."""
    per_position = 2 * batch_size * n_head * head_dim * dtype_bytes
    return per_position * sum(kv_cache_entries(windows, seq_len, sinks))


def cache_bytes(cache: DynamicCache) -> int:
    """Bytes actually held by a cache's key/value tensors (to check ``kv_cache_bytes`` against)."""
    total = 0
    for layer in cache.layers:
        for t in (layer.keys, layer.values):
            if t is not None:
                total += t.numel() * t.element_size()
    return total


__all__ = ["WindowedCache", "WindowedLayer", "cache_bytes", "kv_cache_bytes", "kv_cache_entries", "windowed_cache"]
