"""The masked GPT-2: equal to an independently written masked reference, receptive field respected, round trip."""

import numpy as np
import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from lmask.model import apply_windows, load_model, new_model, scratch_config, sinusoidal_positions

torch.set_num_threads(1)


def reference_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Dense softmax attention with the window rule written out with loops (independent of lmask.attention)."""
    windows = module.config.ref_windows
    sinks = module.config.ref_sinks
    w = windows[module.layer_idx]
    tq, tk = query.shape[-2], key.shape[-2]
    allowed = torch.zeros(tq, tk, dtype=torch.bool)
    for qi in range(tq):
        i = tk - tq + qi
        for j in range(i + 1):
            allowed[qi, j] = w is None or i - j < w or j < sinks
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, :, :, :tk]
    scores = (query @ key.transpose(-1, -2)) * scaling
    allowed = allowed | ~allowed.any(-1, keepdim=True)  # fully padded rows: finite, never read by real tokens
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ value).transpose(1, 2), None


AttentionInterface.register("test_reference", reference_attention)
AttentionMaskInterface.register("test_reference", sdpa_mask)


def tiny_model(n_layer=3, seed=0):
    config = scratch_config(
        vocab_size=50, n_layer=n_layer, n_embd=16, n_head=2, n_positions=64, dropout=0.0, bos_token_id=0, eos_token_id=0
    )
    return new_model(config, seed).eval()


def reference_logits(model, windows, sinks, x, **kw):
    model.config.ref_windows, model.config.ref_sinks = windows, sinks
    saved = model.config._attn_implementation
    model.set_attn_implementation("test_reference")
    try:
        return model(x, **kw).logits
    finally:
        model.set_attn_implementation(saved)


@pytest.mark.parametrize(
    "windows, sinks",
    [([None, None, None], 0), ([1, 1, 1], 0), ([3, None, 5], 0), ([2, 4, 1], 2), ([64, 7, None], 1)],
)
def test_masked_model_equals_reference(windows, sinks):
    model = tiny_model()
    x = torch.randint(1, 50, (2, 23))
    apply_windows(model, windows, sinks)
    with torch.no_grad():
        ours = model(x).logits
        ref = reference_logits(model, windows, sinks, x)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_windows_change_the_output():
    model = tiny_model()
    x = torch.randint(1, 50, (1, 20))
    with torch.no_grad():
        full = model(x).logits
        apply_windows(model, [2, 2, 2])
        windowed = model(x).logits
    # The first two positions see the same keys either way (different kernels: equal up to float rounding).
    torch.testing.assert_close(full[:, :2], windowed[:, :2], atol=1e-6, rtol=1e-6)
    assert (full[:, -1] - windowed[:, -1]).abs().max() > 1e-4


def test_token_outside_receptive_field_does_not_change_last_logits():
    model = apply_windows(tiny_model(), [2, 3, 2])  # receptive field 1 + 1 + 2 + 1 = 5 positions
    x = torch.randint(1, 50, (1, 30))
    last = 29
    with torch.no_grad():
        base = model(x).logits[0, last]
        outside, inside = x.clone(), x.clone()
        outside[0, : last - 5 + 1] = (outside[0, : last - 5 + 1] % 49) + 1  # every position outside the field
        inside[0, last - 4] = (inside[0, last - 4] % 49) + 1  # oldest position inside the field
        assert torch.equal(model(outside).logits[0, last], base)
        assert not torch.allclose(model(inside).logits[0, last], base)


def test_sink_tokens_stay_visible():
    model = apply_windows(tiny_model(), [1, 1, 1], sinks=1)
    x = torch.randint(1, 50, (1, 12))
    changed = x.clone()
    changed[0, 0] = (changed[0, 0] % 49) + 1
    with torch.no_grad():
        assert not torch.allclose(model(x).logits[0, -1], model(changed).logits[0, -1])
        apply_windows(model, [1, 1, 1], sinks=0)
        assert torch.equal(model(x).logits[0, -1], model(changed).logits[0, -1])


def test_padding_mask_is_applied():
    """Left padding with explicit positions gives the unpadded logits: the padding mask is not dropped."""
    model = apply_windows(tiny_model(), [4, None, 2], sinks=1)
    x = torch.randint(1, 50, (1, 10))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], dim=1)
    positions = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.arange(10)[None]], dim=1)
    with torch.no_grad():
        plain = model(x).logits
        out = model(padded, attention_mask=mask, position_ids=positions).logits[:, 3:]
    # Sinks count absolute positions of the padded sequence, so compare against the reference for that input.
    with torch.no_grad():
        ref = reference_logits(model, [4, None, 2], 1, padded, attention_mask=mask, position_ids=positions)[:, 3:]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    apply_windows(model, [4, None, 2], sinks=0)
    with torch.no_grad():
        plain = model(x).logits
        out = model(padded, attention_mask=mask, position_ids=positions).logits[:, 3:]
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_keeps_windows(tmp_path):
    model = apply_windows(tiny_model(), [3, None, 1], sinks=2)
    x = torch.randint(1, 50, (1, 16))
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    assert loaded.config.layer_windows == [3, None, 1] and loaded.config.attention_sinks == 2
    assert loaded.config._attn_implementation == "lmask"
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


def test_full_windows_are_plain_gpt2():
    model = tiny_model()
    x = torch.randint(1, 50, (2, 17))
    with torch.no_grad():
        ours = apply_windows(model, [None] * 3)(x).logits
        model.set_attn_implementation("eager")
        eager = model(x).logits
    torch.testing.assert_close(ours, eager, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "windows, sinks, message", [([1, 1], 0, "n_layer=3"), ([1, 0, 1], 0, r"windows\[1\]"), ([1, 1, 1], -1, "sinks")]
)
def test_apply_windows_rejects_bad_input(windows, sinks, message):
    with pytest.raises(ValueError, match=message):
        apply_windows(tiny_model(), windows, sinks)


def test_sinusoidal_position_init():
    config = scratch_config(
        vocab_size=50, n_layer=2, n_embd=16, n_head=2, n_positions=64, dropout=0.0, bos_token_id=0, eos_token_id=0
    )
    sin = new_model(config, seed=3, position_init="sinusoidal")
    default = new_model(config, seed=3)
    wpe = sin.transformer.wpe.weight.detach()
    assert torch.equal(wpe, sinusoidal_positions(64, 16))
    assert not torch.allclose(default.transformer.wpe.weight, wpe)
    # Only the position table differs: every other weight comes from the same seeded init.
    others = {n: p for n, p in sin.named_parameters() if n != "transformer.wpe.weight"}
    for name, p in default.named_parameters():
        if name != "transformer.wpe.weight":
            assert torch.equal(p, others[name]), name
    with pytest.raises(ValueError, match="position_init"):
        new_model(config, seed=3, position_init="rope")


def test_initializer_range_scales_every_initial_weight():
    """model.initializer_range: the token embeddings, the projections and the sinusoidal table all start at that
    std (the table's RMS), against GPT-2's 0.02; the residual projections keep GPT-2's 1 / sqrt(2 n_layer) factor."""
    kw = dict(
        vocab_size=4096, n_layer=2, n_embd=64, n_head=2, n_positions=256, dropout=0.0, bos_token_id=0, eos_token_id=0
    )
    for std in (0.02, 0.1):
        model = new_model(scratch_config(**kw, initializer_range=std), seed=3, position_init="sinusoidal")
        wte = model.transformer.wte.weight.detach()
        assert abs(float(wte.std()) / std - 1) < 0.02, (std, float(wte.std()))
        assert abs(float(model.transformer.h[0].attn.c_attn.weight.detach().std()) / std - 1) < 0.02
        c_proj = float(model.transformer.h[0].attn.c_proj.weight.detach().std())
        assert abs(c_proj / (std / (2 * 2) ** 0.5) - 1) < 0.05, (std, c_proj)
        wpe = model.transformer.wpe.weight.detach().double()
        assert abs(float(wpe.pow(2).mean().sqrt()) / std - 1) < 1e-6
    assert torch.equal(
        new_model(scratch_config(**kw), seed=3, position_init="sinusoidal").transformer.wpe.weight,
        sinusoidal_positions(256, 64),
    )  # the default is the table of every committed model


def test_sinusoidal_table_is_a_fixed_rotation_per_pair():
    """Independent numpy check: in every (sin, cos) column pair, position i - 1 is one fixed rotation of position i."""
    n_pos, d = 200, 24
    table = sinusoidal_positions(n_pos, d).double().numpy()
    assert table.shape == (n_pos, d)
    for m in range(d // 2):
        pair = table[:, 2 * m : 2 * m + 2]  # [n_pos, 2]
        norms = np.linalg.norm(pair, axis=1)
        np.testing.assert_allclose(norms, 0.02 * 2**0.5, rtol=1e-6)  # points on a circle of radius `scale`
        # Least-squares fit of one 2x2 map R with pair[i - 1] = R @ pair[i] over all i.
        cur, prev = pair[1:], pair[:-1]
        r_t, *_ = np.linalg.lstsq(cur, prev, rcond=None)  # prev = cur @ R^T
        R = r_t.T
        np.testing.assert_allclose(cur @ r_t, prev, atol=1e-6)  # one map fits every position
        np.testing.assert_allclose(R @ R.T, np.eye(2), atol=1e-5)  # it is orthogonal ...
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-5)  # ... and a rotation, not a reflection
        # The angle is the pair's frequency 10000^(-2m/d) (a step back is a rotation by -freq in (sin, cos)).
        angle = np.arctan2(R[1, 0], R[0, 0])
        assert angle == pytest.approx(10000.0 ** (-2 * m / d), abs=1e-5)
    # Position 0 is (sin 0, cos 0) = (0, scale) in every pair.
    np.testing.assert_allclose(table[0, 0::2], 0.0, atol=1e-7)
    np.testing.assert_allclose(table[0, 1::2], 0.02 * 2**0.5, atol=1e-7)
