"""Per-layer attention-window schedules.

A schedule is a small dict from params.yaml (``schedules.<name>``). ``layer_windows`` turns it into one window per
layer: ``None`` is full causal attention, an int ``w`` means query i sees key j iff ``j <= i`` and
(``i - j < w`` or ``j < sinks``); ``w = 1`` is the token itself.

Run ``python -m lmask.schedule`` to print every schedule in params.yaml with its windows, receptive field and
attention-pair fraction at the context length.
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
            raise ValueError(f"{where}.windows has {len(windows)} entries but the model has n_layer={n_layer}")
        for i, w in enumerate(windows):
            if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
                raise ValueError(f"{where}.windows[{i}] must be null or an integer >= 1, got {w!r}")
        return list(windows)

    if kind == "interleaved":
        every = _int_field(spec, "global_every", where, 1)
        window = _int_field(spec, "window", where, 1)
        # Gemma-style: layers every-1, 2*every-1, ... are global, the rest local.
        return [None if (layer + 1) % every == 0 else window for layer in range(n_layer)]

    # progressive
    start_layer = _int_field(spec, "start_layer", where, 0)
    if start_layer >= n_layer:
        raise ValueError(f"{where}.start_layer must be < n_layer={n_layer}, got {start_layer}")
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
        else:  # the seed code's formula: the first windowed layer already has start/2
            w = max(end, start // 2 ** (k + 1))
        windows.append(max(1, int(w)))
    return windows


def validate_schedules(schedules: Any, n_layer: int) -> dict[str, tuple[Windows, int]]:
    """Check every schedule of params.yaml; returns name -> (windows, sinks)."""
    if not isinstance(schedules, dict) or not schedules:
        raise ValueError("schedules must be a non-empty mapping of name -> schedule spec")
    out = {}
    for name, spec in schedules.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"schedules.{name}: names must be letters, digits, '_' or '-' (used in paths)")
        if name == "baseline":
            raise ValueError("schedules.baseline: 'baseline' is reserved for the unmasked model")
        where = f"schedules.{name}"
        out[name] = (layer_windows(spec, n_layer, where), schedule_sinks(spec, where))
    return out


def effective_window(window: int | None, seq_len: int) -> int:
    """A window of at least seq_len keys is full attention at this length."""
    return seq_len if window is None else min(window, seq_len)


def attention_pairs(window: int | None, seq_len: int, sinks: int = 0) -> int:
    """Number of (query, key) pairs one layer computes for a causal sequence of seq_len tokens."""
    w = effective_window(window, seq_len)
    pairs = w * seq_len - w * (w - 1) // 2
    # Sink key j < sinks is outside the window of query i exactly when i - j >= w.
    for j in range(min(sinks, seq_len)):
        pairs += max(0, seq_len - (j + w))
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


def describe(schedules: dict[str, Any], n_layer: int, seq_len: int) -> str:
    """A table of every schedule: windows per layer, receptive field, attention-pair fraction."""
    lines = [f"context {seq_len}, {n_layer} layers ('-' = full attention)"]
    rows = validate_schedules(schedules, n_layer)
    width = max(len(n) for n in rows)
    for name, (windows, sinks) in rows.items():
        shown = " ".join("-" if w is None else str(w) for w in windows)
        lines.append(
            f"{name:<{width}}  [{shown}]  sinks={sinks}  receptive_field={receptive_field(windows, seq_len)}"
            f"  pairs={pair_fraction(windows, seq_len, sinks):.3f}"
        )
    return "\n".join(lines)


__all__ = [
    "attention_pairs",
    "describe",
    "effective_window",
    "layer_windows",
    "pair_fraction",
    "receptive_field",
    "schedule_sinks",
    "validate_schedules",
]

if __name__ == "__main__":
    from lmask.params import load_params

    p = load_params()
    print(describe(p.schedules, p.model.n_layer, p.data.context_length))
