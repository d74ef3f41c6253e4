"""The long-range probe: seeded construction, chance beyond the receptive field, an oracle that can do it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmask.model import apply_windows, new_model, scratch_config
from lmask.probe import (
    ProbeParams,
    chance_ceiling,
    induction_oracle,
    make_probe,
    model_logits_fn,
    probe_params,
    run_probe,
    token_pool,
)
from lmask.schedule import receptive_field

VOCAB = 300
POOL = token_pool(VOCAB, [0])
CFG = ProbeParams(n_sequences=16, span=6, distances=[8, 24, 40], min_prefix=8, batch_size=8)


def tiny_gpt2(windows: list[int | None]) -> torch.nn.Module:
    config = scratch_config(VOCAB, len(windows), 32, 2, 64, 0.0, 0, 0)
    return apply_windows(new_model(config, seed=0), windows).eval()


def test_probe_is_seeded_and_well_formed():
    a, second = make_probe(24, CFG, POOL, seed=7)
    b, _ = make_probe(24, CFG, POOL, seed=7)
    c, _ = make_probe(24, CFG, POOL, seed=8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == (CFG.n_sequences, CFG.min_prefix + 24 + CFG.span)
    assert second == CFG.min_prefix + 24
    assert np.array_equal(a[:, second:], a[:, CFG.min_prefix : CFG.min_prefix + CFG.span])
    assert not np.isin(a, [0]).any(), "special tokens must not appear in probe sequences"
    # Adding a distance leaves the others' sequences unchanged (seeded per distance).
    other = ProbeParams(**{**CFG.__dict__, "distances": [8, 16, 24, 40]})
    assert np.array_equal(make_probe(24, other, POOL, seed=7)[0], a)


def test_oracle_succeeds_within_reach_and_is_at_chance_beyond():
    near = run_probe(induction_oracle(64, VOCAB), CFG, POOL, seed=1, receptive_field=64)
    # Not 1.0: a filler token can repeat the query token between the copies and mislead the oracle.
    assert min(near["accuracy_by_distance"].values()) >= 0.6
    assert near["beyond_receptive_field_at_chance"]
    short = run_probe(induction_oracle(16, VOCAB), CFG, POOL, seed=1, receptive_field=16)
    total = CFG.n_sequences * (CFG.span - 1)
    assert short["accuracy_by_distance"]["8"] >= 0.6  # within reach
    for d in ("24", "40"):  # beyond reach
        assert short["accuracy_by_distance"][d] <= chance_ceiling(total, short["chance"])
    assert short["distances_beyond_receptive_field"] == [24, 40]
    assert short["beyond_receptive_field_at_chance"]


def test_flag_catches_a_leak():
    # A full-reach oracle claimed to have a short receptive field beats chance beyond it: the flag must say so.
    leak = run_probe(induction_oracle(64, VOCAB), CFG, POOL, seed=1, receptive_field=16)
    assert not leak["beyond_receptive_field_at_chance"]


def test_windowed_model_cannot_see_beyond_its_receptive_field():
    """With receptive field < d, the first copy cannot influence the predictions: logits are unchanged."""
    windows = [3, 3, 3, 3]  # reach 1 + 4 * 2 = 9 positions
    rf = receptive_field(windows, 64)
    assert rf == 9
    d = 24
    x, second = make_probe(d, CFG, POOL, seed=3)
    y = x.copy()
    y[:, CFG.min_prefix : CFG.min_prefix + CFG.span] = POOL[: CFG.span]  # replace the first copy
    torch.manual_seed(0)
    model = tiny_gpt2(windows)
    with torch.no_grad():
        lx = model(torch.from_numpy(x)).logits[:, second:]
        ly = model(torch.from_numpy(y)).logits[:, second:]
    torch.testing.assert_close(lx, ly, atol=1e-5, rtol=0)
    result = run_probe(model_logits_fn(model, torch.device("cpu")), CFG, POOL, seed=3, receptive_field=rf)
    assert result["distances_beyond_receptive_field"] == [24, 40]
    assert result["beyond_receptive_field_at_chance"]
    # A full-attention model does see the first copy (so the test above is not vacuous).
    full = tiny_gpt2([None] * 4)
    with torch.no_grad():
        fx = full(torch.from_numpy(x)).logits[:, second:]
        fy = full(torch.from_numpy(y)).logits[:, second:]
    assert (fx - fy).abs().max() > 1e-4


def test_probe_params_validation():
    assert probe_params({"n_sequences": 2}, context=256).n_sequences == 2
    with pytest.raises(ValueError, match=r"probe\.n_seqs"):
        probe_params({"n_seqs": 2})
    with pytest.raises(ValueError, match="does not fit the context"):
        probe_params({"distances": [8, 250]}, context=256)
    with pytest.raises(ValueError, match="overlap"):
        probe_params({"distances": [4], "span": 8})
