"""Schedules: the window rule against brute force, exact windows for every type, the original schedules in both
readings, and validation errors that name the field."""

from pathlib import Path

import numpy as np
import pytest

from lmask.params import ParamsError, load_params, resolve_schedules
from lmask.schedule import (
    attention_pairs,
    describe,
    layer_windows,
    pair_fraction,
    receptive_field,
    visible,
    visible_keys,
    windowed_layers,
)

ROOT = Path(__file__).resolve().parents[1]
F = None  # full attention


def rule(i: int, j: int, window: int | None, sinks: int) -> bool:
    """The window rule written out independently: causal, and inside the window or a sink."""
    if j > i:
        return False
    if window is None:
        return True
    return (i - j) < window or j < sinks


# (window, sinks, T): full, the token itself, sinks larger than the window, window larger than T, no sinks.
RULE_CASES = [
    (None, 0, 9),
    (None, 3, 9),
    (1, 0, 9),
    (1, 2, 11),
    (2, 5, 12),
    (3, 0, 17),
    (4, 1, 17),
    (7, 7, 20),
    (30, 2, 12),
    (5, 40, 12),
]


@pytest.mark.parametrize("window, sinks, T", RULE_CASES)
def test_visible_equals_brute_force_on_arrays(window, sinks, T):
    want = np.array([[rule(i, j, window, sinks) for j in range(T)] for i in range(T)])
    q = np.arange(T)[:, None]
    k = np.arange(T)[None, :]
    got = visible(q, k, window, sinks)
    assert got.dtype == bool and got.shape == (T, T)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("window, sinks, T", RULE_CASES)
def test_visible_equals_brute_force_on_ints_and_tensors(window, sinks, T):
    torch = pytest.importorskip("torch")
    for i in range(T):
        for j in range(T):
            assert bool(visible(i, j, window, sinks)) == rule(i, j, window, sinks), (i, j)
    # 0-d tensors for window/sinks, as the FlexAttention mask_mod passes them.
    q = torch.arange(T)[:, None]
    k = torch.arange(T)[None, :]
    w = None if window is None else torch.tensor(window)
    got = visible(q, k, w, torch.tensor(sinks))
    want = torch.tensor([[rule(i, j, window, sinks) for j in range(T)] for i in range(T)])
    assert torch.equal(got, want)


@pytest.mark.parametrize("window, sinks, T", RULE_CASES)
def test_visible_keys_and_pairs_equal_brute_force_counts(window, sinks, T):
    per_query = [sum(rule(i, j, window, sinks) for j in range(T)) for i in range(T)]
    assert [visible_keys(i, window, sinks) for i in range(T)] == per_query
    assert attention_pairs(window, T, sinks) == sum(per_query)


def test_attention_pairs_match_brute_force_grid():
    for t in (1, 2, 7, 33):
        for w in (None, 1, 2, 3, 33, 100):
            for sinks in (0, 1, 4, 50):
                brute = sum(rule(i, j, w, sinks) for i in range(t) for j in range(t))
                assert attention_pairs(w, t, sinks) == brute, (t, w, sinks)


def test_pair_fraction_equals_brute_force():
    windows, T, sinks = [None, 5, 1, 3], 21, 2
    full = len(windows) * sum(rule(i, j, None, 0) for i in range(T) for j in range(T))
    part = sum(rule(i, j, w, sinks) for w in windows for i in range(T) for j in range(T))
    assert pair_fraction(windows, T, sinks) == pytest.approx(part / full, rel=1e-12)


SEED = {
    "full": {"type": "none"},
    "half": {"type": "progressive", "start_layer": 6, "start_window": 512, "end_window": 16},
    "quarter": {"type": "progressive", "start_layer": 3, "start_window": 1024, "end_window": 4},
    "aggressive": {"type": "progressive", "start_layer": 1, "start_window": 1024, "end_window": 1},
}

# README reading: geometric interpolation with exact endpoints (halves each layer for the original project's schedules).
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


def test_seed_schedules_resolve_through_params_in_both_readings():
    geometric = resolve_schedules(SEED, 12)
    assert {n: s.windows for n, s in geometric.items()} == GEOMETRIC
    assert all(s.sinks == 0 for s in geometric.values())
    assert geometric["full"].is_full and not geometric["half"].is_full
    halving = {n: {**s, "interpolation": "halving"} if s["type"] == "progressive" else s for n, s in SEED.items()}
    assert {n: s.windows for n, s in resolve_schedules(halving, 12).items()} == HALVING


@pytest.fixture(scope="module")
def with_progressions(tmp_path_factory):
    """params.yaml with presets/progressions.yaml merged in (quarter, increasing, interleaved added)."""
    import shutil

    from tools.preset import apply_preset

    path = tmp_path_factory.mktemp("progressions") / "params.yaml"
    shutil.copy2(ROOT / "params.yaml", path)
    apply_preset(ROOT / "presets" / "progressions.yaml", path)
    return load_params(path)


