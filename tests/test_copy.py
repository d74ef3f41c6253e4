"""Positive control for the copy gain: a hand-built GPT-2 that copies exactly from distance d.

The model (no training): one copying layer (one head, n_embd = V + T), alone or as the last of 12 layers whose other
blocks write nothing (so the 12-layer model copies the same way, under a schedule's per-layer windows). The residual
stream of position i is e[token_i] + e[V + i] (token one-hot, then position one-hot). The head's query at i is the
position one-hot of i + 1 - d and its key is its own position one-hot, so position i attends (softmax effectively
one-hot) to position i + 1 - d and writes that token's one-hot, scaled up, into the stream; the MLP writes nothing.
The tied LM head reads the token subspace, so the model predicts token[i + 1 - d] at position i: in a copy probe at
distance d that is the span's first occurrence. Whether a window lets the head see that far is exactly what the gain
must show.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmask.evaluate import copy_nll
from lmask.model import apply_windows, new_model, scratch_config
from lmask.params import CopyParams
from lmask.synthetic import copy_pairs

V, T = 48, 32  # vocabulary, positions
D = V + T
SPAN, OFFSET = 6, 3
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


def copy_model(d: int, n_layer: int = 1) -> torch.nn.Module:
    """The exact copier: position i predicts the token at position i + 1 - d (the last layer copies, the others
    write nothing into the residual stream)."""
    config = scratch_config(V, n_layer, D, 1, T, 0.0, 0, 0)
    model = new_model(config, seed=0)
    # LayerNorm of a vector with exactly two ones: mean mu = 2/D, variance mu - mu², so LN(x) = a·x - a·mu with
    # a = 1/sqrt(var + eps); ln_1.bias = a·mu makes ln_1(x) = a·x exactly.
    mu = 2 / D
    a = 1 / math.sqrt(mu - mu * mu + config.layer_norm_epsilon)
    query_gain = 40 * math.sqrt(D) / a**2  # score a²·g/sqrt(D) = 40 on the target key, 0 elsewhere
    value_gain = 100 / a  # the copied one-hot enters the stream with weight 100
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.wte.weight[:, :V] = torch.eye(V)
        model.transformer.wpe.weight[:, V:] = torch.eye(T)
        block = model.transformer.h[-1]
        block.ln_1.weight.fill_(1.0)
        block.ln_1.bias.fill_(a * mu)
        block.ln_2.weight.fill_(1.0)
        model.transformer.ln_f.weight.fill_(1.0)
        w = block.attn.c_attn.weight  # Conv1D [D, 3D]: x @ w gives [query | key | value]
        for i in range(T):
            if i + 1 - d >= 0:
                w[V + i, V + i + 1 - d] = query_gain
            w[V + i, D + V + i] = 1.0
        for t in range(V):
            w[t, 2 * D + t] = value_gain
        block.attn.c_proj.weight.copy_(torch.eye(D))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied: logits = token dims
    return model.eval()


def background(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Held-out "documents" (rows of distinct random tokens, so a span's source is unambiguous) and their lengths."""
    rng = np.random.default_rng(seed)
    docs = np.stack([rng.permutation(V)[:T] for _ in range(n)])
    return docs, np.full(n, T)


def pairs_for(d: int, seed: int = 1):
    cfg = CopyParams(distances=[d], span=SPAN, offset=OFFSET, n_sequences=16, batch_size=8)
    (pairs,) = copy_pairs(*background(), cfg, seed=seed)
    return pairs


def contains(row: np.ndarray, span: np.ndarray) -> bool:
    return any(np.array_equal(row[i : i + len(span)], span) for i in range(len(row) - len(span) + 1))


def gains(model: torch.nn.Module, pairs) -> np.ndarray:
    """Per-sequence copy gain: control NLL - same NLL on the scored tokens."""
    nll = copy_nll(model, [pairs], 8, CPU)
    assert nll.shape == (1, 16, 2)
    return nll[0, :, 1] - nll[0, :, 0]


