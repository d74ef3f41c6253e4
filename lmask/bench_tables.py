"""The benchmark's tables: README's benchmark block, built from the per-schedule benchmark files."""

from __future__ import annotations

from lmask.io import DataError


def benchmark_targets(records: list[dict]) -> list[tuple[str, bool | None, str]]:
    """The issue's targets checked against benchmark records: (target, held (None = not measured), evidence)."""
    model = [r for r in records if r["mode"] in ("fwd", "fwd_bwd") and r["schedule"] != "full"]
    kernel = [r for r in records if r["mode"].startswith("kernel")]
    out: list[tuple[str, bool | None, str]] = []

    rows = [r for r in model if r["mode"] == "fwd_bwd" and r["seq_len"] == 4096]
    rows = [r for r in rows if r["schedule"] in ("half", "quarter", "aggressive")]
    # Four places: 0.9497 misses 0.95 and must not print as 0.95.
    evidence = ", ".join(f"{r['schedule']} {r['efficiency']:.4f}" for r in rows)
    held = all(r["efficiency"] >= 0.95 for r in rows) if len(rows) == 3 else None
    out.append(("whole model, fwd+bwd, T=4096: efficiency >= 0.95 for half, quarter, aggressive", held, evidence))

    # Issue 20's kernel targets, on the kernel the dispatch picks for each window (records without a "kernel" field
    # predate the band kernel: they are the dispatched blocked kernel, forward).
    goals = [("kernel", 16, 0.5), ("kernel", 64, 0.5), ("kernel", 256, 0.8)]
    goals += [("kernel_fwd_bwd", 16, 0.4), ("kernel_fwd_bwd", 64, 0.4)]
    for mode, w, goal in goals:
        rows = [r for r in kernel if r["mode"] == mode and r["seq_len"] == 3072 and r["window"] == w]
        rows = [r for r in rows if r.get("dispatched", True)]
        name = "fwd" if mode == "kernel" else "fwd+bwd"
        evidence = ", ".join(f"{r.get('kernel', 'blocked')} {r['efficiency']:.2f}" for r in rows)
        held = all(r["efficiency"] >= goal for r in rows) if rows else None
        out.append((f"kernel, T=3072, w={w}, {name}: fraction of ideal >= {goal}", held, evidence))

    rows = [r for r in model if r["seq_len"] == 1024]
    worst = min(rows, key=lambda r: r["speedup"], default=None)
    evidence = "" if worst is None else f"slowest: {worst['schedule']} {worst['mode']} {worst['speedup']:.3f}x"
    held = all(r["speedup"] >= 0.95 for r in rows) if rows else None
    out.append(("T=1024 (ceiling ~1): no schedule more than 5% slower than full", held, evidence))
    return out