def test_default_params_keep_the_seed_windows(with_progressions):
    p = load_params(ROOT / "params.yaml")
    assert set(p.schedules) == {"full", "half", "aggressive", "local"}  # local: Q1's negative control
    for name in ("full", "half", "aggressive"):
        assert p.schedules[name].windows == GEOMETRIC[name], name
    assert p.schedules["local"].windows == [8] * 12
    q = with_progressions
    for name in ("full", "half", "quarter", "aggressive"):
        assert q.schedules[name].windows == GEOMETRIC[name], name
    assert q.schedules["increasing"].windows == GEOMETRIC["half"][6:][::-1] + [None] * 6  # half's, mirrored


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
        ({"type": "explicit", "windows": ["8"] + [1] * 11}, "windows[0]"),
        ({"type": "interleaved", "global_every": 0, "window": 8}, "global_every"),
        ({"type": "interleaved", "global_every": 2}, "window"),
        ({"type": "none", "sinks": -1}, "sinks"),
        ({"type": "none", "window": 3}, "window"),
        ({"type": "sparse"}, "type"),
        ({"type": "progressive", "start_layer": 1.5, "start_window": 8, "end_window": 4}, "start_layer"),
        ("progressive", "schedules.bad"),
    ],
)
def test_validation_names_the_field(spec, field):
    with pytest.raises(ParamsError) as err:
        resolve_schedules({"ok": {"type": "none"}, "bad": spec}, 12)
    assert field in str(err.value) and "schedules.bad" in str(err.value)


def test_reserved_bad_and_empty_names():
    with pytest.raises(ParamsError, match=r"schedules\.baseline.*reserved"):
        resolve_schedules({"baseline": {"type": "none"}}, 12)
    for name in ("half-window", "a b", "../x", "", 3):
        with pytest.raises(ParamsError, match=r"schedules\." + str(name).replace(".", r"\.")):
            resolve_schedules({"ok": {"type": "none"}, name: {"type": "none"}}, 12)
    for empty in ({}, None, [], [{"type": "none"}]):
        with pytest.raises(ParamsError, match="non-empty"):
            resolve_schedules(empty, 12)
    # Letters, digits and underscores are fine.
    assert list(resolve_schedules({"w_16": {"type": "none"}, "B2": {"type": "none"}}, 12)) == ["w_16", "B2"]


def test_pair_fraction_and_receptive_field():
    windows = GEOMETRIC["half"]
    assert pair_fraction([F] * 12, 256) == 1.0
    assert pair_fraction(windows, 256) == pytest.approx(313848 / 394752)
    assert receptive_field(windows, 256) == 256  # full layers below see everything
    assert receptive_field([4, 4, 2], 256) == 1 + 3 + 3 + 1
    assert receptive_field([1] * 5, 256) == 1
    assert receptive_field([300, 2], 256) == 256  # a window >= the context is full


def test_receptive_field_equals_brute_force_reachability():
    """Propagate "depends on" sets through the layers with the rule itself."""
    T = 40
    for windows in ([4, 4, 2], [1, 1], [3, 7, 2, 5], [2] * 10, [8, None, 2]):
        reach = {i: {i} for i in range(T)}  # positions each position's current state depends on
        for w in windows:
            reach = {i: set().union(*(reach[j] for j in range(T) if rule(i, j, w, 0))) for i in range(T)}
        last = T - 1
        assert receptive_field(windows, T) == last - min(reach[last]) + 1, windows


def test_windowed_layers_and_describe():
    assert windowed_layers([F, 1024, 512, 1], 1024) == [2, 3]
    text = describe({"full": ([F, F], 0), "w": ([8, F], 2)}, 64)
    lines = text.splitlines()
    assert lines[0] == "context 64, 2 layers ('-' = full attention)"
    assert "[- -]" in lines[1] and "pairs=1.000" in lines[1]
    assert lines[2].startswith("w ") and "[8 -]" in lines[2] and "sinks=2" in lines[2]
    assert f"pairs={pair_fraction([8, F], 64, 2):.3f}" in lines[2]


def test_progressions_cost_about_as_much_as_half(with_progressions):
    """increasing mirrors half's windows (equal pairs); interleaved is tuned to half's pairs within 1%."""
    p = with_progressions
    T = p.data.context_length

    def cost(name):
        s = p.schedules[name]
        return pair_fraction(s.windows, T, s.sinks)

    assert cost("increasing") == pytest.approx(cost("half"), rel=1e-12)
    assert cost("interleaved") == pytest.approx(cost("half"), rel=0.01)
