"""The benchmark on a GPU, in one process: the pipeline's benchmark stages, every schedule in one run.

    python -m tools.gpu_benchmark [DEST] [--device cuda|cpu] [--overrides JSON] [--params params.yaml]
    bash tools/gpu_benchmark.sh [DEST]      # the same from anywhere: runs this module from the repository root

Times every windowed schedule in params.yaml against full attention at T = ``benchmark.gpu_seq_lens`` (up to
16384), fwd and fwd+bwd at every T, one untimed warm-up round and 5 timed rounds (order alternating), with
FlexAttention for windowed layers (attention backend auto on CUDA), plus the one-layer kernel comparison. The timing
is ``lmask.benchmark.run_schedule`` / ``run_kernel``, the functions the ``benchmark@<schedule>`` and
``benchmark_kernel`` stages call, so the files have the stages' format ({"summary", "run", "records"}), one folder
per device:

    <DEST>/benchmark_<device-slug>/<schedule>.json     one per schedule that is not full attention
    <DEST>/benchmark_<device-slug>/kernel.json

Unlike the stages it times GPT-2-small width only (no ``experiment`` section); the depth is model.n_layer and the CPU
threads are cpu_threads, as in the stages. Each file's "run" section also names the device and the attention paths
that ran. On CUDA every windowed layer should run FlexAttention: a record that did not (a fallback to the blocked
path, or a torch without FlexAttention) is named in a warning on stderr. The table of every record is printed at the
end.

Flags default to the environment variables tools/gpu_benchmark.sh has always read: DEST to $OUT (else
``metrics``), ``--device`` to BENCH_DEVICE (else cuda; cpu runs the same on a CPU, as the tests do with tiny
overrides), ``--overrides`` to BENCH_OVERRIDES (a JSON object of benchmark fields, merged last and validated like
params.yaml, e.g. '{"repeats": 3}'), ``--params`` to BENCH_PARAMS (else params.yaml). A bad value ends the run in
one line naming the field, exit code 2, before torch loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from lmask.io import WriteError, write_json
from lmask.params import BenchmarkParams, Params, ParamsError, Schedule, load_params, section_from_dict

PROG = "gpu_benchmark"


def fail(msg: str) -> NoReturn:
    print(f"{PROG}: {msg}", file=sys.stderr)
    raise SystemExit(2)


def parse_overrides(text: str | None) -> dict[str, Any]:
    """The JSON object of benchmark fields; a non-object or bad JSON raises ParamsError naming the option."""
    try:
        overrides = json.loads(text or "{}")
    except json.JSONDecodeError as err:
        raise ParamsError(f"--overrides / BENCH_OVERRIDES is not valid JSON: {err}") from None
    if not isinstance(overrides, dict):
        raise ParamsError(f"--overrides / BENCH_OVERRIDES must be a JSON object of benchmark fields, got {overrides!r}")
    return overrides


def gpu_bench_params(params: Params, device: str, overrides: dict[str, Any]) -> BenchmarkParams:
    """params.yaml's benchmark section on ``device``, fwd+bwd at every T, 1 warm-up and 5 timed rounds, then
    ``overrides``; validated (ParamsError names the field)."""
    section_from_dict(BenchmarkParams, overrides, "benchmark")  # unknown keys and wrong types name the field
    bench = dataclasses.replace(params.benchmark, device=device, fwd_bwd_seq_lens=None, warmup=1, repeats=5)
    bench = dataclasses.replace(bench, **overrides)
    bench.check()
    return bench


def device_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia_h200': the folder name of a device's results."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def missing_flex(schedule: Schedule, records: Iterable[dict[str, Any]], device_type: str) -> list[str]:
    """The records of ``schedule`` that should have run FlexAttention and did not, as 'mode@T (paths)'.

    On CUDA, backend auto sends every layer whose window is below T to FlexAttention. Looking for a
    ``flex_fallback`` count alone is not enough: once a flex call fails, ``lmask.attention`` stops choosing flex for
    the rest of the process, so only the first schedule would show the fallback and every later one would look like
    a clean run of the blocked path; a torch without FlexAttention never counts a fallback at all. So: every record
    with a window below its T must show ``flex`` and no ``flex_fallback``.
    """
    if device_type != "cuda":
        return []  # backend auto never picks flex on a CPU (the blocked path is faster there)
    out = []
    for r in records:
        windowed = any(w is not None and w < r["seq_len"] for w in schedule.windows)
        paths = r["attention_paths"]
        if windowed and ("flex" not in paths or "flex_fallback" in paths):
            out.append(f"{r['mode']}@{r['seq_len']} ({', '.join(paths)})")
    return out


def run(params: Params, bench: BenchmarkParams, dest: Path, source: str) -> Path:
    """Time the kernel comparison and every windowed schedule with lmask.benchmark; write and print the results."""
    import torch  # after pin_cpu (main): CPU numerics and threads are read when torch loads

    from lmask import benchmark

    device_type = bench.device
    if device_type == "auto":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        if not torch.cuda.is_available():
            fail("no CUDA device visible (--device cpu / BENCH_DEVICE=cpu runs it on a CPU)")
        name = torch.cuda.get_device_name(0)
    else:
        name = device_type
    folder = dest / f"benchmark_{device_slug(name)}"
    print(f"device: {name}; torch {torch.__version__}; writing {folder}", flush=True)

    jobs: list[tuple[str, Schedule | None]] = [("kernel", None)]
    jobs += [(s.name, s) for s in params.schedules.values() if not s.is_full]  # full attention: nothing to time
    records: list[dict[str, Any]] = []
    problems = []
    for file_name, schedule in jobs:
        out = folder / f"{file_name}.json"
        result = benchmark.run_kernel(bench, out) if schedule is None else benchmark.run_schedule(bench, schedule, out)
        paths = sorted({p for r in result["records"] for p in r["attention_paths"]})
        # Run facts stay strings (dvc metrics compares only the summary's numbers).
        result["run"].update(device_name=name, attention_paths=", ".join(paths), torch=torch.__version__, source=source)
        write_json(out, result, indent=1)
        if schedule is not None:
            missed = missing_flex(schedule, result["records"], device_type)
            if missed:
                problems.append(file_name)
                print(f"warning: {file_name}: no FlexAttention in {'; '.join(missed)}", file=sys.stderr)
        records += result["records"]

    print()
    print(benchmark.table([r for r in records if not r["mode"].startswith("kernel")]))
    print()
    print(benchmark.table([r for r in records if r["mode"].startswith("kernel")]))
    ran = sorted({p for r in records for p in r["attention_paths"]})
    print(f"device: {name}; attention paths: {', '.join(ran)}; wrote {len(jobs)} files to {folder}")
    if problems:
        print(f"warning: FlexAttention did not run everywhere it should have: {', '.join(problems)}", file=sys.stderr)
    return folder


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    p = argparse.ArgumentParser(
        prog=f"python -m tools.{PROG}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("dest", nargs="?", type=Path, default=Path(env.get("OUT") or "metrics"), help="$OUT or metrics")
    p.add_argument("--device", default=env.get("BENCH_DEVICE") or "cuda", help="cuda | cpu (BENCH_DEVICE; cuda)")
    p.add_argument("--overrides", default=env.get("BENCH_OVERRIDES"), help="JSON benchmark fields (BENCH_OVERRIDES)")
    p.add_argument("--params", type=Path, default=Path(env.get("BENCH_PARAMS") or "params.yaml"), help="BENCH_PARAMS")
    args = p.parse_args(argv)
    # Everything that can be wrong in the input is checked here, before torch loads and anything is timed.
    try:
        params = load_params(args.params)
        bench = gpu_bench_params(params, args.device, parse_overrides(args.overrides))
    except ParamsError as err:
        fail(f"params: {err}")

    from lmask.determinism import pin_cpu

    if "torch" not in sys.modules:  # in-process callers (tests) may have loaded torch already
        pin_cpu(params.cpu_threads)  # as every stage does: CPU threads and kernels fixed before torch loads
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show as they come, also through a pipe
    try:
        run(params, bench, args.dest.resolve(), source=f"python -m tools.{PROG}")
    except WriteError as err:  # a full disk: one line, not a traceback
        fail(str(err))


if __name__ == "__main__":
    main()
