"""The report stage: plots/report.html (one self-contained page), long-format plot data for ``dvc plots``, and the
benchmark markdown for README.

Reads the summary (lmask.summary: every number with its interval), the per-model evaluation files (curves, texts,
attention), the training curves (dvclive) and the benchmark files. plotly.js is inlined once, so the page opens with
no network. The research answers are generated from the data (lmask.tables; Q3's also from the benchmark files).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmask import figures
from lmask.answers import largest_t_speedups, q3, research_answers
from lmask.bench_tables import benchmark_markdown
from lmask.io import atomic_dir, read_json, write_text
from lmask.params import Params
from lmask.summary import BASELINE, load_model_files
from lmask.tables import (
    contrast_rows,
    copy_rows,
    generation_rows,
    markdown_table,
    method_note,
    position_rows,
    results_rows,
    scale_note,
)

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
td.text, span.text { text-align: left; font-family: ui-monospace, monospace; font-size: 0.85em; white-space: pre-wrap; }
.note { color: #555; font-size: 0.9em; } .flag { color: #a33; }
"""


@dataclass
class Inputs:
    """Everything the report reads, loaded once."""

    records: dict[str, dict[str, Any]]
    meta: dict[str, Any]
    positions: pd.DataFrame  # position, model, loss (test, mean over documents and runs)
    curves: pd.DataFrame  # step, model, train_loss, val_loss
    attention: pd.DataFrame  # model, layer, head, entropy, mean_distance, sink_mass
    heatmaps: dict[str, dict[str, list]]
    texts: dict[str, dict[str, Any]]  # model -> generation texts (first seed)
    benchmark: dict[str, dict]  # file stem -> benchmark file


def _tsv(folder: Path, name: str) -> pd.DataFrame:
    path = folder / "plots" / "metrics" / f"{name}.tsv"
    return pd.read_csv(path, sep="\t")[["step", name]] if path.is_file() else pd.DataFrame(columns=["step", name])


def train_curves(train_dir: Path, runs: list[str], baseline_steps: int) -> pd.DataFrame:
    """dvclive curves of each run; fine-tuning runs continue the baseline's step axis (they start from it)."""
    frames = []
    for run in runs:
        folder = train_dir / run
        df = _tsv(folder, "train_loss").merge(_tsv(folder, "val_loss"), on="step", how="outer")
        if not run.startswith(BASELINE):
            df["step"] = df["step"] + baseline_steps
        frames.append(df.assign(model=run))
    return pd.concat(frames, ignore_index=True)


def load_inputs(
    params: Params, summary: Path, metrics_dir: Path, arrays_dir: Path, train_dir: Path, bench_dir: Path
) -> Inputs:
    from lmask.summary import run_meta

    records = read_json(summary, "run `dvc repro summarize`")
    positions, attention, heatmaps, texts = [], [], {}, {}
    for name in [BASELINE, *params.schedules]:
        files = load_model_files(name, metrics_dir, arrays_dir)
        runs = np.asarray(files.runs("nll_test"))  # [baselines, seeds, documents, T-1], NaN past a document's end
        loss = np.nanmean(runs, axis=(0, 1, 2))
        positions.append(pd.DataFrame({"position": np.arange(1, len(loss) + 1), "model": name, "loss": loss.round(5)}))
        extra = next(e for e in files.extras.values() if "attention_rows" in e)  # the analysed (first) model
        attention.append(pd.DataFrame(extra["attention_rows"]).assign(model=name))
        heatmaps[name], texts[name] = extra["heatmaps"], extra["texts"]
    runs = [f"{BASELINE}-b{k}" for k in params.baseline_seeds] + [
        f"{n}-b{k}-s{s}" for n in params.schedules for k in params.baseline_seeds for s in params.finetune_seeds
    ]
    bench = {p.stem: read_json(p) for p in sorted(bench_dir.glob("*.json"))}
    return Inputs(
        records=records,
        meta=run_meta(params, metrics_dir),
        positions=pd.concat(positions, ignore_index=True),
        curves=train_curves(train_dir, runs, params.train.steps),
        attention=pd.concat(attention, ignore_index=True),
        heatmaps=heatmaps,
        texts=texts,
        benchmark={k: v for k, v in bench.items() if k in ("kernel", "train") or k in params.schedules},
    )


def speed_rows(inp: Inputs) -> pd.DataFrame:
    rows = [
        {k: r[k] for k in ("schedule", "mode", "seq_len", "speedup", "ceiling", "efficiency")}
        for name, f in inp.benchmark.items()
        if name != "train"  # the training-step benchmark has no schedule speedups
        for r in f["records"]
    ]
    return pd.DataFrame(rows, columns=["schedule", "mode", "seq_len", "speedup", "ceiling", "efficiency"])


