"""The report: one self-contained interactive page (plots/report.html) and the README table (metrics/summary.md).

Everything is read from the evaluate stage's outputs (metrics/eval.json, plots/eval/*); the research-question
answers are generated from those numbers, so they change when the experiment does. plotly.js is inlined once, so
the page opens with no network.

    python -m lmask.report --dvc-template DIR   # rebuild .dvc/plots/offline.html from unpacked npm packages
"""

from __future__ import annotations

import html
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lmask.data import write_text
from lmask.flops import attention_share
from lmask.params import section_from_dict
from lmask.schedule import layer_windows, schedule_sinks

# The seed README's table, shown beside our numbers and always labelled as claims.
SEED_CLAIMS = {
    "half": {"speedup": "1.5x", "memory_saving": "25%", "ppl_increase": "5-8%"},
    "quarter": {"speedup": "2.2x", "memory_saving": "45%", "ppl_increase": "12-18%"},
    "aggressive": {"speedup": "3.1x", "memory_saving": "65%", "ppl_increase": "25-35%"},
}


@dataclass
class ReportParams:
    title: str = "Layer-wise attention windows in GPT-2"
    max_samples: int = 4  # generation samples shown per model
    good_enough_pct: float = 2.0  # ppl change vs the full control that counts as "operates effectively"
    tie_pct: float = 0.5  # differences smaller than this (percentage points) are reported as no clear difference

    def check(self) -> None:
        if self.max_samples < 0:
            raise ValueError(f"report.max_samples must be >= 0, got {self.max_samples}")
        for name in ("good_enough_pct", "tie_pct"):
            if getattr(self, name) <= 0:
                raise ValueError(f"report.{name} must be > 0, got {getattr(self, name)}")


def report_params(raw: object) -> ReportParams:
    """Validate params.yaml's ``report`` section (unknown keys raise naming ``report.<key>``)."""
    cfg = section_from_dict(ReportParams, raw, "report")
    cfg.check()
    return cfg


@dataclass
class Inputs:
    """Everything the report reads, loaded once."""

    metrics: dict
    windows: dict  # model -> (windows, sinks)
    context: int
    scale: str  # one line describing model and training size, for the caveats
    n_layer: int
    n_embd: int
    vocab_size: int
    positions: pd.DataFrame
    curves: pd.DataFrame
    probe: pd.DataFrame
    attention: pd.DataFrame
    efficiency: pd.DataFrame
    generations: dict
    heatmaps: dict
    train_tokens_per_s: dict  # model -> training throughput from metrics/train/<model>.json (None if absent)


def _train_tokens_per_s(train_dir: Path, name: str) -> float | None:
    path = train_dir / f"{name}.json"
    return json.loads(path.read_text()).get("tokens_per_s") if path.exists() else None


def load_inputs(
    params,
    eval_dir: Path = Path("plots/eval"),
    metrics_path: Path = Path("metrics/eval.json"),
    train_dir: Path = Path("metrics/train"),
) -> Inputs:
    metrics = json.loads(Path(metrics_path).read_text())
    n_layer = params.model.n_layer
    windows = {"baseline": ([None] * n_layer, 0)}
    for name, spec in params.schedules.items():
        windows[name] = (layer_windows(spec, n_layer), schedule_sinks(spec))
    missing = [m for m in windows if m not in metrics]
    if missing:
        raise ValueError(f"{metrics_path} has no entry for {missing}: run `dvc repro evaluate` first")
    m = params.model
    # The trained vocabulary (bpe) or GPT-2's; the tokenizer may have fewer entries than the bpe target.
    vocab_size = params.tokenizer.vocab_size if params.tokenizer.kind == "bpe" else 50257
    scale = (
        f"{m.n_layer} layers x {m.n_embd} wide ({m.init}), vocabulary {params.tokenizer.vocab_size}, "
        f"{params.train.steps} baseline steps + {params.masked.steps} fine-tuning steps, "
        f"context {params.data.context_length}"
    )
    read = lambda name: pd.read_csv(eval_dir / name)  # noqa: E731
    return Inputs(
        metrics={k: metrics[k] for k in windows},  # only the models listed in params now
        windows=windows,
        context=params.data.context_length,
        scale=scale,
        n_layer=n_layer,
        n_embd=m.n_embd,
        vocab_size=vocab_size,
        positions=read("loss_by_position.csv"),
        curves=read("train_curves.csv"),
        probe=read("probe_accuracy.csv"),
        attention=read("attention_heads.csv"),
        efficiency=read("efficiency.csv").dropna(subset=["model"]),
        generations=json.loads((eval_dir / "generations.json").read_text()),
        heatmaps=json.loads((eval_dir / "attention_heatmaps.json").read_text()),
        train_tokens_per_s={k: _train_tokens_per_s(Path(train_dir), k) for k in windows},
    )


