"""The report: built from evaluate's outputs, self-contained, and rendered by a real headless browser offline.

The browser tests use Debian's ``chromium`` (apt-get install -y chromium) and skip, saying so, only when it is absent.
Networking is off in the browser (a dead proxy and a resolver that fails every name), so any CDN reference fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lmask.params import load_params
from lmask.report import SEED_CLAIMS, build_summary, load_inputs, report_params, research_answers, write_report
from tests.conftest import run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------- browser
def chromium(args: list[str], tmp: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Headless chromium with networking disabled; returns the finished process (stdout = --dump-dom output)."""
    profile = tmp / "chromium-profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--window-size=1280,2400",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def console_errors(stderr: str) -> list[str]:
    """Console errors and uncaught exceptions chromium logged for the page."""
    lines = [ln for ln in stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    return [ln for ln in lines if re.search(r"error|uncaught|failed", ln, re.I)]


def screenshot(page_uri: str, tmp: Path, name: str) -> int:
    """Bytes of a PNG screenshot of the page (PNG compresses a blank page to almost nothing)."""
    shot = tmp / f"{name}.png"
    proc = chromium([f"--screenshot={shot}", page_uri], tmp)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-3000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return len(data)


# ------------------------------------------------------------------------------------------------- fixtures
MODELS = ["baseline", "full", "half", "quarter", "aggressive", "increasing", "interleaved", "aggressive_sinks"]


def fake_eval_outputs(repo: Path) -> None:
    """Plausible evaluate outputs for the repo's params, so the report can be tested without training."""
    params = load_params(repo / "params.yaml")
    names = ["baseline", *params.schedules]
    rng = np.random.default_rng(0)
    metrics = {}
    for i, name in enumerate(names):
        row = {
            "test_ppl": 50.0 + i,
            "val_ppl": 51.0 + i,
            "attention_pairs": 1.0 - 0.05 * i,
            "receptive_field": 256,
            "probe": {"mean_accuracy": 0.1, "accuracy_by_distance": {"8": 0.2}},
            "generation": {"bleu_greedy": 1.5},
            "attention": {"sink_mass": 0.3},
        }
        if name != "baseline":
            row.update(
                zero_shot_test_ppl=60.0 + i,
                test_ppl_change_vs_baseline_pct=2.0 * i,
                zero_shot_change_vs_baseline_pct=20.0 + i,
                test_ppl_change_vs_full_pct=1.0 * i,
            )
        metrics[name] = row
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/eval.json").write_text(json.dumps(metrics))
    ev = repo / "plots/eval"
    ev.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"position": p, "model": n, "loss": 5 - p / 100} for n in names for p in range(1, 20)]).to_csv(
        ev / "loss_by_position.csv", index=False
    )
    pd.DataFrame(
        [
            {"step": s, "model": n, "train_loss": 6 - s / 10, "val_loss": 6 - s / 12}
            for n in names
            for s in range(0, 30, 5)
        ]
    ).to_csv(ev / "train_curves.csv", index=False)
    pd.DataFrame(
        [
            {"distance": d, "model": n, "accuracy": rng.random() / 3, "chance": 0.001}
            for n in names
            for d in (8, 32, 128)
        ]
    ).to_csv(ev / "probe_accuracy.csv", index=False)
    pd.DataFrame(
        [
            {
                "model": n,
                "layer": ly,
                "head": h,
                "entropy": rng.random(),
                "mean_distance": rng.random() * 9,
                "sink_mass": rng.random(),
            }
            for n in names
            for ly in range(12)
            for h in range(4)
        ]
    ).to_csv(ev / "attention_heads.csv", index=False)
    pd.DataFrame(
        [
            {"model": n, "speedup": 1 + 0.02 * i, "flops_ceiling": 1 + 0.03 * i, "kv_cache_bytes": 1e6 * (1 - 0.05 * i)}
            for i, n in enumerate(names)
        ]
    ).to_csv(ev / "efficiency.csv", index=False)
    prompts = ["The cat <b>sat</b>", "Once upon a time"]
    (ev / "generations.json").write_text(
        json.dumps(
            {
                "prompts": prompts,
                "references": ["on the mat.", "there was"],
                "models": {n: {"greedy": ["on a mat", "a king"], "sampled": ["near", "the"]} for n in names},
            }
        )
    )
    heat = np.tril(np.ones((8, 8))) / np.arange(1, 9)[:, None]
    (ev / "attention_heatmaps.json").write_text(
        json.dumps({n: {"0": heat.tolist(), "11": heat.tolist()} for n in names})
    )


