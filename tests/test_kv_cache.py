"""Windowed KV cache: same greedy tokens as a full cache under the same masks, and exact size accounting."""

import pytest
import torch
from transformers.cache_utils import DynamicCache

from lmask.kv_cache import WindowedCache, WindowedLayer, cache_bytes, kv_cache_bytes, kv_cache_entries, windowed_cache
from lmask.model import apply_windows, new_model, scratch_config

WINDOWS = [None, 5, 3, 1]


def tiny_model(windows: list[int | None], sinks: int = 0) -> torch.nn.Module:
    config = scratch_config(64, len(windows), 32, 4, 64, 0.0, bos_token_id=0, eos_token_id=1)
    return apply_windows(new_model(config, seed=0), windows, sinks).eval()


def greedy(model: torch.nn.Module, ids: torch.Tensor, cache: DynamicCache, mask: torch.Tensor | None = None):
    out = model.generate(
        ids,
        attention_mask=mask if mask is not None else torch.ones_like(ids),
        past_key_values=cache,
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=1,
        eos_token_id=None,
        output_scores=True,
        return_dict_in_generate=True,
    )
    return out.sequences, torch.stack(out.scores)


@pytest.mark.parametrize("sinks", [0, 2, 7])  # 7: more sinks than any window
def test_generation_equals_full_cache(sinks):
    model = tiny_model(WINDOWS, sinks)
    ids = torch.randint(2, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    seq_full, scores_full = greedy(model, ids, DynamicCache())
    cache = windowed_cache(model)
    seq_win, scores_win = greedy(model, ids, cache)
    assert torch.equal(seq_full, seq_win)
    torch.testing.assert_close(scores_win, scores_full, atol=1e-5, rtol=1e-5)
    # 9 prompt + 12 new tokens; the last token's own entry was never cached: 20 positions seen by the cache.
    assert cache.get_seq_length() == 20
    assert [layer.keys.shape[-2] for layer in cache.layers] == kv_cache_entries(WINDOWS, 20, sinks)


def test_generation_with_left_padding():
    """Padding masks are built for absolute positions; a pruned layer must pick its own columns."""
    model = tiny_model(WINDOWS, sinks=1)
    ids = torch.randint(2, 64, (2, 8), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding of the first row
    ids[0, :3] = 1
    seq_full, scores_full = greedy(model, ids, DynamicCache(), mask)
    seq_win, scores_win = greedy(model, ids, windowed_cache(model), mask)
    assert torch.equal(seq_full, seq_win)
    torch.testing.assert_close(scores_win, scores_full, atol=1e-5, rtol=1e-5)


def test_cache_bytes_match_accounting():
    model = tiny_model(WINDOWS)
    ids = torch.randint(2, 64, (1, 30))
    cache = windowed_cache(model)
    with torch.no_grad():
        model(ids, past_key_values=cache, use_cache=True)
    # tiny model: 4 heads × 8 dims, fp32; full layer 30 entries, windows 5/3/1 keep 4/2/0.
    assert kv_cache_entries(WINDOWS, 30) == [30, 4, 2, 0]
    assert cache_bytes(cache) == kv_cache_bytes(WINDOWS, 30, 0, n_head=4, head_dim=8) == 2 * 4 * 8 * 4 * 36


def test_kv_cache_bytes_gpt2_small():
    half = [None] * 6 + [512, 256, 128, 64, 32, 16]
    per_pos = 2 * 12 * 64 * 4  # keys + values, 12 heads × 64, fp32
    assert kv_cache_bytes([None] * 12, 4096) == per_pos * 12 * 4096
    assert kv_cache_bytes(half, 4096) == per_pos * (6 * 4096 + 511 + 255 + 127 + 63 + 31 + 15)
    assert kv_cache_bytes(half, 4096, sinks=4) == per_pos * (6 * 4096 + 515 + 259 + 131 + 67 + 35 + 19)
    assert kv_cache_bytes([8], 5, sinks=4) == per_pos * 5  # never more than T


def test_layer_prunes_to_sinks_and_suffix():
    layer = WindowedLayer(window=3, sinks=2)
    x = torch.arange(10.0).view(1, 1, 10, 1)
    keys, _ = layer.update(x, x)
    assert keys.flatten().tolist() == list(range(10))  # the prefill queries need everything
    assert layer.keys.flatten().tolist() == [0, 1, 8, 9]
    keys, _ = layer.update(torch.full((1, 1, 1, 1), 10.0), torch.zeros(1, 1, 1, 1))
    assert keys.flatten().tolist() == [0, 1, 8, 9, 10]
    assert layer.get_seq_length() == 11
    assert layer.get_mask_sizes(1) == (12, 0)


def test_layer_with_more_sinks_than_window():
    layer = WindowedLayer(window=2, sinks=5)
    x = torch.arange(9.0).view(1, 1, 9, 1)
    layer.update(x, x)
    assert layer.keys.flatten().tolist() == [0, 1, 2, 3, 4, 8]  # 5 sinks + the last window - 1 = 1 key
    assert kv_cache_entries([2], 9, sinks=5) == [6]
    assert kv_cache_entries([2], 4, sinks=5) == [4]


def test_cache_layers_follow_windows():
    cache = WindowedCache([None, 4], sinks=1)
    assert [type(layer).__name__ for layer in cache.layers] == ["DynamicLayer", "WindowedLayer"]
    assert cache.is_sliding == [False, True]