# ------------------------------------------------------------------------------------------------- figures
def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, height=height, template="plotly_white", margin={"t": 60, "l": 60, "r": 20})
    return fig


def schedule_figure(inp: Inputs) -> go.Figure:
    """Window per layer per schedule, log-coloured; 'full' where the window covers the context."""
    names = list(inp.windows)
    n_layer = len(next(iter(inp.windows.values()))[0])
    z, text = [], []
    for name in names:
        ws, sinks = inp.windows[name]
        eff = [inp.context if w is None else min(w, inp.context) for w in ws]
        z.append([math.log2(w) for w in eff])
        text.append(
            [("full" if w is None or w >= inp.context else str(w)) + (f"+{sinks}s" if sinks and w else "") for w in ws]
        )
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
    return _layout(
        fig, f"Attention window per layer (context {inp.context}; 'Ns' = N sink tokens)", 120 + 40 * len(names)
    )


def speed_quality_figure(inp: Inputs) -> go.Figure:
    """Perplexity change vs speedup: measured (filled) and analytic FLOP ceiling (open) for each schedule."""
    fig = go.Figure()
    eff = inp.efficiency.set_index("model") if len(inp.efficiency) else None
    for i, (name, row) in enumerate(inp.metrics.items()):
        if name == "baseline":
            continue
        color = _color(i)
        y = row["test_ppl_change_vs_baseline_pct"]
        if eff is not None and name in eff.index and "speedup" in eff.columns:
            fig.add_trace(
                go.Scatter(
                    x=[eff.loc[name, "speedup"]],
                    y=[y],
                    mode="markers+text",
                    text=[name],
                    textposition="top center",
                    name=f"{name} measured",
                    marker={"size": 12, "color": color},
                    legendgroup=name,
                )
            )
            if "flops_ceiling" in eff.columns:
                fig.add_trace(
                    go.Scatter(
                        x=[eff.loc[name, "flops_ceiling"]],
                        y=[y],
                        mode="markers",
                        name=f"{name} FLOP ceiling",
                        legendgroup=name,
                        marker={"size": 12, "symbol": "circle-open", "color": color},
                    )
                )
        else:  # no timing available: attention pairs saved is the best proxy we have
            fig.add_trace(
                go.Scatter(
                    x=[1 / row["attention_pairs"]],
                    y=[y],
                    mode="markers+text",
                    text=[name],
                    textposition="top center",
                    name=f"{name} (pairs ratio, not timed)",
                )
            )
    fig.add_hline(y=0, line_dash="dot")
    fig.update_xaxes(title="speedup vs baseline (x)")
    fig.update_yaxes(title="test perplexity change vs baseline (%)")
    return _layout(fig, "Quality vs speed: measured speedup (filled) and FLOP ceiling (open)")


def lines_figure(
    df: pd.DataFrame, x: str, y: str, title: str, xlabel: str, ylabel: str, log_x: bool = False
) -> go.Figure:
    fig = go.Figure()
    for name, part in df.groupby("model", sort=False):
        fig.add_trace(
            go.Scatter(x=part[x], y=part[y], mode="lines+markers" if len(part) < 40 else "lines", name=str(name))
        )
    fig.update_xaxes(title=xlabel, type="log" if log_x else "linear")
    fig.update_yaxes(title=ylabel)
    return _layout(fig, title)


def probe_figure(inp: Inputs) -> go.Figure:
    fig = lines_figure(
        inp.probe,
        "distance",
        "accuracy",
        "Induction probe: copy accuracy vs distance to the first copy",
        "distance d (tokens)",
        "accuracy",
        log_x=True,
    )
    if len(inp.probe):
        fig.add_hline(y=float(inp.probe["chance"].iloc[0]), line_dash="dot", annotation_text="chance")
    return fig


