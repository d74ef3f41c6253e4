"""The report's plotly figures, each from plain inputs (summary records, data frames, benchmark records).

Every quality gap is drawn with its 95 % interval; nothing here computes a statistic.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lmask.answers import pareto
from lmask.summary import BASELINE, EVAL_DOMAINS

Records = dict[str, dict[str, Any]]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, height=height, template="plotly_white", margin={"t": 60, "l": 60, "r": 20})
    return fig


def _err(lo: float, value: float, hi: float) -> dict[str, Any]:
    return {"type": "data", "symmetric": False, "array": [hi - value], "arrayminus": [value - lo]}


def _errs(values: list[float], cis: list[list[float] | None]) -> dict[str, Any]:
    """Asymmetric error bars; an estimate without an interval (too few documents) gets none."""
    cis = [ci or [v, v] for v, ci in zip(values, cis, strict=True)]
    return {
        "type": "data",
        "symmetric": False,
        "array": [hi - v for v, (_, hi) in zip(values, cis, strict=True)],
        "arrayminus": [v - lo for v, (lo, _) in zip(values, cis, strict=True)],
    }


def schedule_figure(records: Records, context: int) -> go.Figure:
    """Window per layer per schedule, log-coloured; 'full' where the window covers the context."""
    names = [n for n in records if n != BASELINE]
    z, text = [], []
    for name in names:
        ws, sinks = records[name]["windows"], records[name]["sinks"]
        z.append([math.log2(context if w is None else min(w, context)) for w in ws])
        text.append(
            [("full" if w is None or w >= context else str(w)) + (f"+{sinks}s" if sinks and w else "") for w in ws]
        )
    n_layer = len(z[0]) if z else 0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"L{i}" for i in range(n_layer)],
            y=names,
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": "log2 window"},
            hovertemplate="%{y} layer %{x}: window %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, f"Attention window per layer (context {context}; 'Ns' = N sink tokens)", 120 + 40 * len(names))


def quality_cost_figure(records: Records, speedups: dict[str, float]) -> go.Figure:
    """Gap to the full control (95% CI) against attention pairs and against the measured speedup; the Pareto front
    (fewest pairs for the smallest gap) is the dashed line. The full control is the point (1, 0), speedup 1."""
    names = [n for n in records if "vs_full_pct" in records[n]]
    full = next((n for n in records if n != BASELINE and "vs_full_pct" not in records[n]), None)
    points = {n: (records[n]["attention_pairs"], records[n]["vs_full_pct"]) for n in names}
    if full is not None:
        points[full] = (1.0, 0.0)
        fig_full = go.Scatter(
            x=[1.0],
            y=[0.0],
            mode="markers+text",
            text=[full],
            textposition="top center",
            name=full,
            marker={"size": 11, "color": "#000", "symbol": "diamond"},
        )
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "cost: attention pairs (fraction of full)",
            "benefit: measured speedup vs full (largest T, fwd)",
        ),
    )
    for i, name in enumerate(names):
        r = records[name]
        y = r["vs_full_pct"]
        lo, hi = r["vs_full_pct_ci95"] or (y, y)
        for col, x in ((1, r["attention_pairs"]), (2, speedups.get(name))):
            if x is None:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[x],
                    y=[y],
                    error_y=_err(lo, y, hi),
                    mode="markers+text",
                    text=[name],
                    textposition="top center",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    marker={"size": 11, "color": color(i)},
                ),
                row=1,
                col=col,
            )
    if full is not None:
        fig.add_trace(fig_full, row=1, col=1)
        fig.add_trace(fig_full.update(x=[1.0], showlegend=False), row=1, col=2)
    front = pareto(points)
    if len(front) > 1:
        fig.add_trace(
            go.Scatter(
                x=[points[n][0] for n in front],
                y=[points[n][1] for n in front],
                mode="lines",
                line={"dash": "dash", "color": "#444"},
                name="Pareto front",
            ),
            row=1,
            col=1,
        )
    fig.add_hline(y=0, line_dash="dot")
    fig.update_yaxes(title="test perplexity vs full control (%)", row=1, col=1)
    fig.update_xaxes(title="attention pairs", row=1, col=1)
    fig.update_xaxes(title="speedup (x)", row=1, col=2)
    return _layout(fig, "Quality vs cost, fine-tuned (error bars: 95% CI over runs and documents)", 460)


def copy_figure(records: Records) -> go.Figure:
    """Copy gain vs distance: the baselines (the Q1 gate), and each schedule zero-shot (dashed) and fine-tuned."""
    fig = go.Figure()

    def add(gains: dict[str, dict], name: str, c: str, dash: str = "solid") -> None:
        d = [int(k) for k in gains]
        v = [gains[k]["value"] for k in gains]
        fig.add_trace(
            go.Scatter(
                x=d,
                y=v,
                mode="lines+markers",
                name=name,
                line={"color": c, "dash": dash},
                error_y=_errs(v, [gains[k]["ci95"] for k in gains]),
            )
        )

    add(records[BASELINE]["copy_loss_drop"], BASELINE, "#000")
    for i, name in enumerate(n for n in records if n != BASELINE):
        add(records[name]["copy_gain_zero_shot"], f"{name} zero-shot", color(i), "dash")
        if "copy_gain" in records[name]:
            add(records[name]["copy_gain"], f"{name} fine-tuned", color(i))
    fig.add_hline(y=0, line_dash="dot")
    fig.update_xaxes(title="distance d between the two occurrences (tokens)", type="log")
    fig.update_yaxes(title="copy gain (nats)")
    return _layout(fig, "Copy gain: loss drop on a natural span's second occurrence bought by its first (95% CI)", 480)


def domains_figure(records: Records) -> go.Figure:
    """Gap to the full control per evaluation domain, with intervals."""
    names = [n for n in records if "domains" in records[n]]
    fig = go.Figure()
    for i, d in enumerate(EVAL_DOMAINS):
        g = [records[n]["domains"][d]["vs_full"] for n in names]
        fig.add_trace(
            go.Bar(
                x=names,
                y=[x["pct"] for x in g],
                name=d,
                marker_color=color(i),
                error_y=_errs([x["pct"] for x in g], [x["pct_ci95"] for x in g]),
            )
        )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="perplexity vs full control (%)")
    return _layout(fig, "Which text pays for windows: gap to full per domain (95% CI)")


def lines_figure(df: pd.DataFrame, x: str, y: str, title: str, xlabel: str, ylabel: str) -> go.Figure:
    fig = go.Figure()
    for name, part in df.groupby("model", sort=False):
        fig.add_trace(
            go.Scatter(x=part[x], y=part[y], mode="lines+markers" if len(part) < 40 else "lines", name=str(name))
        )
    fig.update_xaxes(title=xlabel)
    fig.update_yaxes(title=ylabel)
    return _layout(fig, title)


def attention_figure(rows: pd.DataFrame) -> go.Figure:
    by_layer = (
        rows.groupby(["model", "layer"], sort=False)[["entropy", "mean_distance", "sink_mass"]].mean().reset_index()
    )
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=("entropy (nats)", "mean distance (tokens)", "mass on first 4 tokens")
    )
    for i, (name, part) in enumerate(by_layer.groupby("model", sort=False)):
        for col, key in enumerate(("entropy", "mean_distance", "sink_mass"), start=1):
            fig.add_trace(
                go.Scatter(
                    x=part["layer"],
                    y=part[key],
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=col == 1,
                    line={"color": color(i)},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title="layer")
    return _layout(fig, "Attention by layer (head average, test blocks)")


def heatmap_figure(heatmaps: dict[str, dict[str, list]]) -> go.Figure:
    """Head-averaged attention of the first test block for a few layers; a dropdown picks the model."""
    models = list(heatmaps)
    layers = list(heatmaps[models[0]]) if models else []
    fig = make_subplots(rows=1, cols=max(1, len(layers)), subplot_titles=[f"layer {ly}" for ly in layers])
    for mi, name in enumerate(models):
        for li, layer in enumerate(layers):
            fig.add_trace(
                go.Heatmap(
                    z=heatmaps[name][layer],
                    colorscale="Blues",
                    showscale=False,
                    visible=mi == 0,
                    name=name,
                    hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>",
                ),
                row=1,
                col=li + 1,
            )
    buttons = [
        {
            "label": name,
            "method": "update",
            "args": [{"visible": [m == mi for m in range(len(models)) for _ in layers]}],
        }
        for mi, name in enumerate(models)
    ]
    fig.update_layout(updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.25, "xanchor": "right"}])
    fig.update_yaxes(autorange="reversed", title="query")
    fig.update_xaxes(title="key")
    return _layout(fig, "Attention heatmaps (first test block, head average)", 460)


def speedup_figure(speed: pd.DataFrame) -> go.Figure:
    """Measured speedup vs T per schedule and mode, with the FLOP ceiling dashed."""
    modes = list(dict.fromkeys(speed["mode"])) if len(speed) else []
    fig = make_subplots(rows=1, cols=max(1, len(modes)), subplot_titles=modes)
    for col, mode in enumerate(modes, start=1):
        part = speed[speed["mode"] == mode]
        for i, (name, rows) in enumerate(part.groupby("schedule", sort=False)):
            fig.add_trace(
                go.Scatter(
                    x=rows["seq_len"],
                    y=rows["speedup"],
                    mode="lines+markers",
                    name=f"{name}",
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": color(i)},
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=rows["seq_len"],
                    y=rows["ceiling"],
                    mode="lines",
                    name=f"{name} ceiling",
                    legendgroup=name,
                    showlegend=False,
                    line={"color": color(i), "dash": "dash"},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title="sequence length T", type="log")
    fig.update_yaxes(title="speedup vs full (x)", type="log")
    return _layout(fig, "Benchmark: measured speedup (solid) and FLOP ceiling / ideal pair ratio (dashed)")


__all__ = [
    "attention_figure",
    "copy_figure",
    "domains_figure",
    "heatmap_figure",
    "lines_figure",
    "quality_cost_figure",
    "schedule_figure",
    "speedup_figure",
]