@pytest.fixture
def fake_repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    fake_eval_outputs(repo)
    return repo


def build(repo: Path) -> Path:
    run([sys.executable, "-m", "stages.report"], repo) if (repo / "stages").is_dir() else _build_here(repo)
    return repo / "plots/report.html"


def _build_here(repo: Path) -> None:
    import os

    cwd = os.getcwd()
    os.chdir(repo)
    try:
        write_report(load_params())
    finally:
        os.chdir(cwd)


# ------------------------------------------------------------------------------------------------- tests
def test_report_is_self_contained_and_complete(fake_repo):
    page = build(fake_repo).read_text()
    assert not re.search(r"<script[^>]+src=", page), "every script must be inline"
    assert not re.search(r"<link[^>]+href=[\"']https?:", page)
    assert page.count("Plotly.newPlot") == 7
    assert "&lt;b&gt;sat&lt;/b&gt;" in page  # generated text is escaped
    for claim in SEED_CLAIMS.values():
        assert claim["speedup"] in page
    for q in (
        "1. Can deeper",
        "2. What is the optimal",
        "3. How do different",
        "4. Which language",
        "5. Does the direction",
        "6. Do attention sinks",
    ):
        assert q in page
    summary = (fake_repo / "metrics/summary.md").read_text()
    assert summary.count("\n| ") >= len(MODELS) and "aggressive_sinks" in summary


def test_report_answers_use_the_numbers(fake_repo):
    params = load_params(fake_repo / "params.yaml")
    inp = load_inputs(params, fake_repo / "plots/eval", fake_repo / "metrics/eval.json")
    answers = dict(research_answers(inp, report_params({})))
    q6 = next(v for k, v in answers.items() if k.startswith("6."))
    zs = json.loads((fake_repo / "metrics/eval.json").read_text())["aggressive_sinks"]["zero_shot_test_ppl"]
    assert f"{zs:.2f}" in q6
    assert "Scale:" in build_summary(inp, report_params({}))


def test_report_ignores_stale_models_and_requires_listed_ones(fake_repo):
    metrics = json.loads((fake_repo / "metrics/eval.json").read_text())
    metrics["old_schedule"] = metrics["half"]
    (fake_repo / "metrics/eval.json").write_text(json.dumps(metrics))
    assert "old_schedule" not in build(fake_repo).read_text()
    params = yaml.safe_load((fake_repo / "params.yaml").read_text())
    params["schedules"]["brand_new"] = {"type": "none"}
    (fake_repo / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="brand_new"):
        build(fake_repo)


def test_report_params_validation():
    with pytest.raises(ValueError, match=r"report\.colour"):
        report_params({"colour": "red"})


@needs_chromium
def test_report_renders_offline_in_chromium(fake_repo, tmp_path):
    page = build(fake_repo)
    dom_proc = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom_proc.returncode == 0, dom_proc.stderr[-3000:]
    dom = dom_proc.stdout
    divs = re.findall(r'<div id="(fig-\d+)"[^>]*class="([^"]*)"', dom)
    assert len(divs) == 7, dom[:2000]
    for div_id, cls in divs:
        assert "js-plotly-plot" in cls, f"{div_id} was not drawn by plotly"
        body = dom.split(f'id="{div_id}"', 1)[1][:200_000]
        assert "<svg" in body.split('<div id="fig-', 1)[0], f"{div_id} has no svg"
    assert not console_errors(dom_proc.stderr), console_errors(dom_proc.stderr)
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert screenshot(page.as_uri(), tmp_path, "report") > 10 * screenshot(blank.as_uri(), tmp_path, "blank"), (
        "the screenshot is as small as a blank page's"
    )