def test_copy_pairs_differ_only_in_the_first_occurrence():
    cfg = CopyParams(distances=[8, 20], span=SPAN, offset=OFFSET, n_sequences=16, batch_size=8)
    docs, lengths = background()
    out = copy_pairs(docs, lengths, cfg, seed=3)
    assert [p.distance for p in out] == [8, 20]
    for p in out:
        d = p.distance
        length = OFFSET + d + SPAN
        assert p.same.shape == p.control.shape == (16, length)
        assert p.start == OFFSET + d
        assert (p.scored.start, p.scored.stop) == (OFFSET + d + 1, length)
        first = slice(OFFSET, OFFSET + SPAN)
        differs = p.same != p.control
        assert not differs[:, :OFFSET].any() and not differs[:, OFFSET + SPAN :].any()
        assert differs[:, first].any(axis=1).all()  # every control has a different first span
        # The second occurrence is the same span in both; in `same` the first occurrence repeats it.
        assert np.array_equal(p.same[:, first], p.same[:, p.start :])
        assert np.array_equal(p.control[:, p.start :], p.same[:, p.start :])
        for k in range(16):
            # Around the spans: one document's own first tokens (the host), untouched.
            hosts = [j for j in range(len(docs)) if np.array_equal(docs[j, :OFFSET], p.same[k, :OFFSET])]
            assert len(hosts) == 1
            host = docs[hosts[0], :length]
            assert np.array_equal(p.same[k, OFFSET + SPAN : p.start], host[OFFSET + SPAN : p.start])
            # Both spans are natural text: consecutive tokens of another document, not random ids.
            for span in (p.same[k, p.start :], p.control[k, first]):
                assert any(contains(docs[j], span) for j in range(len(docs)) if j != hosts[0])
    again = copy_pairs(docs, lengths, cfg, seed=3)
    assert all(np.array_equal(a.same, b.same) and np.array_equal(a.control, b.control) for a, b in zip(out, again))
    other = copy_pairs(docs, lengths, cfg, seed=4)
    assert not np.array_equal(other[0].same, out[0].same)


def test_a_distance_no_document_can_hold_is_an_error():
    cfg = CopyParams(distances=[T], span=SPAN, offset=OFFSET, n_sequences=4, batch_size=4)
    with pytest.raises(ValueError, match="copy.distances"):
        copy_pairs(*background(), cfg, seed=0)


@pytest.mark.parametrize("d", [8, 20])
def test_the_hand_built_model_copies_from_distance_d(d):
    """Independent of lmask's evaluation: argmax at each scored position is the token d - 1 back."""
    model = apply_windows(copy_model(d), [None])
    p = pairs_for(d)
    with torch.no_grad():
        logits = model(torch.from_numpy(p.same)).logits
    for i in range(p.start, p.same.shape[1] - 1):  # position i predicts label i + 1
        assert np.array_equal(logits[:, i].argmax(-1).numpy(), p.same[:, i + 1 - d])
        assert np.array_equal(p.same[:, i + 1 - d], p.same[:, i + 1])  # ... which is the right answer here


@pytest.mark.parametrize("d", [8, 20])
def test_full_model_has_a_large_copy_gain(d):
    model = apply_windows(copy_model(d), [None])
    p = pairs_for(d)
    nll = copy_nll(model, [p], 8, CPU)[0]
    assert nll[:, 0].max() < 0.05  # same: the copy is (nearly) certain
    assert nll[:, 1].min() > 2.0  # control: the copied token is the wrong one
    assert (nll[:, 1] - nll[:, 0]).min() > 2.0


@pytest.fixture(scope="module")
def full_gain_20() -> np.ndarray:
    return gains(apply_windows(copy_model(20), [None]), pairs_for(20))


@pytest.mark.parametrize("window", [20, 32])
def test_window_reaching_d_keeps_the_gain(window, full_gain_20):
    d = 20
    windowed = gains(apply_windows(copy_model(d), [window]), pairs_for(d))
    assert windowed.min() > 2.0
    np.testing.assert_allclose(windowed, full_gain_20, atol=1e-4)


@pytest.mark.parametrize("window", [1, 20 - SPAN + 1])
def test_window_that_misses_the_first_occurrence_has_zero_gain(window):
    """With window <= d - span + 1 no scored position sees any token of the first span: both sequences give the
    same inputs to every prediction, so the gain is exactly zero."""
    d = 20
    g = gains(apply_windows(copy_model(d), [window]), pairs_for(d))
    assert np.abs(g).max() < 1e-5


