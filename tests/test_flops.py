"""FLOP ceilings: exact values for GPT-2 small (d=768, 12 layers, V=50257)."""

import pytest
import torch

import lmask.blocked as blocked_module
from lmask.block_layout import block_size, blocked_layout
from lmask.flops import attention_ceiling, attention_share, blocked_pairs, flops_ceiling, forward_flops_per_token
from lmask.schedule import attention_pairs, layer_windows

HALF = [None] * 6 + [512, 256, 128, 64, 32, 16]
QUARTER = [None] * 3 + [1024, 512, 256, 128, 64, 32, 16, 8, 4]
AGGRESSIVE = [None, 1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1]


def test_seed_schedules_expand_as_expected():
    spec = {"type": "progressive", "start_layer": 6, "start_window": 512, "end_window": 16}
    assert layer_windows(spec, 12) == HALF
    assert layer_windows({**spec, "start_layer": 3, "start_window": 1024, "end_window": 4}, 12) == QUARTER
    assert layer_windows({**spec, "start_layer": 1, "start_window": 1024, "end_window": 1}, 12) == AGGRESSIVE


def test_forward_flops_full_gpt2_small_t1024():
    d, V = 768, 50257
    per_layer = 24 * d * d + 4 * d * (1024 * 1025 // 2) / 1024
    assert forward_flops_per_token([None] * 12, 1024, d, V) == pytest.approx(12 * per_layer + 2 * d * V, rel=1e-12)
    assert forward_flops_per_token([None] * 12, 1024, d, V) == 265_956_864  # 12 × (14_155_776 + 1_574_400) + 77_194_752


def test_free_attention_ceiling_t1024():
    # w=1 everywhere is 1 pair per token: almost free attention -> the ~1.076 bound of the findings.
    assert flops_ceiling([1] * 12, 1024, 768, 50257) == pytest.approx(1.07631, abs=1e-5)


@pytest.mark.parametrize(
    "windows,T,expected",
    [
        (HALF, 1024, 1.0265),
        (QUARTER, 1024, 1.0390),
        (AGGRESSIVE, 1024, 1.0519),
        (HALF, 4096, 1.1209),
        (QUARTER, 4096, 1.1873),
        (AGGRESSIVE, 4096, 1.2449),
        (HALF, 8192, 1.2226),
        (QUARTER, 8192, 1.3687),
        (AGGRESSIVE, 8192, 1.4984),
    ],
)
def test_schedule_ceilings(windows, T, expected):
    assert flops_ceiling(windows, T, 768, 50257) == pytest.approx(expected, abs=5e-5)


def test_full_schedule_ceiling_is_one():
    assert flops_ceiling([None] * 12, 4096, 768, 50257) == 1.0


def test_attention_ceiling_is_pair_ratio():
    assert attention_ceiling(64, 4096) == pytest.approx((4096 * 4097 / 2) / (64 * 4096 - 64 * 63 / 2), rel=1e-12)
    assert attention_ceiling(None, 4096) == 1.0
    assert attention_ceiling(5000, 4096) == 1.0
    assert attention_ceiling(1, 8) == 36 / 8


def test_attention_share_matches_findings():
    assert round(attention_share(12, 1024, 768, 50257), 3) == 0.071
    assert round(attention_share(12, 4096, 768, 50257), 3) == 0.234


@pytest.mark.parametrize(
    "T,window,sinks,block",
    [
        (1000, 64, 0, None),
        (1000, 64, 4, None),
        (777, 256, 3, None),
        (300, 16, 0, None),
        (100, 5, 2, 4),
        (200, 5, 1, 16),
        (50, 64, 0, 16),
    ],
)
def test_blocked_pairs_counts_the_scores_the_kernel_is_given(monkeypatch, T, window, sinks, block):
    """blocked_pairs equals the scores of the attention calls blocked_attention makes (a causal call: half the square
    with the diagonal; the others: every query × key of every block)."""
    scores = []

    def count(real):
        def call(q, k, v, *args, **kw):
            n_q, n_k = q.shape[-2], k.shape[-2]
            scores.append(n_q * (n_q + 1) // 2 if kw.get("is_causal") else q.shape[0] * n_q * n_k)
            return real(q, k, v, *args, **kw)

        return call

    monkeypatch.setattr(
        blocked_module.F, "scaled_dot_product_attention", count(torch.nn.functional.scaled_dot_product_attention)
    )
    monkeypatch.setattr(blocked_module, "_CPU_FLASH", count(blocked_module._CPU_FLASH))
    q, k, v = (torch.randn(1, T, 1, 8).transpose(1, 2) for _ in range(3))
    blocked_module.blocked_attention(q, k, v, window, sinks, block=block)
    assert sum(scores) == blocked_pairs(window, T, sinks, block)
    assert blocked_pairs(window, T, sinks, block) >= attention_pairs(window, T, sinks)


def test_blocked_pairs_overhead_at_the_default_blocks():
    # w=64 uses b=32: each middle query computes P + b = 96 keys for 64 needed, so the overhead tends to 1.5.
    assert blocked_pairs(64, 4096) / attention_pairs(64, 4096) == pytest.approx(1.5, abs=0.01)
    assert blocked_pairs(256, 4096) / attention_pairs(256, 4096) == pytest.approx(320 / 256, abs=0.01)


def test_block_size_thresholds():
    assert [block_size(w) for w in (1, 64, 128, 129, 256, 257, 512, 4096)] == [32, 32, 32, 64, 64, 128, 128, 128]


@pytest.mark.parametrize(
    "T,window,sinks,block", [(1000, 64, 0, None), (777, 256, 3, None), (100, 5, 2, 4), (50, 64, 0, 16)]
)
def test_blocked_layout_slabs_cover_every_visible_key(T, window, sinks, block):
    """Each middle block's slab holds every non-sink key its queries may see under the window rule, and the pieces
    partition the queries."""
    lay = blocked_layout(window, T, sinks, block)
    b, P = lay.block, lay.prev
    assert P % b == 0 and window - 1 <= P < window - 1 + b
    assert lay.head + lay.n_mid * b + max(0, T - lay.tail_start) == T  # head, middle and tail partition T
    for m in range(lay.n_mid):
        first = P + m * b
        slab = range(first - P, first + b)
        assert len(slab) == lay.slab
        for i in range(first, first + b):
            needed = [j for j in range(i + 1) if i - j < window]
            assert needed[0] >= slab[0] and needed[-1] < slab[-1] + 1
    for i in range(lay.tail_start, T):
        assert max(0, i - window + 1) >= lay.tail_key_start