@pytest.mark.slow
def test_pipeline_metrics_and_report(tiny_repo, tmp_path):
    """End to end on the tiny pipeline: every listed schedule evaluated, none stale, report renders offline."""
    params = load_params(tiny_repo / "params.yaml")
    metrics = json.loads((tiny_repo / "metrics/eval.json").read_text())
    assert set(metrics) == {"baseline", *params.schedules}
    for name, row in metrics.items():
        for key in ("test_ppl", "val_ppl", "probe", "generation", "attention", "efficiency"):
            assert key in row, f"{name} lacks {key}"
        assert row["probe"]["beyond_receptive_field_at_chance"], f"{name}: probe beats chance beyond its reach"
        assert set(row["probe"]["accuracy_by_distance"]) == {str(d) for d in params.extra["probe"]["distances"]}
        assert 0 <= row["generation"]["bleu_greedy"] <= 100
    gens = json.loads((tiny_repo / "plots/eval/generations.json").read_text())
    assert set(gens["models"]) == set(metrics) and all(gens["models"]["baseline"]["greedy"])
    page = (tiny_repo / "plots/report.html").read_text()
    assert not re.search(r"<script[^>]+src=", page)
    assert (tiny_repo / "metrics/summary.md").read_text().count("\n| ") >= len(metrics)

    # Drop a schedule: evaluate and report must forget it (its old model files stay on disk).
    raw = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    del raw["schedules"]["interleaved"]
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run(["dvc", "repro", "report"], tiny_repo)
    metrics = json.loads((tiny_repo / "metrics/eval.json").read_text())
    assert "interleaved" not in metrics and "interleaved" not in (tiny_repo / "metrics/summary.md").read_text()

    # dvc plots show works with the offline template (no CDN) and the declared plots.
    out = tmp_path / "dvc_plots"
    run(["dvc", "plots", "show", "-o", str(out)], tiny_repo)
    index = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in index and "vegaEmbed" in index
    for name in ("probe_accuracy_by_distance", "attention_entropy_by_layer", "speedup_vs_flop_ceiling"):
        assert name in index
    if CHROMIUM:
        dom = chromium(["--dump-dom", (tiny_repo / "plots/report.html").as_uri()], tmp_path)
        assert dom.stdout.count("js-plotly-plot") >= 7 and not console_errors(dom.stderr)
        dom = chromium(["--dump-dom", (out / "index.html").as_uri()], tmp_path)
        assert dom.stdout.count("<canvas") + dom.stdout.count('class="marks"') >= 6, "vega did not draw"
        assert not console_errors(dom.stderr), console_errors(dom.stderr)


# ------------------------------------------------------------------------------------------------- dvc plots
TEMPLATE = ROOT / ".dvc/plots/offline.html"


def test_dvc_offline_template_is_configured_and_inline():
    config = (ROOT / ".dvc/config").read_text()
    assert re.search(r"html_template\s*=\s*plots/offline.html", config)
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # {scripts} would add DVC's CDN tags
    assert not re.search(r"<script[^>]+src=", page)
    for lib in ("vega@5", "vega-lite@5", "vega-embed@6"):
        assert f"<!-- {lib}" in page


@needs_chromium
def test_dvc_offline_template_renders_a_vega_lite_plot(tmp_path):
    """Fill the template the way dvc-render does (a div plus vegaEmbed) and check vega drew it with no network."""
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {
            "values": [{"x": 1, "y": 2, "model": "a"}, {"x": 2, "y": 3, "model": "a"}, {"x": 1, "y": 1, "model": "b"}]
        },
        "mark": "line",
        "encoding": {
            "x": {"field": "x", "type": "quantitative"},
            "y": {"field": "y", "type": "quantitative"},
            "color": {"field": "model", "type": "nominal"},
        },
    }
    div = (
        f"<div id='plot1'><script type='text/javascript'>var spec = {json.dumps(spec)};"
        "vegaEmbed('#plot1', spec, {renderer: 'svg'});</script></div>"
    )
    page = tmp_path / "plots.html"
    page.write_text(TEMPLATE.read_text().replace("{plot_divs}", div).replace("{refresh_tag}", ""))
    proc = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'class="marks"' in proc.stdout, "vega-embed did not draw the plot"
    assert not console_errors(proc.stderr), console_errors(proc.stderr)


