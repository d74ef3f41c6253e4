"""Schedules: exact windows for every type, the seed's four schedules in both readings, validation errors."""

import pytest

from lmask.schedule import (
    attention_pairs,
    layer_windows,
    pair_fraction,
    receptive_field,
    validate_schedules,
)

F = None  # full attention

SEED = {
    "full": {"type": "none"},
    "half": {"type": "progressive", "start_layer": 6, "start_window": 512, "end_window": 16},
    "quarter": {"type": "progressive", "start_layer": 3, "start_window": 1024, "end_window": 4},
    "aggressive": {"type": "progressive", "start_layer": 1, "start_window": 1024, "end_window": 1},
}

# README reading: geometric interpolation with exact endpoints (halves each layer for the seed's schedules).
GEOMETRIC = {
    "full": [F] * 12,
    "half": [F] * 6 + [512, 256, 128, 64, 32, 16],
    "quarter": [F] * 3 + [1024, 512, 256, 128, 64, 32, 16, 8, 4],
    "aggressive": [F] + [1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1],
}
# Seed code reading: w_l = max(end, start // 2^(l - start_layer + 1)).
HALVING = {
    "full": [F] * 12,
    "half": [F] * 6 + [256, 128, 64, 32, 16, 16],
    "quarter": [F] * 3 + [512, 256, 128, 64, 32, 16, 8, 4, 4],
    "aggressive": [F] + [512, 256, 128, 64, 32, 16, 8, 4, 2, 1, 1],
}


@pytest.mark.parametrize("name", list(SEED))
def test_seed_schedules_geometric(name):
    assert layer_windows(SEED[name], 12) == GEOMETRIC[name]


@pytest.mark.parametrize("name", list(SEED))
def test_seed_schedules_halving(name):
    spec = dict(SEED[name])
    if spec["type"] == "progressive":
        spec["interpolation"] = "halving"
    assert layer_windows(spec, 12) == HALVING[name]


def test_linear_and_increasing():
    spec = {"type": "progressive", "start_layer": 8, "start_window": 10, "end_window": 40, "interpolation": "linear"}
    assert layer_windows(spec, 12) == [F] * 8 + [10, 20, 30, 40]
    spec = {"type": "progressive", "start_layer": 9, "start_window": 16, "end_window": 64}
    assert layer_windows(spec, 12) == [F] * 9 + [16, 32, 64]


def test_single_windowed_layer_takes_start_window():
    spec = {"type": "progressive", "start_layer": 3, "start_window": 8, "end_window": 2}
    assert layer_windows(spec, 4) == [F, F, F, 8]


def test_explicit_and_interleaved():
    assert layer_windows({"type": "explicit", "windows": [4, None, 1]}, 3) == [4, F, 1]
    assert layer_windows({"type": "interleaved", "global_every": 3, "window": 8}, 7) == [8, 8, F, 8, 8, F, 8]
    assert layer_windows({"type": "interleaved", "global_every": 1, "window": 8}, 3) == [F, F, F]


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"type": "progressive", "start_layer": 6, "start_window": 512, "end_windw": 16}, "end_windw"),
        ({"type": "progressive", "start_layer": 12, "start_window": 8, "end_window": 4}, "start_layer"),
        ({"type": "progressive", "start_layer": -1, "start_window": 8, "end_window": 4}, "start_layer"),
        ({"type": "progressive", "start_layer": 1, "start_window": 0, "end_window": 4}, "start_window"),
        ({"type": "progressive", "start_layer": 1, "start_window": 8}, "end_window"),
        (
            {"type": "progressive", "start_layer": 1, "start_window": 8, "end_window": 4, "interpolation": "cubic"},
            "interpolation",
        ),
        (
            {"type": "progressive", "start_layer": 1, "start_window": 4, "end_window": 8, "interpolation": "halving"},
            "halving",
        ),
        ({"type": "explicit", "windows": [1, 2]}, "windows"),
        ({"type": "explicit", "windows": [1] * 11 + [0]}, "windows[11]"),
        ({"type": "interleaved", "global_every": 0, "window": 8}, "global_every"),
        ({"type": "interleaved", "global_every": 2}, "window"),
        ({"type": "none", "sinks": -1}, "sinks"),
        ({"type": "none", "window": 3}, "window"),
        ({"type": "sparse"}, "type"),
        ({"type": "progressive", "start_layer": 1.5, "start_window": 8, "end_window": 4}, "start_layer"),
    ],
)
def test_validation_names_the_field(spec, field):
    with pytest.raises(ValueError) as err:
        validate_schedules({"bad": spec}, 12)
    assert field in str(err.value) and "schedules.bad" in str(err.value)


def test_reserved_and_empty_names():
    with pytest.raises(ValueError, match="baseline"):
        validate_schedules({"baseline": {"type": "none"}}, 12)
    with pytest.raises(ValueError, match="non-empty"):
        validate_schedules({}, 12)


def test_attention_pairs_match_brute_force():
    for t in (1, 7, 33):
        for w in (None, 1, 3, 33, 100):
            for sinks in (0, 1, 4):
                brute = sum(1 for i in range(t) for j in range(i + 1) if w is None or i - j < w or j < sinks)
                assert attention_pairs(w, t, sinks) == brute, (t, w, sinks)


def test_pair_fraction_and_receptive_field():
    windows = GEOMETRIC["half"]
    assert pair_fraction([F] * 12, 256) == 1.0
    assert pair_fraction(windows, 256) == pytest.approx(313848 / 394752)
    assert receptive_field(windows, 256) == 256  # full layers below see everything
    assert receptive_field([4, 4, 2], 256) == 1 + 3 + 3 + 1
    assert receptive_field([1] * 5, 256) == 1


def test_default_direction_schedules_cost_no_more_than_half():
    """The issue asks the increasing and interleaved schedules to spend no more attention than half."""
    from lmask.params import load_params

    p = load_params()
    rows = validate_schedules(p.schedules, p.model.n_layer)
    half = pair_fraction(*rows["half"][:1], p.data.context_length)
    for name in ("increasing", "interleaved"):
        assert pair_fraction(rows[name][0], p.data.context_length, rows[name][1]) <= half + 1e-12