def attention_figure(inp: Inputs) -> go.Figure:
    by_layer = inp.attention.groupby(["model", "layer"], sort=False)[["entropy", "mean_distance", "sink_mass"]]
    by_layer = by_layer.mean().reset_index()
    fig = make_subplots(
        rows=1, cols=3, subplot_titles=("entropy (nats)", "mean distance (tokens)", "mass on first 4 tokens")
    )
    for i, (name, part) in enumerate(by_layer.groupby("model", sort=False)):
        color = _color(i)
        for col, key in enumerate(("entropy", "mean_distance", "sink_mass"), start=1):
            fig.add_trace(
                go.Scatter(
                    x=part["layer"],
                    y=part[key],
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=col == 1,
                    line={"color": color},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title="layer")
    return _layout(fig, "Attention by layer (head average, one test batch)")


def heatmap_figure(inp: Inputs) -> go.Figure:
    """Head-averaged attention of the first test block for a few layers; a dropdown picks the model."""
    models = [m for m in inp.windows if m in inp.heatmaps]
    layers = list(inp.heatmaps[models[0]]) if models else []
    fig = make_subplots(rows=1, cols=max(1, len(layers)), subplot_titles=[f"layer {ly}" for ly in layers])
    for mi, name in enumerate(models):
        for li, layer in enumerate(layers):
            fig.add_trace(
                go.Heatmap(
                    z=inp.heatmaps[name][layer],
                    colorscale="Blues",
                    showscale=False,
                    visible=mi == 0,
                    name=name,
                    hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>",
                ),
                row=1,
                col=li + 1,
            )
    buttons = []
    for mi, name in enumerate(models):
        visible = [m == mi for m in range(len(models)) for _ in layers]
        buttons.append({"label": name, "method": "update", "args": [{"visible": visible}]})
    fig.update_layout(updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.25, "xanchor": "right"}])
    fig.update_yaxes(autorange="reversed", title="query")
    fig.update_xaxes(title="key")
    return _layout(fig, "Attention heatmaps (first test block, head average)", 460)


def _color(i: int) -> str:
    palette = [
        "#1f77b4",
        "#ff7f0e",
        "#2ca02c",
        "#d62728",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#7f7f7f",
        "#bcbd22",
        "#17becf",
    ]
    return palette[i % len(palette)]


# ------------------------------------------------------------------------------------------------- tables
def _eff(inp: Inputs, name: str, key: str):
    eff = inp.efficiency
    if not len(eff) or key not in eff.columns or name not in set(eff["model"]):
        return None
    return eff.loc[eff["model"] == name, key].iloc[0]