def test_readme_results_block_is_the_generated_summary():
    """README's result table is metrics/summary.md verbatim (python -m lmask.report --readme), never typed."""
    from lmask.report import README_END, README_START, readme_with_summary

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    summary = (root / "metrics/summary.md").read_text()
    assert readme_with_summary(readme, summary) == readme
    block = readme[readme.index(README_START) + len(README_START) : readme.index(README_END)]
    assert block.strip() == summary.strip()


def test_readme_benchmark_block_is_generated_from_the_benchmark_json():
    """README's benchmark tables and target verdicts are rendered from metrics/benchmark.json, never typed."""
    from lmask.report import BENCH_END, BENCH_START, benchmark_markdown, readme_with_summary

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = benchmark_markdown(json.loads((root / "metrics/benchmark.json").read_text()))
    assert readme_with_summary(readme, block, BENCH_START, BENCH_END) == readme


def test_benchmark_markdown_kernel_row_decomposes_the_fraction_of_ideal():
    from lmask.report import benchmark_markdown

    kernel = dict(
        schedule="w64",
        mode="kernel",
        window=64,
        seq_len=4096,
        time_s=0.02,
        full_time_s=0.2,
        speedup=10.0,
        ceiling=32.3,
        efficiency=10.0 / 32.3,
        pair_overhead=1.5,
        pair_rate_vs_causal=0.46,
        floor_time_s=0.0025,
        attainable=32.3,
        device="cpu",
    )
    old = {k: v for k, v in kernel.items() if k not in ("pair_overhead", "pair_rate_vs_causal", "attainable")}
    model = dict(schedule="half", mode="fwd", seq_len=4096, time_s=1.0, full_time_s=1.1, speedup=1.1, ceiling=1.12)
    model.update(efficiency=1.1 / 1.12, times_s=[1.0], kv_cache_bytes=2**20, full_kv_cache_bytes=2**21, device="cpu")
    text = benchmark_markdown([model, kernel])
    assert "| 4096 | 64 | 20.0 | 200.0 | 10.00x | 32.3x | 0.31 | 1.50 | 0.46 | 2.50 | 32.3x |" in text
    # Records written before the decomposition was measured still render.
    assert "| 4096 | 64 | 20.0 | 200.0 | 10.00x | 32.3x | 0.31 | n/a | n/a | n/a | n/a |" in benchmark_markdown(
        [model, old]
    )


def test_benchmark_targets_verdicts():
    from lmask.report import benchmark_targets

    def rec(schedule, mode, T, speedup, ceiling, window=None):
        return dict(
            schedule=schedule,
            mode=mode,
            seq_len=T,
            speedup=speedup,
            ceiling=ceiling,
            efficiency=speedup / ceiling,
            window=window,
        )

    records = [
        rec("full", "fwd_bwd", 4096, 1.0, 1.0),
        rec("half", "fwd_bwd", 4096, 1.10, 1.12),
        rec("quarter", "fwd_bwd", 4096, 1.19, 1.19),
        rec("aggressive", "fwd_bwd", 4096, 1.15, 1.25),  # 0.92 < 0.95
        rec("w64", "kernel", 4096, 30.0, 32.3, 64),
        rec("w64", "kernel", 1024, 1.0, 8.3, 64),  # T < 2048: not part of the kernel target
        rec("half", "fwd", 1024, 0.96, 1.03),
    ]
    (model, held_model, ev_model), (_, held_kernel, _), (_, held_short, ev_short) = benchmark_targets(records)
    assert held_model is False and "aggressive 0.92" in ev_model
    assert held_kernel is True
    assert held_short is True and "half fwd 0.960x" in ev_short
    records.append(rec("quarter", "fwd", 1024, 0.94, 1.04))
    assert benchmark_targets(records)[2][1] is False
    # A window whose 0.9 x ideal is above the memory-floor bound is named in the evidence.
    records.append(dict(rec("w16", "kernel", 4096, 12.0, 128.3, 16), attainable=83.0))
    held_kernel, ev_kernel = benchmark_targets(records)[1][1:]
    assert held_kernel is False and "exceeds the memory-floor bound at T=4096 w=16 (83x)" in ev_kernel
    assert "w=64 (" not in ev_kernel
    assert benchmark_targets(records[:1])[0][1] is None  # not measured
