"""Per-layer attention windows: the window rule, schedule specs, and what a schedule costs.

The rule, written once (``visible``) and used by every mask in lmask (the dense reference mask, the blocked kernel's
slab mask, the FlexAttention ``mask_mod``, the KV cache's pruning and the pair counts):

    query i sees key j  iff  j <= i  and  (i - j < window  or  j < sinks)

``window=None`` is full causal attention; ``window=1`` is the token itself. A schedule (``schedules.<name>`` in
params.yaml) gives one window per layer; ``layer_windows`` turns a spec into that list. This module is pure Python
(no torch), so validation and reports stay fast.
"""

from __future__ import annotations

from typing import Any

Windows = list[int | None]

SCHEDULE_KEYS: dict[str, set[str]] = {
    "none": {"type", "sinks"},
    "progressive": {"type", "start_layer", "start_window", "end_window", "interpolation", "sinks"},
    "explicit": {"type", "windows", "sinks"},
    "interleaved": {"type", "global_every", "window", "sinks"},
}
INTERPOLATIONS = ("geometric", "linear", "halving")


def visible(q_pos: Any, k_pos: Any, window: int | None, sinks: Any = 0) -> Any:
    """The window rule. Works elementwise on ints, numpy arrays and torch tensors (window/sinks may be 0-d tensors)."""
    causal = k_pos <= q_pos
    if window is None:
        return causal
    return causal & ((q_pos - k_pos < window) | (k_pos < sinks))


def check_windows(windows: list, where: str, none: str = "null") -> None:
    """Every entry is a window: ``None`` (full attention) or an integer >= 1, not a bool. ``ValueError`` names the
    first bad entry as ``where[i]``; ``none`` is how the caller's user writes None (params.yaml: null)."""
    for i, w in enumerate(windows):
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"{where}[{i}] must be {none} or an integer >= 1, got {w!r}")


def config_windows(config: Any) -> tuple[Windows, int]:
    """(window per layer, sinks) of a model config (``lmask.model.apply_windows`` writes them): the one place that
    reads them back. A config without windows (a plain GPT-2) is full attention in every layer, without sinks. The
    list is the config's own, not a copy."""
    return getattr(config, "layer_windows", None) or [None] * config.n_layer, getattr(config, "attention_sinks", 0)


def _int_field(spec: dict, key: str, where: str, minimum: int) -> int:
    if key not in spec:
        raise ValueError(f"{where}.{key} is required for type '{spec['type']}'")
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}.{key} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}.{key} must be >= {minimum}, got {value}")
    return value


def schedule_sinks(spec: dict[str, Any], where: str = "schedule") -> int:
    """Number of always-visible leading positions (StreamingLLM sinks) of a schedule; 0 when absent."""
    return _int_field(spec, "sinks", where, 0) if "sinks" in spec else 0