def _fmt(value, spec: str = ".2f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{spec}}{suffix}"


def summary_rows(inp: Inputs) -> list[dict[str, str]]:
    """One row per model: the numbers README shows."""
    rows = []
    full_tok_s = inp.train_tokens_per_s.get("full")  # the fine-tuning control: same steps, batch and context
    for name, m in inp.metrics.items():
        kv = _eff(inp, name, "kv_cache_bytes")
        tok_s = inp.train_tokens_per_s.get(name)
        rows.append(
            {
                "model": name,
                "test ppl": _fmt(m["test_ppl"]),
                "vs baseline": _fmt(m.get("test_ppl_change_vs_baseline_pct"), "+.1f", "%"),
                "vs full control": _fmt(m.get("test_ppl_change_vs_full_pct"), "+.1f", "%"),
                "zero-shot vs baseline": _fmt(m.get("zero_shot_change_vs_baseline_pct"), "+.1f", "%"),
                "attention pairs": _fmt(m["attention_pairs"], ".2f"),
                "receptive field": str(m["receptive_field"]),
                "probe acc": _fmt(m.get("probe", {}).get("mean_accuracy"), ".3f"),
                "BLEU": _fmt(m.get("generation", {}).get("bleu_greedy"), ".2f"),
                "speedup": _fmt(_eff(inp, name, "speedup"), ".2f", "x"),
                "FLOP ceiling": _fmt(_eff(inp, name, "flops_ceiling"), ".2f", "x"),
                "KV cache": _fmt(None if kv is None else kv / 1024, ".0f", " KiB"),
                "train tok/s": _fmt(tok_s, ".0f"),
                "train tok/s vs full": _fmt(tok_s / full_tok_s if tok_s and full_tok_s else None, ".2f", "x"),
            }
        )
    return rows


def claims_rows(inp: Inputs) -> list[dict[str, str]]:
    """The seed's claimed table beside this run's measurements for the same schedules."""
    base_kv = _eff(inp, "baseline", "kv_cache_bytes")
    rows = []
    for name, claim in SEED_CLAIMS.items():
        m = inp.metrics.get(name)
        if m is None:
            continue
        kv = _eff(inp, name, "kv_cache_bytes")
        saving = None if kv is None or not base_kv else 100 * (1 - kv / base_kv)
        rows.append(
            {
                "schedule": name,
                "claimed speedup": claim["speedup"],
                "measured speedup": _fmt(_eff(inp, name, "speedup"), ".2f", "x"),
                "FLOP ceiling": _fmt(_eff(inp, name, "flops_ceiling"), ".2f", "x"),
                "claimed memory saving": claim["memory_saving"],
                "measured KV-cache saving": _fmt(saving, ".0f", "%"),
                "claimed ppl increase": claim["ppl_increase"],
                "measured ppl change (vs baseline)": _fmt(m.get("test_ppl_change_vs_baseline_pct"), "+.1f", "%"),
            }
        )
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
    return "\n".join(lines)


def html_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ------------------------------------------------------------------------------------------------- answers
def research_answers(inp: Inputs, cfg: ReportParams) -> list[tuple[str, str]]:
    """The seed's four questions and two of ours, each answered from this run's numbers."""
    m = inp.metrics
    ctrl = "full" if "full" in m else "baseline"
    ctrl_ppl = m[ctrl]["test_ppl"]
    windowed = [n for n in m if n not in ("baseline", "full") and m[n]["attention_pairs"] < 1]

    def change(name: str) -> float:
        return 100 * (m[name]["test_ppl"] - ctrl_ppl) / ctrl_ppl

    def desc(name: str) -> str:
        return (
            f"{name} ({change(name):+.1f}% ppl vs {ctrl}, {100 * m[name]['attention_pairs']:.0f}% of attention "
            f"pairs, receptive field {m[name]['receptive_field']})"
        )

    answers = []
    ok = [n for n in windowed if change(n) <= cfg.good_enough_pct]
    q1 = (
        f"Compared with the equally fine-tuned full-attention control ('{ctrl}'), the windowed schedules score: "
        + "; ".join(desc(n) for n in windowed)
        + ". "
    )
    q1 += f"Within {cfg.good_enough_pct:g}% of the control: {', '.join(ok) if ok else 'none'}. " if windowed else ""
    q1 += (
        "So in this run, yes for those schedules: deeper layers lost little from restricted attention."
        if ok
        else "So in this run, no schedule kept perplexity within that margin."
    )
    answers.append(("1. Can deeper transformer layers operate effectively with more restricted attention?", q1))

    # 2: rank by ppl cost per attention pair saved (a Pareto view).
    ranked = sorted(windowed, key=lambda n: (change(n), m[n]["attention_pairs"]))
    pareto, best_pairs = [], 2.0
    for n in ranked:
        if m[n]["attention_pairs"] < best_pairs:
            pareto.append(n)
            best_pairs = m[n]["attention_pairs"]
    q2 = (
        "Ranked by perplexity change: " + ", ".join(f"{n} {change(n):+.1f}%" for n in ranked) + ". "
        if ranked
        else "No windowed schedules were evaluated. "
    )
    if pareto:
        q2 += (
            f"Pareto-optimal (no other schedule is both better and cheaper): {', '.join(pareto)}. "
            "Question 5 compares progressions at about equal attention budgets."
        )
    answers.append(("2. What is the optimal progression of attention window sizes across layers?", q2))

    # 3: efficiency vs quality.
    parts = []
    for n in windowed:
        sp, ceil = _eff(inp, n, "speedup"), _eff(inp, n, "flops_ceiling")
        parts.append(
            f"{n}: {_fmt(sp, '.2f', 'x')} measured vs {_fmt(ceil, '.2f', 'x')} FLOP ceiling, {change(n):+.1f}% ppl"
        )
    timed = any(_eff(inp, n, "speedup") is not None for n in windowed)
    q3 = "; ".join(parts) + ". " if parts else ""
    share = attention_share(inp.n_layer, inp.context, inp.n_embd, inp.vocab_size)
    q3 += (
        f"At context {inp.context} attention scores are {100 * share:.0f}% of the forward FLOPs (lmask.flops; "
        f"projections, MLP and the LM head are the rest), so even free attention gives at most "
        f"{1 / (1 - share):.2f}x end to end; the share, and so the ceiling, grows with context length, and the KV "
        "cache at generation time shrinks with the windows (table above)."
    )
    if not timed:
        q3 += " (No timings were available in this run: lmask.benchmark was missing, so only pair counts are shown.)"
    answers.append(("3. How do different masking schedules affect the efficiency vs quality trade-off?", q3))

    # 4: which task degrades least: perplexity, long-range copying, generation BLEU.
    def rel(name: str, value_of) -> float | None:
        base, val = value_of(ctrl), value_of(name)
        return None if base in (None, 0) or val is None else 100 * (val - base) / abs(base)

    # (value getter, +1 if higher is worse): degradation = sign * relative change vs the control.
    tasks = {
        "language modelling (test perplexity)": (lambda n: m[n]["test_ppl"], 1),
        "long-range copying (induction probe accuracy)": (lambda n: m[n].get("probe", {}).get("mean_accuracy"), -1),
        "generation (BLEU of greedy continuations)": (lambda n: m[n].get("generation", {}).get("bleu_greedy"), -1),
    }
    lines, degradation = [], {}
    for task, (fn, sign) in tasks.items():
        vals = [v for v in (rel(n, fn) for n in windowed) if v is not None]
        if vals:
            degradation[task] = sign * sum(vals) / len(vals)
            lines.append(f"{task}: mean change {sum(vals) / len(vals):+.1f}% vs {ctrl}")
        else:
            lines.append(f"{task}: not measurable here (the control scores zero)")
    q4 = "; ".join(lines) + ". " + _late_vs_early_loss(inp, windowed)
    if degradation:
        best = min(degradation, key=degradation.get)
        worst = max(degradation, key=degradation.get)
        q4 += f" Least affected in this run: {best}; most affected: {worst}."
    answers.append(("4. Which language modeling tasks are most amenable to layer-wise attention masking?", q4))

    # 5: direction (increasing vs decreasing at equal pairs), interleaved.
    q5 = []
    for a, b in (("half", "increasing"), ("half", "interleaved"), ("increasing", "interleaved")):
        if a in m and b in m:
            q5.append(
                f"{a} {change(a):+.1f}% ({100 * m[a]['attention_pairs']:.0f}% pairs, probe "
                f"{_fmt(m[a].get('probe', {}).get('mean_accuracy'), '.3f')}) vs {b} {change(b):+.1f}% "
                f"({100 * m[b]['attention_pairs']:.0f}% pairs, probe "
                f"{_fmt(m[b].get('probe', {}).get('mean_accuracy'), '.3f')})"
            )
    text5 = "; ".join(q5) + "." if q5 else "The increasing / interleaved schedules were not in this run."
    if "half" in m and "increasing" in m:
        diff = change("increasing") - change("half")
        if abs(diff) < cfg.tie_pct:
            text5 += (
                f" At equal attention pairs the direction made no clear difference here ({diff:+.2f} points, "
                f"below report.tie_pct = {cfg.tie_pct:g})."
            )
        else:
            better = "increasing (Longformer's direction)" if diff < 0 else "decreasing (the seed's direction)"
            text5 += f" At equal attention pairs, {better} windows gave the lower perplexity ({abs(diff):.2f} points)."
    answers.append(("5. Does the direction of the windows matter (small windows low vs high; interleaved)?", text5))

    # 6: sinks rescue a retrofit?
    if "aggressive" in m and "aggressive_sinks" in m:
        zs, zss = m["aggressive"]["zero_shot_test_ppl"], m["aggressive_sinks"]["zero_shot_test_ppl"]
        text6 = (
            f"Zero-shot (baseline weights, windows applied without fine-tuning): aggressive {zs:.2f} ppl, "
            f"aggressive + 4 sinks {zss:.2f} ppl vs baseline {m['baseline']['test_ppl']:.2f} "
            f"({100 * (zss - zs) / zs:+.1f}% from adding sinks: "
            + ("a rescue" if 100 * (zs - zss) / zs >= cfg.tie_pct else "no clear rescue")
            + "). After fine-tuning: "
            f"{m['aggressive']['test_ppl']:.2f} vs {m['aggressive_sinks']['test_ppl']:.2f}. "
            f"Baseline attention mass on the first 4 tokens: "
            f"{100 * m['baseline'].get('attention', {}).get('sink_mass', float('nan')):.0f}% (head and layer "
            "average); StreamingLLM's sink effect needs the model to dump attention there."
        )
    else:
        text6 = "Add schedules 'aggressive' and 'aggressive_sinks' to answer this."
    answers.append(("6. Do attention sinks rescue a retrofitted (zero-shot) windowed model?", text6))
    return answers


def _late_vs_early_loss(inp: Inputs, windowed: list[str]) -> str:
    """Loss change late vs early in the context: windows should hurt only where distant context helps."""
    pos = inp.positions
    if not len(pos) or not windowed:
        return ""
    half = pos["position"].max() / 2

    def late_minus_early(name: str) -> float:
        part = pos[pos["model"] == name]
        return part[part["position"] > half]["loss"].mean() - part[part["position"] <= half]["loss"].mean()

    ctrl = "full" if "full" in set(pos["model"]) else "baseline"
    worst = max(windowed, key=lambda n: late_minus_early(n) - late_minus_early(ctrl))
    gap = late_minus_early(worst) - late_minus_early(ctrl)
    return (
        f"Loss by position: relative to {ctrl}, {worst} has the largest rise of second-half over first-half "
        f"loss ({gap:+.3f} nats; positive = it profits less from distant context)."
    )


def caveats(inp: Inputs) -> str:
    rf_full = all(m["receptive_field"] >= inp.context for m in inp.metrics.values())
    text = (
        f"Scale: {inp.scale}. These are tiny models trained briefly on a small corpus; effects seen here "
        "(especially the size of the differences) need not transfer to GPT-2 small on WikiText-103."
    )
    if rf_full:
        text += (
            f" At context {inp.context} every schedule keeps at least one layer whose window covers the whole "
            "context, so every receptive field is the full context: the probe measures attenuation, not a hard "
            "cut-off (the unit tests check the cut-off on short-window models)."
        )
    return text


# ------------------------------------------------------------------------------------------------- page
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
td.text, span.text { text-align: left; font-family: ui-monospace, monospace; font-size: 0.85em; white-space: pre-wrap; }
.claim { color: #a33; } .note { color: #555; font-size: 0.9em; }
"""


def samples_html(inp: Inputs, cfg: ReportParams) -> str:
    """Prompt, true continuation, then each model's greedy and sampled continuation (all text escaped)."""
    gen = inp.generations
    n = min(cfg.max_samples, len(gen.get("prompts", [])))
    esc = html.escape
    out = []
    for i in range(n):
        rows = "".join(
            f"<tr><td>{esc(name)}</td><td class='text'>{esc(texts['greedy'][i])}</td>"
            f"<td class='text'>{esc(texts['sampled'][i])}</td></tr>"
            for name, texts in gen["models"].items()
            if name in inp.windows
        )
        out.append(
            f"<h3>Sample {i + 1}</h3><p><b>Prompt:</b> <span class='text'>{esc(gen['prompts'][i])}</span><br>"
            f"<b>True continuation:</b> <span class='text'>{esc(gen['references'][i])}</span></p>"
            f"<table><thead><tr><th>model</th><th>greedy</th><th>sampled</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return "\n".join(out)


def build_html(inp: Inputs, cfg: ReportParams) -> str:
    figures = [
        ("Schedules", schedule_figure(inp)),
        ("Quality vs speed", speed_quality_figure(inp)),
        (
            "Training curves",
            lines_figure(
                inp.curves.dropna(subset=["val_loss"]),
                "step",
                "val_loss",
                "Validation loss during training",
                "step",
                "loss",
            ),
        ),
        (
            "Loss by position",
            lines_figure(
                inp.positions, "position", "loss", "Test loss by position in the context", "position", "loss (nats)"
            ),
        ),
        ("Long-range probe", probe_figure(inp)),
        ("Attention by layer", attention_figure(inp)),
        ("Attention heatmaps", heatmap_figure(inp)),
    ]
    parts = [
        f"<h1>{html.escape(cfg.title)}</h1>",
        f"<p class='note'>{html.escape(caveats(inp))}</p>",
        "<h2>Results</h2>",
        html_table(summary_rows(inp)),
        "<h2>Measured vs the seed's claims</h2>",
        "<p class='claim'>Columns marked 'claimed' are the seed README's numbers (GPT-2 small, WikiText-103), "
        "not measurements; they are shown only for comparison.</p>",
        html_table(claims_rows(inp)),
    ]
    for i, (title, fig) in enumerate(figures):
        # plotly.js inlined once (first figure), so the page works offline and stays one file.
        div = fig.to_html(full_html=False, include_plotlyjs=i == 0, div_id=f"fig-{i}", config={"displaylogo": False})
        parts += [f"<h2>{html.escape(title)}</h2>", div]
    parts += ["<h2>Generation samples</h2>", samples_html(inp, cfg), "<h2>Research questions</h2>"]
    for question, answer in research_answers(inp, cfg):
        parts += [f"<h3>{html.escape(question)}</h3>", f"<p>{html.escape(answer)}</p>"]
    parts.append(f"<p class='note'>{html.escape(caveats(inp))}</p>")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(cfg.title)}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def build_summary(inp: Inputs, cfg: ReportParams) -> str:
    lines = [
        "<!-- generated by `dvc repro report` (lmask/report.py); do not edit -->",
        "",
        markdown_table(summary_rows(inp)),
        "",
        "Seed README claims (not measured) beside this run:",
        "",
        markdown_table(claims_rows(inp)),
        "",
        f"_{caveats(inp)}_",
        "",
    ]
    return "\n".join(lines)


def write_report(
    params, out_html: Path = Path("plots/report.html"), out_summary: Path = Path("metrics/summary.md")
) -> None:
    """Build plots/report.html and metrics/summary.md from the evaluate stage's outputs."""
    cfg = report_params(params.extra.get("report"))  # validate before reading anything
    inp = load_inputs(params)
    write_text(out_html, build_html(inp, cfg))
    write_text(out_summary, build_summary(inp, cfg))


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
BENCH_START, BENCH_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def readme_with_summary(
    readme: str, summary: str, start_marker: str = README_START, end_marker: str = README_END
) -> str:
    """README text with the block between two markers replaced by ``summary``."""
    start, end = readme.find(start_marker), readme.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {start_marker} ... {end_marker}")
    return readme[: start + len(start_marker)] + "\n" + summary + readme[end:]


# ------------------------------------------------------------------------------------------------ benchmark
def benchmark_targets(records: list[dict]) -> list[tuple[str, bool | None, str]]:
    """The issue's targets checked against benchmark records: (target, held (None = not measured), evidence)."""
    model = [r for r in records if r["mode"] in ("fwd", "fwd_bwd") and r["schedule"] != "full"]
    kernel = [r for r in records if r["mode"] == "kernel"]
    out: list[tuple[str, bool | None, str]] = []

    rows = [r for r in model if r["mode"] == "fwd_bwd" and r["seq_len"] == 4096]
    rows = [r for r in rows if r["schedule"] in ("half", "quarter", "aggressive")]
    evidence = ", ".join(f"{r['schedule']} {r['efficiency']:.2f}" for r in rows)
    held = all(r["efficiency"] >= 0.95 for r in rows) if len(rows) == 3 else None
    out.append(("whole model, fwd+bwd, T=4096: efficiency >= 0.95 for half, quarter, aggressive", held, evidence))

    rows = [r for r in kernel if r["seq_len"] >= 2048 and r["window"] <= 256]
    evidence = ", ".join(f"T={r['seq_len']} w={r['window']} {r['efficiency']:.2f}" for r in rows)
    # Where 0.9 x ideal is above the memory-floor bound, no kernel could meet the target on this machine.
    beyond = [r for r in rows if "attainable" in r and 0.9 * r["ceiling"] > r["attainable"]]
    if beyond:
        evidence += "; 0.9 x ideal exceeds the memory-floor bound at " + ", ".join(
            f"T={r['seq_len']} w={r['window']} ({r['attainable']:.0f}x)" for r in beyond
        )
    held = all(r["efficiency"] >= 0.9 for r in rows) if rows else None
    out.append(("kernel, T >= 2048, w <= 256: speedup >= 0.9 x ideal pair ratio", held, evidence))

    rows = [r for r in model if r["seq_len"] == 1024]
    worst = min(rows, key=lambda r: r["speedup"], default=None)
    evidence = "" if worst is None else f"slowest: {worst['schedule']} {worst['mode']} {worst['speedup']:.3f}x"
    held = all(r["speedup"] >= 0.95 for r in rows) if rows else None
    out.append(("T=1024 (ceiling ~1): no schedule more than 5% slower than full", held, evidence))
    return out


def benchmark_markdown(records: list[dict]) -> str:
    """README's benchmark block from metrics/benchmark.json: model table, kernel table, targets."""
    if not records:
        raise ValueError("metrics/benchmark.json has no records: run `dvc repro benchmark` first")
    info = records[0]
    model = [r for r in records if r["mode"] in ("fwd", "fwd_bwd") and r["schedule"] != "full"]
    model.sort(key=lambda r: (r["mode"], r["seq_len"]))
    reps = max(len(r["times_s"]) for r in model) if model else 0
    lines = [
        "<!-- generated by `python -m lmask.report --readme` from metrics/benchmark.json; do not edit -->",
        "",
        f"Device `{info['device']}`, {info.get('threads', '?')} threads, {reps} timed rounds (speedup: median of the "
        f"per-round ratios; per round: their range), "
        f"{info.get('elapsed_s', 0) / 60:.1f} min in all.",
        "",
        "| mode | T | schedule | time (s) | full (s) | speedup | per round | FLOP ceiling | efficiency "
        "| KV cache (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in model:
        kv = f"{r['kv_cache_bytes'] / 2**20:.1f} of {r['full_kv_cache_bytes'] / 2**20:.1f}"
        rounds = r.get("round_speedups") or []
        spread = f"{min(rounds):.2f}–{max(rounds):.2f}" if rounds else "n/a"
        lines.append(
            f"| {r['mode']} | {r['seq_len']} | {r['schedule']} | {r['time_s']:.2f} | {r['full_time_s']:.2f} "
            f"| {r['speedup']:.2f}x | {spread} | {r['ceiling']:.3f}x | {r['efficiency']:.2f} | {kv} |"
        )
    lines += [
        "",
        "One layer's attention alone (`mode: kernel`, forward, against causal SDPA; ideal = causal pairs / window "
        "pairs). Fraction of ideal = (needed / computed pairs) x (speed per computed pair relative to causal SDPA): "
        "*computed / needed* is the blocking's extra work (`lmask.flops.blocked_pairs`), *per-pair speed* what is "
        "left. *Memory floor*: one op that reads q, k, v and writes the output, the least any kernel moves; "
        "*attainable* = min(ideal, causal / floor).",
        "",
        "| T | window | time (ms) | causal (ms) | speedup | ideal | fraction of ideal | computed / needed pairs "
        "| per-pair speed vs causal | memory floor (ms) | attainable |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted((r for r in records if r["mode"] == "kernel"), key=lambda r: (r["seq_len"], r["window"])):
        pairs = "n/a | n/a"
        if r.get("pair_overhead") is not None:
            pairs = f"{r['pair_overhead']:.2f} | {r['pair_rate_vs_causal']:.2f}"
        bound = "n/a | n/a"  # records from before the floor was measured
        if "attainable" in r:
            bound = f"{r['floor_time_s'] * 1e3:.2f} | {r['attainable']:.1f}x"
        lines.append(
            f"| {r['seq_len']} | {r['window']} | {r['time_s'] * 1e3:.1f} | {r['full_time_s'] * 1e3:.1f} "
            f"| {r['speedup']:.2f}x | {r['ceiling']:.1f}x | {r['efficiency']:.2f} | {pairs} | {bound} |"
        )
    lines += ["", "Targets (checked by `lmask.report.benchmark_targets` on these records):", ""]
    for target, held, evidence in benchmark_targets(records):
        mark = {True: "**holds**", False: "**missed**", None: "not measured"}[held]
        lines.append(f"- {target}: {mark} ({evidence})")
    return "\n".join(lines) + "\n"


def update_readme(
    readme_path: Path = Path("README.md"),
    summary_path: Path = Path("metrics/summary.md"),
    benchmark_path: Path = Path("metrics/benchmark.json"),
) -> None:
    """Refresh README's generated blocks: results (metrics/summary.md) and benchmark (metrics/benchmark.json)."""
    readme = readme_with_summary(readme_path.read_text(), summary_path.read_text())
    bench = benchmark_markdown(json.loads(benchmark_path.read_text()))
    write_text(readme_path, readme_with_summary(readme, bench, BENCH_START, BENCH_END))


# ------------------------------------------------------------------------------------------------- DVC template
def offline_dvc_template(npm_dir: Path) -> str:
    """An HTML template for `dvc plots show/diff` with vega, vega-lite and vega-embed inlined (no CDN).

    ``npm_dir`` holds the unpacked packages (npm pack vega@5 vega-lite@5 vega-embed@6; tar xzf each into
    vega/, vega-lite/, vega-embed/). DVC replaces {plot_divs}; {scripts} is left out on purpose (its CDN tags).
    """
    scripts = []
    for pkg in ("vega", "vega-lite", "vega-embed"):
        src = (npm_dir / pkg / "build" / f"{pkg}.min.js").read_text(encoding="utf-8")
        src = "\n".join(line for line in src.splitlines() if not line.startswith("//# sourceMappingURL"))
        version = json.loads((npm_dir / pkg / "package.json").read_text())["version"]
        if "</script" in src.lower() or "{plot_divs}" in src:
            raise ValueError(f"{pkg}: cannot inline safely")
        scripts.append(f"<!-- {pkg}@{version} (BSD-3-Clause) -->\n<script>{src}</script>")
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n<title>DVC Plot</title>\n'
        + "\n".join(scripts)
        + "\n<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n"
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--dvc-template":
        out = Path(".dvc/plots/offline.html")
        write_text(out, offline_dvc_template(Path(sys.argv[2])))
        print(f"wrote {out}; enable with: dvc config plots.html_template plots/offline.html")
    elif sys.argv[1:] == ["--readme"]:
        update_readme()
        print("README.md: results block updated from metrics/summary.md, benchmark block from metrics/benchmark.json")
    else:
        raise SystemExit("usage: python -m lmask.report --readme | --dvc-template NPM_DIR")
