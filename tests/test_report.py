"""The report: built from the pipeline's outputs, self-contained, rendered by a real headless browser offline; the
benchmark tables and README blocks are generated, never typed.

The browser tests use Debian's ``chromium`` (apt-get install -y chromium) and skip, saying so, only when it is absent.
Networking is off in the browser (a dead proxy and a resolver that fails every name), so any CDN reference fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lmask.bench_tables import benchmark_markdown, benchmark_targets
from lmask.params import load_params
from tests.conftest import run, stages_ran

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


# ------------------------------------------------------------------------------------------------- the page
FIGURES = 9  # lmask.report.build_html


@pytest.mark.slow
def test_report_is_self_contained_and_complete(tiny_pipeline):
    page = (tiny_pipeline / "plots/report.html").read_text()
    assert not re.search(r"<script[^>]+src=", page), "every script must be inline"
    assert not re.search(r"<link[^>]+href=[\"']https?:", page)
    assert page.count("Plotly.newPlot") == FIGURES
    for q in ("Q1. ", "Q2. ", "Q3. ", "Q4. "):
        assert q in page
    params = load_params(tiny_pipeline / "params.yaml")
    summary = json.loads((tiny_pipeline / "metrics/summary.json").read_text())
    for name in params.schedules:
        assert name in page
    half = summary["half"]
    shown = f"{half['vs_full_pct']:+.2f}% [{half['vs_full_pct_ci95'][0]:+.2f}, {half['vs_full_pct_ci95'][1]:+.2f}]"
    assert shown in page and shown in (tiny_pipeline / "metrics/summary.md").read_text()
    for name in ("loss_by_position", "copy_gain", "train_curves", "gaps", "speedup"):
        assert (tiny_pipeline / "plots/report" / f"{name}.csv").stat().st_size > 0


@pytest.mark.slow
@needs_chromium
def test_report_renders_offline_in_chromium(tiny_pipeline, tmp_path):
    page = tiny_pipeline / "plots/report.html"
    dom_proc = chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom_proc.returncode == 0, dom_proc.stderr[-3000:]
    dom = dom_proc.stdout
    divs = re.findall(r'<div id="(fig-\d+)"[^>]*class="([^"]*)"', dom)
    assert len(divs) == FIGURES, dom[:2000]
    for div_id, cls in divs:
        assert "js-plotly-plot" in cls, f"{div_id} was not drawn by plotly"
        body = dom.split(f'id="{div_id}"', 1)[1][:400_000]
        assert "<svg" in body.split('<div id="fig-', 1)[0], f"{div_id} has no svg"
    assert not console_errors(dom_proc.stderr), console_errors(dom_proc.stderr)
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert screenshot(page.as_uri(), tmp_path, "report") > 10 * screenshot(blank.as_uri(), tmp_path, "blank"), (
        "the screenshot is as small as a blank page's"
    )


@pytest.mark.slow
def test_dropping_a_schedule_forgets_it_and_dvc_plots_render_offline(tiny_repo, tmp_path):
    raw = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    del raw["schedules"]["aggressive"]
    (tiny_repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out = run(["dvc", "repro", "report"], tiny_repo).stdout
    assert set(stages_ran(out)) == {"validate", "summarize", "report"}, out
    summary = json.loads((tiny_repo / "metrics/summary.json").read_text())
    assert "aggressive" not in summary and "aggressive" not in (tiny_repo / "plots/report.html").read_text()

    plots = tmp_path / "dvc_plots"
    run(["dvc", "plots", "show", "-o", str(plots)], tiny_repo)
    index = (plots / "index.html").read_text()
    assert "cdn.jsdelivr" not in index and "vegaEmbed" in index
    for name in ("test_loss_by_position", "copy_gain_by_distance", "gap_vs_full_by_pairs"):
        assert name in index
    if CHROMIUM:
        dom = chromium(["--dump-dom", (plots / "index.html").as_uri()], tmp_path)
        assert dom.stdout.count("<canvas") + dom.stdout.count('class="marks"') >= 4, "vega did not draw"
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


def test_readme_blocks_are_the_committed_markdown():
    """Every generated block of README.md and docs/results.md is what `python -m tools.readme` writes from the
    committed outputs (metrics/summary.json and .md, metrics/benchmark.md, metrics/replicate.json,
    results/stage_times.md): nothing between the markers is typed or stale."""
    from tools.readme import render

    for doc, text in render(ROOT).items():
        assert (ROOT / doc).read_text() == text, f"{doc} is stale: run `python -m tools.readme`"


def test_benchmark_markdown_kernel_row_decomposes_the_fraction_of_ideal():
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

    def files(*records):
        run = {"device": "cpu", "threads": "2", "elapsed": "10 s"}
        return {"x": {"summary": {}, "run": run, "records": list(records)}}

    text = benchmark_markdown(files(model, kernel))
    row = "| kernel | 4096 | 64 | **blocked** | 20.0 | 200.0 | 10.00x | 32.3x | 0.31 | 1.50 | 0.46 | 2.50 | 32.3x |"
    assert row in text
    # Records written before the decomposition was measured still render.
    old_row = "| kernel | 4096 | 64 | **blocked** | 20.0 | 200.0 | 10.00x | 32.3x | 0.31 | n/a | n/a | n/a | n/a |"
    assert old_row in benchmark_markdown(files(model, old))


def test_benchmark_targets_verdicts():
    def rec(schedule, mode, T, speedup, ceiling, window=None, **extra):
        return dict(
            schedule=schedule,
            mode=mode,
            seq_len=T,
            speedup=speedup,
            ceiling=ceiling,
            efficiency=speedup / ceiling,
            window=window,
            **extra,
        )

    records = [
        rec("full", "fwd_bwd", 4096, 1.0, 1.0),
        rec("half", "fwd_bwd", 4096, 1.10, 1.12),
        rec("quarter", "fwd_bwd", 4096, 1.19, 1.19),
        rec("aggressive", "fwd_bwd", 4096, 1.15, 1.25),  # 0.92 < 0.95
        rec("blocked_w64", "kernel", 3072, 15.0, 24.3, 64, kernel="blocked", dispatched=True),  # 0.62 >= 0.5
        rec("band_w64", "kernel", 3072, 1.0, 24.3, 64, kernel="band", dispatched=False),  # not the dispatched one
        rec("blocked_w16", "kernel_fwd_bwd", 3072, 20.0, 96.3, 16, kernel="blocked", dispatched=False),
        rec("band_w16", "kernel_fwd_bwd", 3072, 30.0, 96.3, 16, kernel="band", dispatched=True),  # 0.31 < 0.4
        rec("blocked_w64", "kernel", 1024, 1.0, 8.3, 64, kernel="blocked"),  # T = 1024: not a kernel target
        rec("half", "fwd", 1024, 0.96, 1.03),
    ]
    targets = {target: (held, evidence) for target, held, evidence in benchmark_targets(records)}
    assert len(targets) == 7
    held, evidence = targets["whole model, fwd+bwd, T=4096: efficiency >= 0.95 for half, quarter, aggressive"]
    assert held is False and evidence == "half 0.9821, quarter 1.0000, aggressive 0.9200"
    assert targets["kernel, T=3072, w=64, fwd: fraction of ideal >= 0.5"] == (True, "blocked 0.62")
    assert targets["kernel, T=3072, w=16, fwd+bwd: fraction of ideal >= 0.4"] == (False, "band 0.31")
    assert targets["kernel, T=3072, w=256, fwd: fraction of ideal >= 0.8"][0] is None  # not measured
    held, evidence = targets["T=1024 (ceiling ~1): no schedule more than 5% slower than full"]
    assert held is True and "half fwd 0.960x" in evidence
    records.append(rec("quarter", "fwd", 1024, 0.94, 1.04))
    assert benchmark_targets(records)[-1][1] is False
    assert benchmark_targets(records[:1])[0][1] is None  # not measured