def layer_windows(spec: dict[str, Any], n_layer: int, where: str = "schedule") -> Windows:
    """Windows per layer (``None`` = full attention) for a schedule spec; ``ValueError`` names the bad field."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a mapping with a 'type', got {spec!r}")
    kind = spec.get("type")
    if kind not in SCHEDULE_KEYS:
        raise ValueError(f"{where}.type must be one of {sorted(SCHEDULE_KEYS)}, got {kind!r}")
    unknown = sorted(set(spec) - SCHEDULE_KEYS[kind])
    if unknown:
        allowed = ", ".join(sorted(SCHEDULE_KEYS[kind]))
        raise ValueError(f"{where}.{unknown[0]} is not a field of type '{kind}' (allowed: {allowed})")
    schedule_sinks(spec, where)

    if kind == "none":
        return [None] * n_layer

    if kind == "explicit":
        windows = spec.get("windows")
        if not isinstance(windows, list):
            raise ValueError(f"{where}.windows must be a list of {n_layer} windows (null = full)")
        if len(windows) != n_layer:
            raise ValueError(f"{where}.windows has {len(windows)} entries but model.n_layer is {n_layer}")
        check_windows(windows, f"{where}.windows")
        return list(windows)

    if kind == "interleaved":
        every = _int_field(spec, "global_every", where, 1)
        window = _int_field(spec, "window", where, 1)
        # Gemma-style: layers every-1, 2*every-1, ... are global, the rest local.
        return [None if (layer + 1) % every == 0 else window for layer in range(n_layer)]

    # progressive
    start_layer = _int_field(spec, "start_layer", where, 0)
    if start_layer >= n_layer:
        raise ValueError(f"{where}.start_layer must be < model.n_layer ({n_layer}), got {start_layer}")
    start = _int_field(spec, "start_window", where, 1)
    end = _int_field(spec, "end_window", where, 1)
    interpolation = spec.get("interpolation", "geometric")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"{where}.interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}")
    if interpolation == "halving" and start < end:
        raise ValueError(f"{where}: interpolation 'halving' needs start_window >= end_window ({start} < {end})")

    span = n_layer - 1 - start_layer  # layers after the first windowed one
    windows: Windows = [None] * start_layer
    for k in range(n_layer - start_layer):
        frac = k / span if span else 0.0
        if interpolation == "geometric":
            w = round(start * (end / start) ** frac)
        elif interpolation == "linear":
            w = round(start + (end - start) * frac)
        else:  # the original project's formula: the first windowed layer already has start/2
            w = max(end, start // 2 ** (k + 1))
        windows.append(max(1, int(w)))
    return windows


def effective_window(window: int | None, seq_len: int) -> int:
    """A window of at least seq_len keys is full attention at this length."""
    return seq_len if window is None else min(window, seq_len)


def visible_keys(q_pos: int, window: int | None, sinks: int = 0) -> int:
    """How many keys query ``q_pos`` sees under ``visible`` (closed form; tests check it against the rule)."""
    if window is None or window > q_pos:
        return q_pos + 1
    return window + min(sinks, q_pos - window + 1)


def attention_pairs(window: int | None, seq_len: int, sinks: int = 0) -> int:
    """(query, key) pairs one layer attends to over a causal sequence of ``seq_len`` tokens."""
    w = effective_window(window, seq_len)
    pairs = w * seq_len - w * (w - 1) // 2  # queries i < w see i + 1 keys, the rest w
    if window is not None and sinks:
        # Queries i >= w also see min(sinks, i - w + 1) sink keys outside their window.
        pairs += sum(min(sinks, i - w + 1) for i in range(w, seq_len))
    return pairs


def pair_fraction(windows: Windows, seq_len: int, sinks: int = 0) -> float:
    """Attention pairs of the schedule over those of full causal attention in every layer."""
    full = len(windows) * seq_len * (seq_len + 1) // 2
    return sum(attention_pairs(w, seq_len, sinks) for w in windows) / full


def receptive_field(windows: Windows, seq_len: int) -> int:
    """How many positions back (itself included) the last layer's output at a position can depend on.

    Each layer with window w extends the reach by w - 1 positions; any full layer reaches the whole context.
    Sinks add the first few positions on top of this (not counted here).
    """
    reach = 1
    for w in windows:
        if w is None or w >= seq_len:
            return seq_len
        reach += w - 1
    return min(reach, seq_len)


def windowed_layers(windows: Windows, seq_len: int) -> list[int]:
    """Layers whose window is smaller than the context, i.e. that really restrict attention at ``seq_len``."""
    return [i for i, w in enumerate(windows) if w is not None and w < seq_len]


def describe(schedules: dict[str, tuple[Windows, int]], seq_len: int) -> str:
    """A table of resolved schedules: windows per layer, receptive field, attention-pair fraction."""
    n_layer = len(next(iter(schedules.values()))[0]) if schedules else 0
    lines = [f"context {seq_len}, {n_layer} layers ('-' = full attention)"]
    width = max((len(n) for n in schedules), default=0)
    for name, (windows, sinks) in schedules.items():
        shown = " ".join("-" if w is None else str(w) for w in windows)
        lines.append(
            f"{name:<{width}}  [{shown}]  sinks={sinks}  windowed_layers={len(windowed_layers(windows, seq_len))}"
            f"  receptive_field={receptive_field(windows, seq_len)}  pairs={pair_fraction(windows, seq_len, sinks):.3f}"
        )
    return "\n".join(lines)


__all__ = [
    "attention_pairs",
    "check_windows",
    "config_windows",
    "describe",
    "effective_window",
    "layer_windows",
    "pair_fraction",
    "receptive_field",
    "schedule_sinks",
    "visible",
    "visible_keys",
    "windowed_layers",
]