def _kernel_lines(kernel: list[dict], files: dict[str, dict]) -> list[str]:
    """The one-layer kernel table and the measured band/blocked and band/tiled crossovers (benchmark_kernel's
    records)."""
    lines = [
        "",
        "One layer's attention alone (`mode: kernel` forward, `kernel_fwd_bwd` forward + backward; each against "
        "causal SDPA in the same mode; ideal = causal pairs / window pairs). *band*: `lmask.band` (fused C++ kernel, "
        "exactly the window's pairs); *blocked*: `lmask.blocked.blocked_attention` (SDPA flash kernel on key slabs); "
        "*tiled*: `lmask.band.tiled_attention` (the same C++ file's GEMM tiles; at w = T full causal attention); "
        "**bold** = the kernel the dispatch picks. Fraction of ideal = (needed / computed pairs) x (speed per "
        "computed pair relative to causal SDPA): *computed / needed* is the tiling's extra work (1 for band; "
        "`blocked_pairs`, `tiled_pairs`), *per-pair speed* what is left. *Memory floor* (forward): one op that reads "
        "q, k, v and writes the output, the least any kernel moves; *attainable* = min(ideal, causal / floor).",
        "",
        "| mode | T | window | kernel | time (ms) | causal (ms) | speedup | ideal | fraction of ideal "
        "| computed / needed pairs | per-pair speed vs causal | memory floor (ms) | attainable |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(kernel, key=lambda r: (r["mode"], r["seq_len"], r["window"], r.get("kernel", "blocked"))):
        name = r.get("kernel", "blocked")
        name = f"**{name}**" if r.get("dispatched", True) else name
        pairs = "n/a | n/a"
        if r.get("pair_overhead") is not None:
            pairs = f"{r['pair_overhead']:.2f} | {r['pair_rate_vs_causal']:.2f}"
        bound = "n/a | n/a"  # fwd+bwd rows, and records from before the floor was measured
        if r.get("attainable") is not None:
            bound = f"{r['floor_time_s'] * 1e3:.2f} | {r['attainable']:.1f}x"
        lines.append(
            f"| {r['mode']} | {r['seq_len']} | {r['window']} | {name} | {r['time_s'] * 1e3:.1f} "
            f"| {r['full_time_s'] * 1e3:.1f} | {r['speedup']:.2f}x | {r['ceiling']:.1f}x | {r['efficiency']:.2f} "
            f"| {pairs} | {bound} |"
        )
    for f in files.values():
        cross = f.get("crossover", {})
        for key, other in (("measured", "blocked"), ("measured_tiled", "tiled")):
            for mode, by_T in cross.get(key, {}).items():
                for T, c in by_T.items():
                    lines.append(
                        f"\nCrossover ({mode}, T={T}): band faster than {other} at w = {c['band_faster_at']}, {other} "
                        f"at {c[f'{other}_faster_at']}; the dispatch sends w <= {cross['dispatch_band_max_window']} "
                        "to band on the CPU, forward and fwd+bwd."
                    )
    return lines


def train_lines(train: dict) -> list[str]:
    """benchmark_train's table: the pipeline's training step against the reference step and the matmul peak."""
    s, run = train["summary"], train["run"]
    dims = run["dims"]
    lines = [
        "",
        f"The training step at the experiment's dims ({dims['n_layer']} layers x {dims['n_embd']}, {dims['n_head']} "
        f"heads, vocabulary {dims['vocab_size']}, batch {dims['batch']} x {dims['seq_len']}; "
        f"{run['train_gflop_per_token'] * 1e3:.1f} MFLOP per token fwd+bwd), {run['rounds']} interleaved rounds "
        f"(benchmark_train). *reference*: the step before this benchmark (gelu_new, transformers' loss, causal "
        f"SDPA); *pipeline*: the training stages' step (exact GELU, lmask's fused loss and attention kernels). Host "
        f"fp32 matmul rate, measured in the same process: {s['matmul_gflops']:.0f} GFLOP/s. Losses of the two sides "
        f"differ by {run['max_abs_loss_diff']:.1e} (exact GELU against its tanh approximation, and rounding).",
        "",
        "| step | median (s) | tokens/s | GFLOP/s | fraction of matmul peak |",
        "|---|---|---|---|---|",
    ]
    for r in train["records"]:
        lines.append(
            f"| {r['side']} | {r['step_s_median']:.3f} | {r['tokens_per_s']:.0f} | {r['gflops']:.1f} "
            f"| {r['fraction_of_matmul_peak']:.2f} |"
        )
    rounds = run["round_speedups"]
    lines += [
        "",
        f"Speedup of the pipeline's step over the reference: {s['speedup_vs_reference']:.2f}x (median of the "
        f"per-round ratios, {min(rounds):.2f}–{max(rounds):.2f}).",
    ]
    return lines


def benchmark_markdown(
    files: dict[str, dict], made_by: str = "`dvc repro report` (lmask/bench_tables.py) from metrics/benchmark/"
) -> str:
    """README's benchmark block from the benchmark stages' files: model table, kernel table, targets. ``made_by``
    names the command and the files in the header comment (tools/bench_long.py passes its own)."""
    train = files.get("train")
    files = {k: f for k, f in files.items() if k != "train"}
    records = [r for f in files.values() for r in f["records"]]
    if not records:
        raise DataError("no benchmark records: run `dvc repro benchmark_kernel benchmark` first")
    runs = [f["run"] for f in files.values() if "device" in f["run"]]
    model = [r for r in records if r["mode"] in ("fwd", "fwd_bwd") and r["schedule"] != "full"]
    model.sort(key=lambda r: (r["mode"], r["seq_len"], r["schedule"]))
    reps = max(len(r["times_s"]) for r in model) if model else 0
    seconds = sum(float(r["elapsed"].split()[0]) for r in runs)
    paths = sorted({p for r in records for p in r.get("attention_paths", [])})
    lines = [
        f"<!-- generated by {made_by}; do not edit -->",
        "",
        f"Device `{runs[0]['device']}`, {runs[0]['threads']} threads; one stage per schedule, each timing that "
        f"schedule and full attention interleaved in one process, {reps} timed rounds (speedup: median of the "
        f"per-round ratios; per round: their range); {seconds / 60:.1f} min of timing in all. Attention paths "
        f"that ran: {', '.join(paths)}.",
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
    experiment = [
        (f["experiment"]["dims"], r) for f in files.values() if "experiment" in f for r in f["experiment"]["records"]
    ]
    if experiment:
        dims = experiment[0][0]
        lines += [
            "",
            f"The models the experiment evaluates (Q3 on its own dims: {dims['n_layer']} layers x {dims['n_embd']}, "
            f"{dims['n_head']} heads, vocabulary {dims['vocab_size']}, T = {dims['seq_len']}), same protocol. Here and "
            "above, a speedup over the FLOP ceiling means attention took more time than its FLOP share (causal SDPA "
            "runs at a lower FLOP rate than the dense matmuls on this CPU), so removing pairs saves more than the "
            "FLOP count says.",
            "",
            "| mode | T | schedule | time (s) | full (s) | speedup | per round | FLOP ceiling | within ceiling |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in sorted(experiment, key=lambda x: (x[1]["mode"], x[1]["schedule"])):
            lo, hi = r["round_spread"]
            within = "yes" if r["within_ceiling"] else "no"
            lines.append(
                f"| {r['mode']} | {r['seq_len']} | {r['schedule']} | {r['time_s']:.3f} | {r['full_time_s']:.3f} "
                f"| {r['speedup']:.2f}x | {lo:.2f}–{hi:.2f} | {r['ceiling']:.3f}x | {within} |"
            )
    kernel = [r for r in records if r["mode"].startswith("kernel")]
    if kernel:  # benchmark_kernel's file; the long benchmark has none
        lines += _kernel_lines(kernel, files)
    if train is not None:
        lines += train_lines(train)
    lines += ["", "Targets (checked by `lmask.bench_tables.benchmark_targets` on these records):", ""]
    for target, held, evidence in benchmark_targets(records):
        if held is None:
            lines.append(f"- {target}: not measured in these files")
        else:
            lines.append(f"- {target}: {'**holds**' if held else '**missed**'} ({evidence})")
    return "\n".join(lines) + "\n"


__all__ = ["benchmark_markdown", "benchmark_targets", "train_lines"]