def samples_html(inp: Inputs, max_samples: int) -> str:
    """True continuation and each model's seeded sample (degenerate ones flagged), for the first prompts."""
    esc = html.escape
    first = inp.texts[BASELINE]
    out = []
    for i in range(min(max_samples, len(first["references"]))):
        rows = "".join(
            f"<tr><td>{esc(name)}</td><td class='text'>{esc(t['sampled'][i])}"
            f"{' <span class=flag>[degenerate]</span>' if t['degenerate'][i] else ''}</td></tr>"
            for name, t in inp.texts.items()
        )
        out.append(
            f"<h3>Sample {i + 1}</h3><p><b>True continuation:</b> <span class='text'>{esc(first['references'][i])}"
            f"</span></p><table><thead><tr><th>model</th><th>sampled</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    return "\n".join(out)


def html_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_html(inp: Inputs, params: Params) -> str:
    speed = {n: r["speedup"] for n, r in largest_t_speedups(inp.benchmark).items()}
    curves = inp.curves.dropna(subset=["val_loss"])
    figs = [
        ("Schedules", figures.schedule_figure(inp.records, params.context)),
        ("Q3. Quality vs cost", figures.quality_cost_figure(inp.records, speed)),
        ("Long-range use: copy gain", figures.copy_figure(inp.records)),
        ("Q4. Gap per domain", figures.domains_figure(inp.records)),
        (
            "Training",
            figures.lines_figure(curves, "step", "val_loss", "Validation loss during training", "step", "loss"),
        ),
        (
            "Loss by position",
            figures.lines_figure(
                inp.positions,
                "position",
                "loss",
                "Test loss by position (mean over documents, baselines and seeds)",
                "position",
                "loss (nats)",
            ),
        ),
        ("Attention by layer", figures.attention_figure(inp.attention)),
        ("Attention heatmaps", figures.heatmap_figure(inp.heatmaps)),
        ("Benchmark", figures.speedup_figure(speed_rows(inp))),
    ]
    note = html.escape(scale_note(inp.meta))
    parts = [
        f"<h1>{html.escape(params.report.title)}</h1>",
        f"<p class='note'>{note}</p>",
        "<h2>Results</h2>",
        f"<p class='note'>{html.escape(method_note(inp.meta))}</p>",
        html_table(results_rows(inp.records)),
        "<h3>Fine-tuned vs the full control by query position</h3>",
        html_table(position_rows(inp.records)),
        "<h3>Q1's instruments: copy gain and repeated-text drop (nats)</h3>",
        html_table(copy_rows(inp.records)),
        "<h3>Q4: each domain's gap minus the test domain's (percentage points)</h3>",
        html_table(contrast_rows(inp.records)),
        "<h3>Generation beside its null</h3>",
        html_table(generation_rows(inp.records)),
        "<h2>Research questions</h2>",
    ]
    for question, answer in research_answers(inp.records, inp.meta, inp.benchmark):
        parts += [f"<h3>{html.escape(question)}</h3>", f"<p>{html.escape(answer)}</p>"]
    for i, (title, fig) in enumerate(figs):
        # plotly.js inlined once (first figure), so the page works offline and stays one file.
        div = fig.to_html(full_html=False, include_plotlyjs=i == 0, div_id=f"fig-{i}", config={"displaylogo": False})
        parts += [f"<h2>{html.escape(title)}</h2>", div]
    parts += ["<h2>Generation samples</h2>", samples_html(inp, params.report.max_samples)]
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(params.report.title)}</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def plot_frames(inp: Inputs) -> dict[str, pd.DataFrame]:
    """Long-format CSVs (a ``model`` column) for the top-level plots in dvc.yaml."""
    copy = [
        {
            "distance": int(d),
            "model": f"{name} {variant}".strip(),
            "gain": e["value"],
            "lo": (e["ci95"] or [None, None])[0],
            "hi": (e["ci95"] or [None, None])[1],
        }
        for name, rec in inp.records.items()
        for variant, gains in (
            [("", rec["copy_loss_drop"])]
            if name == BASELINE
            else [("zero-shot", rec["copy_gain_zero_shot"]), ("fine-tuned", rec.get("copy_gain", {}))]
        )
        for d, e in gains.items()
    ]
    gaps = [
        {
            "model": n,
            "attention_pairs": r["attention_pairs"],
            "vs_full_pct": r["vs_full_pct"],
            "lo": (r["vs_full_pct_ci95"] or [None, None])[0],
            "hi": (r["vs_full_pct_ci95"] or [None, None])[1],
        }
        for n, r in inp.records.items()
        if "vs_full_pct" in r
    ]
    return {
        "loss_by_position": inp.positions,
        "copy_gain": pd.DataFrame(copy),
        "train_curves": inp.curves,
        "gaps": pd.DataFrame(gaps, columns=["model", "attention_pairs", "vs_full_pct", "lo", "hi"]),
        "speedup": speed_rows(inp),
    }


def write_report(inp: Inputs, params: Params, page: Path, plots_dir: Path, bench_markdown: Path) -> None:
    write_text(page, build_html(inp, params))
    with atomic_dir(plots_dir) as tmp:
        for name, df in plot_frames(inp).items():
            df.to_csv(tmp / f"{name}.csv", index=False)
    bench = benchmark_markdown(inp.benchmark) if any(f["records"] for f in inp.benchmark.values()) else ""
    write_text(bench_markdown, bench + ("\n" if bench else "") + "**Q3.** " + q3(inp.records, inp.benchmark) + "\n")


__all__ = ["Inputs", "build_html", "load_inputs", "markdown_table", "plot_frames", "write_report"]