@pytest.mark.parametrize("window", [20 - SPAN + 2, 19])
def test_window_just_short_of_d_cannot_copy(window):
    """d - span + 1 < window < d: the source token (d - 1 back) is out of reach, so there is no copy gain, but
    the later tokens of the first span are in reach, so same and control differ a little (see the next test)."""
    d = 20
    g = gains(apply_windows(copy_model(d), [window]), pairs_for(d))
    assert np.abs(g).max() < 1.0 and abs(g.mean()) < 0.2


@pytest.mark.parametrize("window", [None, 20, 8, 1])
def test_twelve_layer_positive_control_under_a_schedule(window):
    """The probe on a 12-layer model whose last layer copies from d = 20, under a schedule that windows that layer
    (and, as the original project's do, others): full attention and a window reaching d keep the whole gain; windows
    below d - span + 1 see none of the first occurrence and lose it exactly."""
    d = 20
    windows = [None] * 6 + [512, 256, 128, 64, 32, window]
    g = gains(apply_windows(copy_model(d, n_layer=12), windows), pairs_for(d))
    if window is None or window >= d:
        assert g.min() > 2.0
        np.testing.assert_allclose(g, gains(apply_windows(copy_model(d), [None]), pairs_for(d)), atol=1e-4)
    else:
        assert np.abs(g).max() < 1e-5


def test_the_default_negative_control_loses_the_gain_and_the_repeated_text_drop():
    """params.yaml's negative-control schedule (an 8-token window in every layer) on a 12-layer model that copies:
    the copy gain at d = 20 and the repeated-text drop (a row's second half repeats its first, 16 tokens back), both
    large under full attention, vanish: the window never reaches the first occurrence."""
    from lmask.evaluate import token_nll
    from lmask.params import load_params
    from lmask.schedule import receptive_field
    from lmask.summary import repeated_drop
    from lmask.synthetic import repeated_text_documents

    local = load_params(ROOT / "params.yaml").schedules["local"]
    assert receptive_field(local.windows, 1024) < 128 - 8 + 1  # below every probe distance from 128 (span 8)
    d = 20
    copier = copy_model(d, n_layer=12)
    full = gains(apply_windows(copier, [None] * 12), pairs_for(d))
    negative = gains(apply_windows(copy_model(d, n_layer=12), local.windows), pairs_for(d))
    assert full.min() > 2.0 and np.abs(negative).max() < 1e-5

    half = 16  # the copier at d = 16 predicts token i + 1 - 16: the repeated half
    docs, lengths = repeated_text_documents(*background(n=12, seed=5))
    assert (lengths == 2 * half).all()

    def drop(windows):
        nll = token_nll(apply_windows(copy_model(half, n_layer=12), windows), docs, lengths, 4, CPU)
        return repeated_drop(nll)

    # Without the copy only position effects are left (early queries see fewer than 8 keys): a small fraction.
    full_drop, local_drop = drop([None] * 12), drop(local.windows)
    assert full_drop.min() > 2.0 and np.abs(local_drop).max() < 0.25 * full_drop.min()


def test_repeated_drop_by_source_finds_where_copying_reaches():
    """A model that copies only tokens whose first occurrence sits at positions 1-3: the drop is 4 nats in that
    bucket and 0 beyond, whatever the document's length; a bucket past a document's half is NaN, not 0."""
    from lmask.summary import repeated_drop_by_source, source_buckets

    def row(h: int, width: int) -> np.ndarray:
        nll = np.full(width, np.nan)
        nll[: 2 * h - 1] = 5.0  # label t predicts token t + 1; 2h - 1 labels for a document of 2h tokens
        for p in range(1, min(4, h)):
            nll[h + p - 1] = 1.0  # token h + p, the copy of token p
        return nll

    buckets = source_buckets([4, 999], context=20)  # 999 is past half the context: dropped
    assert buckets == [("1-3", 1, 4), ("4-9", 4, 10)]
    out = repeated_drop_by_source(np.stack([row(10, 19), row(6, 19), row(3, 19)]), buckets)
    np.testing.assert_array_equal(out[:2], [[4.0, 0.0], [4.0, 0.0]])
    assert out[2, 0] == 4.0 and np.isnan(out[2, 1])  # h = 3: tokens 1-2 only
