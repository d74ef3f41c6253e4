"""Speed of every schedule against full attention, beside its FLOP ceiling, in one process.

The DVC stages ``benchmark@<schedule>`` (one per schedule: that schedule and full attention, interleaved in one
process) and ``benchmark_kernel`` (one layer's attention) call ``run_schedule`` / ``run_kernel``, which write one
JSON file each: a ``summary`` (speedup, ceiling, efficiency per mode and T: what ``dvc metrics`` shows) and the
full ``records``.

Modes:
- ``fwd`` / ``fwd_bwd``: the whole model (random weights, GPT-2-small width by default, one layer per entry of the
  schedule's windows, i.e. model.n_layer; positions extended to the longest T). Each round times full attention and
  every schedule in the same process, full first in one round and last in the next, after ``warmup`` untimed rounds.
  ``time_s`` is the median over rounds; ``speedup`` is the median over rounds of t(full) / t(schedule) within the
  round (``round_speedups``); ``ceiling`` = FLOP ratio (``lmask.flops``), ``efficiency`` = speedup / ceiling.
- ``kernel``: one layer's attention alone at each window vs causal SDPA; ``ceiling`` = causal pairs / window pairs
  (the ideal), ``attainable`` = that ideal capped by a measured memory floor (see ``bench_kernel``).

Memory: on CUDA ``peak_mem_bytes`` is ``torch.cuda.max_memory_allocated`` during the timed call. On CPU it is the
rise of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs) over the RSS before the call: real
memory touched, including allocator caching, so read it as approximate. ``kv_cache_bytes`` is the analytic
generation cache after T tokens (batch 1, fp32; ``lmask.kv_cache``).
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lmask import attention
from lmask.attention import select_path, windowed_attention
from lmask.band import BAND_MAX_WINDOW
from lmask.dense import causal_attention
from lmask.device import autocast
from lmask.flops import attention_ceiling, blocked_pairs, flops_ceiling, tiled_pairs
from lmask.io import write_json
from lmask.kv_cache import kv_cache_bytes
from lmask.model import apply_windows, new_model, scratch_config
from lmask.params import BenchmarkParams, Schedule
from lmask.schedule import attention_pairs

# ---------------------------------------------------------------------------------------------------------------
# Measurement


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak(device: torch.device) -> int | None:
    """Reset the peak-memory counter; returns the baseline to subtract (CPU: current RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0
    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _rss_bytes("VmRSS")


def _peak(device: torch.device, base: int | None) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    hwm = _rss_bytes("VmHWM")
    return None if base is None or hwm is None else max(0, hwm - base)


def _timed(fn: Any, device: torch.device) -> tuple[float, int | None]:
    """Wall time of one call (synchronised) and its peak memory."""
    _sync(device)
    base = _reset_peak(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0, _peak(device, base)


def _rounds(keys: list[Any], warmup: int, repeats: int) -> Iterator[tuple[bool, Any]]:
    """(timed, key) for each call of interleaved rounds: ``warmup`` untimed rounds, then ``repeats`` timed ones, each
    round calling every key once. The timed rounds alternate order (as given, then reversed), so a linear drift in
    machine speed cancels exactly over an even number of rounds (and nearly over an odd one)."""
    for r in range(warmup + repeats):
        for key in keys if (r - warmup) % 2 == 0 else keys[::-1]:
            yield r >= warmup, key


def _model_step(model: torch.nn.Module, ids: torch.Tensor, mode: str) -> None:
    """One timed call, in the precision training uses (bf16 autocast on CUDA, fp32 on CPU)."""
    if mode == "fwd":
        with torch.no_grad(), autocast(ids.device):
            model(ids)
    else:
        with autocast(ids.device):
            loss = model(ids, labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)  # free the gradients before the next timed call


def _record(**kw: Any) -> dict[str, Any]:
    kw["efficiency"] = kw["speedup"] / kw["ceiling"]
    return kw


def bench_model(
    p: BenchmarkParams, schedule: Schedule, seq_lens: list[int], device: torch.device, progress: Any
) -> list[dict[str, Any]]:
    """fwd / fwd_bwd records of one schedule against full attention (interleaved rounds, one process); the model
    has one layer per entry of ``schedule.windows`` (model.n_layer: params.yaml resolves the schedules with it)."""
    n_layer = len(schedule.windows)
    config = scratch_config(p.vocab_size, n_layer, p.n_embd, p.n_head, max(seq_lens), 0.0, 0, 0)
    model = new_model(config, seed=0).to(device)
    full = [None] * n_layer
    ref = "<full attention>"  # the reference's key: not a valid schedule name, so it cannot collide with one
    names = [ref, schedule.name]
    windows = {ref: (full, 0), schedule.name: (schedule.windows, schedule.sinks)}
    fwd_bwd = set(seq_lens if p.fwd_bwd_seq_lens is None else p.fwd_bwd_seq_lens)
    records = []
    for T in seq_lens:
        ids = torch.randint(0, p.vocab_size, (p.batch_size, T), device=device)
        for mode in ["fwd", "fwd_bwd"] if T in fwd_bwd else ["fwd"]:
            times: dict[str, list[float]] = {n: [] for n in names}
            peaks: dict[str, list[int]] = {n: [] for n in names}
            paths: dict[str, collections.Counter] = {n: collections.Counter() for n in names}
            model.train(mode == "fwd_bwd")  # dropout is 0: train() only matters for autograd bookkeeping
            # Warm-up rounds run both once, untimed: the first call of a schedule at a new T and mode pays one-off
            # costs (allocator growth, first touch of its buffers, cached masks). Timed rounds alternate order (full
            # first, then full last; see _rounds).
            for timed, name in _rounds(names, p.warmup, p.repeats):
                apply_windows(model, *windows[name])
                before = attention.PATH_COUNTS.copy()
                t, peak = _timed(lambda ids=ids, mode=mode: _model_step(model, ids, mode), device)
                paths[name] += attention.PATH_COUNTS - before
                if timed:
                    times[name].append(t)
                    if peak is not None:
                        peaks[name].append(peak)
                progress.update(1)
            t_full = statistics.median(times[ref])
            for name in names[1:]:  # the reference's own times are each record's full_time_s
                w, sinks = windows[name]
                t = statistics.median(times[name])
                # Speedup per round (full and the schedule a few calls apart), then the median over rounds: on a
                # shared machine whose speed drifts by 10-20% over minutes this pairs each call with its nearest
                # baseline, where a ratio of medians would compare calls from different minutes.
                round_speedups = [f / s for f, s in zip(times[ref], times[name], strict=True)]
                records.append(
                    _record(
                        schedule=name,
                        seq_len=T,
                        mode=mode,
                        speedup=statistics.median(round_speedups),
                        round_speedups=round_speedups,
                        ceiling=flops_ceiling(w, T, p.n_embd, p.vocab_size, sinks),
                        device=device.type,
                        time_s=t,
                        full_time_s=t_full,
                        times_s=times[name],
                        tokens_per_s=p.batch_size * T / t,
                        peak_mem_bytes=max(peaks[name]) if peaks[name] else None,
                        kv_cache_bytes=kv_cache_bytes(w, T, sinks, p.n_head, p.n_embd // p.n_head),
                        full_kv_cache_bytes=kv_cache_bytes(full, T, 0, p.n_head, p.n_embd // p.n_head),
                        attention_paths=sorted(paths[name]),  # the paths that ran (a flex fallback shows)
                    )
                )
                progress.write(table(records[-1:], header=False))
    return records


KERNELS = ("band", "blocked", "tiled")  # the sparse CPU kernels the kernel benchmark times at every window


def _kernel_pairs(kernel: str, w: int, T: int) -> int:
    """Pairs the kernel computes, masked ones included (band: exactly the window's)."""
    return {"band": attention_pairs, "blocked": blocked_pairs, "tiled": tiled_pairs}[kernel](w, T)


def _kernel_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: int | None, kernel: str, grad: Any) -> Any:
    """One timed call: forward (no grad), or forward + backward when ``grad`` is given."""

    def fn() -> Any:
        return causal_attention(q, k, v) if w is None else windowed_attention(q, k, v, w, backend=kernel)

    if grad is None:

        def call() -> None:
            with torch.no_grad():
                fn()

        return call
    return lambda: torch.autograd.grad(fn(), (q, k, v), grad)


def bench_kernel(p: BenchmarkParams, seq_lens: list[int], device: torch.device, progress: Any) -> list[dict]:
    """One layer's attention at each window, band, blocked and tiled kernels, forward (``kernel``) and forward +
    backward (``kernel_fwd_bwd``), against causal SDPA in the same mode, beside the ideal pair ratio. The tiled kernel
    is also timed at w = T (``tiled_w<T>``): full causal attention, the path full layers take on the CPU.

    Also times a memory floor: one elementwise op that reads q, k and v and writes an output of the same shape, the
    traffic every attention kernel has at least. No kernel beats it, so ``attainable`` = min(ideal, causal / floor)
    bounds the forward speedup from above on this machine: where w is small, moving the tensors costs more than the
    pairs. ``dispatched`` marks the kernel ``lmask.attention.select_path`` picks for that window.
    """
    H, D = p.n_head, p.n_embd // p.n_head
    records = []
    for T in seq_lens:
        q, k, v = (torch.randn(p.batch_size, T, H, D, device=device).transpose(1, 2) for _ in range(3))
        out = torch.empty_like(q)
        for mode in ("kernel", "kernel_fwd_bwd"):
            grad = None
            if mode == "kernel_fwd_bwd":
                q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
                grad = torch.randn(p.batch_size, T, H, D, device=device)
            fns: dict[Any, Any] = {None: _kernel_call(q, k, v, None, "causal", grad)}
            if grad is None:
                fns["floor"] = lambda q=q, k=k, v=v, out=out: torch.addcmul(q, k, v, out=out)
            for w in p.kernel_windows:
                for kernel in KERNELS:
                    if w < T and (kernel != "band" or w <= p.band_max_window):
                        fns[(kernel, w)] = _kernel_call(q, k, v, w, kernel, grad)
            fns[("tiled", T)] = _kernel_call(q, k, v, T, "tiled", grad)
            times: dict[Any, list[float]] = {key: [] for key in fns}
            for fn in fns.values():  # warm-up
                fn()
            for _, key in _rounds(list(fns), 0, p.kernel_repeats):  # order alternates, as in bench_model
                times[key].append(_timed(fns[key], device)[0])
            progress.update(1)
            t_causal = statistics.median(times[None])
            t_floor = statistics.median(times["floor"]) if "floor" in times else None
            for key in fns:
                if key is None or key == "floor":
                    continue
                kernel, w = key
                round_speedups = [c / t for c, t in zip(times[None], times[key], strict=True)]
                ideal = attention_ceiling(w, T)
                speedup = statistics.median(round_speedups)
                # fraction of ideal = (needed / computed pairs) x (speed per computed pair relative to causal SDPA)
                computed = _kernel_pairs(kernel, w, T)
                probe = torch.empty(1, 1, T, 1, device=device, requires_grad=mode != "kernel")  # training or not
                records.append(
                    _record(
                        schedule=f"{kernel}_w{w}",
                        kernel=kernel,
                        dispatched=select_path(probe, probe, w) == kernel,
                        window=w,
                        seq_len=T,
                        mode=mode,
                        speedup=speedup,
                        round_speedups=round_speedups,
                        ceiling=ideal,
                        pair_overhead=computed / attention_pairs(w, T),
                        pair_rate_vs_causal=speedup * computed / attention_pairs(None, T),
                        floor_time_s=t_floor,
                        attainable=None if t_floor is None else min(ideal, t_causal / t_floor),
                        device=device.type,
                        time_s=statistics.median(times[key]),
                        full_time_s=t_causal,
                        times_s=times[key],
                        tokens_per_s=p.batch_size * T / statistics.median(times[key]),
                        peak_mem_bytes=None,
                        kv_cache_bytes=kv_cache_bytes([w], T, 0, H, D),
                        attention_paths=[kernel],
                    )
                )
    return records


def crossover(records: list[dict[str, Any]], other: str = "blocked") -> dict[str, Any]:
    """Per kernel mode and T: the largest window up to which the band kernel is faster than ``other`` at every timed
    window (None when ``other`` wins already at the smallest), and the windows where each won."""
    out: dict[str, Any] = {}
    for mode in ("kernel", "kernel_fwd_bwd"):
        for T in sorted({r["seq_len"] for r in records if r["mode"] == mode}):
            rows = {(r["kernel"], r["window"]): r for r in records if r["mode"] == mode and r["seq_len"] == T}
            both = sorted(w for kernel, w in rows if kernel == "band" and (other, w) in rows)
            band_wins = [w for w in both if rows[("band", w)]["speedup"] > rows[(other, w)]["speedup"]]
            last = None
            for w in both:
                if w not in band_wins:
                    break
                last = w
            out.setdefault(mode, {})[str(T)] = {
                "band_faster_up_to": last,
                "band_faster_at": band_wins,
                f"{other}_faster_at": [w for w in both if w not in band_wins],
            }
    return out


# ---------------------------------------------------------------------------------------------------------------
# Output


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Nested dict for ``dvc metrics`` (which does not read a top-level list)."""
    out: dict[str, Any] = {}
    for r in records:
        row = {k: round(r[k], 4) for k in ("speedup", "ceiling", "efficiency")}
        out.setdefault(r["schedule"], {}).setdefault(r["mode"], {})[str(r["seq_len"])] = row
    return out


def table(records: list[dict[str, Any]], header: bool = True) -> str:
    """Plain-text table of the records (printed at the end of a run)."""
    head = (
        f"{'mode':<8}{'schedule':<12}{'T':>6}{'time_s':>9}{'full_s':>9}{'speedup':>9}{'ceiling':>9}"
        f"{'eff':>7}{'tok/s':>9}{'peak_MB':>9}{'kv_MB':>8}"
    )
    lines = [head, "-" * len(head)] if header else []
    for r in records:
        peak = "-" if r["peak_mem_bytes"] is None else f"{r['peak_mem_bytes'] / 2**20:.0f}"
        lines.append(
            f"{r['mode']:<8}{r['schedule']:<12}{r['seq_len']:>6}{r['time_s']:>9.3f}{r['full_time_s']:>9.3f}"
            f"{r['speedup']:>9.3f}{r['ceiling']:>9.3f}{r['efficiency']:>7.2f}{r['tokens_per_s']:>9.0f}"
            f"{peak:>9}{r['kv_cache_bytes'] / 2**20:>8.1f}"
        )
    return "\n".join(lines)


def pick(p: BenchmarkParams, cpu_seq_lens: list[int] | None = None) -> tuple[torch.device, list[int]]:
    """Device and sequence lengths (``gpu_seq_lens`` on CUDA; on the CPU ``cpu_seq_lens``, default ``seq_lens``).
    CPU threads are not set here: the caller pinned cpu_threads before torch loaded (``lmask.determinism.pin_cpu``),
    and the file records the count that ran."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if p.device == "auto" else p.device)
    return device, p.gpu_seq_lens if device.type == "cuda" else (cpu_seq_lens or p.seq_lens)


def _write(
    out: Path, records: list[dict[str, Any]], device: torch.device, elapsed: float, **extra: Any
) -> dict[str, Any]:
    # Run facts are strings or live inside the records list, which dvc metrics skips: only the summary is compared.
    info = {"device": device.type, "threads": str(torch.get_num_threads()), "elapsed": f"{elapsed:.0f} s"}
    result = {"summary": summary(records), "run": info, **extra, "records": records}
    write_json(out, result, indent=1)
    print(table(records))
    print(f"{device.type}, {torch.get_num_threads()} threads, {elapsed:.0f} s; wrote {out}")
    return result


EXPERIMENT_DIMS = ("n_embd", "n_head", "vocab_size", "seq_len")  # the depth is the schedule's (model.n_layer)


def experiment_params(p: BenchmarkParams, dims: dict[str, int]) -> BenchmarkParams:
    """The benchmark params at the experiment's own model dims and context (``dims``: n_embd, n_head, vocab_size,
    seq_len), fwd and fwd+bwd at that one T, ``experiment_repeats`` rounds."""
    T = dims["seq_len"]
    model = {k: dims[k] for k in ("n_embd", "n_head", "vocab_size")}
    return dataclasses.replace(
        p, **model, seq_lens=[T], gpu_seq_lens=[T], fwd_bwd_seq_lens=[T], repeats=p.experiment_repeats
    )


def _ceiling_check(records: list[dict[str, Any]]) -> None:
    """A speedup above its FLOP ceiling is either noise (the ceiling lies within the per-round ratios) or a real
    effect the FLOP model misses (e.g. the smaller KV working set, or SDPA's causal kernel being slower per pair
    than the sparse ones); the records say which."""
    for r in records:
        rounds = r["round_speedups"]
        r["within_ceiling"] = r["speedup"] <= r["ceiling"]
        r["ceiling_in_spread"] = min(rounds) <= r["ceiling"]
        r["round_spread"] = [min(rounds), max(rounds)]


def run_schedule(
    p: BenchmarkParams, schedule: Schedule, out: Path, experiment: dict[str, int] | None = None
) -> dict[str, Any]:
    """Time one windowed schedule against full attention (the whole model); write ``out``.

    Both models have one layer per entry of ``schedule.windows`` (model.n_layer). With ``experiment`` (the
    experiment's width, heads, vocabulary and context: ``EXPERIMENT_DIMS``) and ``experiment_repeats`` > 0, also
    time the schedule at those dims: the models the experiment evaluates, not only GPT-2 small. They go to the
    file's ``experiment`` section (its own summary and records, and the dims with n_layer), beside the GPT-2-small
    ones.
    """
    device, seq_lens = pick(p)
    fwd_bwd = set(seq_lens if p.fwd_bwd_seq_lens is None else p.fwd_bwd_seq_lens)
    calls = (p.warmup + p.repeats) * 2 * sum(2 if T in fwd_bwd else 1 for T in seq_lens)
    exp_p, exp_dims = None, {}
    if experiment and p.experiment_repeats > 0:
        exp_p = experiment_params(p, experiment)
        exp_dims = {"n_layer": len(schedule.windows), **{k: experiment[k] for k in EXPERIMENT_DIMS}}  # recorded
        calls += (p.warmup + exp_p.repeats) * 2 * 2
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    with tqdm(total=calls, desc=f"benchmark {schedule.name}", unit="call") as progress:
        records = bench_model(p, schedule, seq_lens, device, progress)
        if exp_p is not None:
            exp_records = bench_model(exp_p, schedule, exp_p.seq_lens, device, progress)
            _ceiling_check(exp_records)
            extra["experiment"] = {"dims": exp_dims, "summary": summary(exp_records), "records": exp_records}
    _ceiling_check(records)
    return _write(out, records, device, time.perf_counter() - t0, **extra)


def run_kernel(p: BenchmarkParams, out: Path) -> dict[str, Any]:
    """One layer's attention at each ``kernel_windows`` against causal SDPA; write ``out``."""
    device, seq_lens = pick(p, p.kernel_seq_lens)  # one layer is cheap on the CPU: the targets' T = 3072 as well
    t0 = time.perf_counter()
    with tqdm(total=2 * len(seq_lens), desc="benchmark kernel", unit="T") as progress:
        records = bench_kernel(p, seq_lens, device, progress)
    # The dispatch constant (lmask.band.BAND_MAX_WINDOW) was set from this measurement (band against tiled, which
    # takes the larger windows where it built; against blocked, which takes them elsewhere); recorded beside it so a
    # rerun on another machine shows whether it still holds.
    cross = {
        "measured": crossover(records),
        "measured_tiled": crossover(records, "tiled"),
        "dispatch_band_max_window": BAND_MAX_WINDOW,
    }
    return _write(out, records, device, time.perf_counter() - t0, crossover=cross)


__all__ = ["bench_kernel", "bench_model", "crossover", "run_kernel", "run_schedule", "summary", "table"]
