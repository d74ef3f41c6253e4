#!/usr/bin/env bash
# The benchmark on a GPU, in one process: every windowed schedule in params.yaml against full attention, T =
# benchmark.gpu_seq_lens (up to 16384), fwd and fwd+bwd at every T, one untimed warm-up round and 5 timed rounds
# (order alternating), FlexAttention for windowed layers (attention backend auto on CUDA), plus the one-layer
# kernel comparison. Writes the same files as the pipeline's benchmark@<schedule> / benchmark_kernel stages write
# into metrics/benchmark/ ({"summary", "run", "records"}), one folder per device:
#
#   <DEST>/benchmark_<device-slug>/<schedule>.json     one per schedule that is not full attention
#   <DEST>/benchmark_<device-slug>/kernel.json
#
# Each file's "run" section names the device and the attention paths that ran (a FlexAttention fallback shows as
# flex_fallback). The table of every record is printed at the end.
#
#   bash scripts/gpu_benchmark.sh [DEST]     # from anywhere; DEST defaults to $OUT or <repo>/metrics
#
# Environment: BENCH_OVERRIDES='{"repeats": 3}' (JSON of benchmark fields, merged last and validated like
# params.yaml); BENCH_DEVICE=cpu runs the same script on a CPU (the tests do this, with tiny overrides);
# BENCH_PARAMS=path/to/params.yaml (default: the repo's params.yaml).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$(mkdir -p "${1:-${OUT:-$ROOT/metrics}}" && cd "${1:-${OUT:-$ROOT/metrics}}" && pwd)
cd "$ROOT"
export PYTHONUNBUFFERED=1

DEST="$DEST" python - <<'PY'
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

from lmask.params import BenchmarkParams, ParamsError, load_params, section_from_dict


def fail(msg: str) -> None:
    raise SystemExit(f"gpu_benchmark.sh: {msg}")


device = os.environ.get("BENCH_DEVICE", "cuda")
try:
    params = load_params(os.environ.get("BENCH_PARAMS", "params.yaml"))
    overrides = json.loads(os.environ.get("BENCH_OVERRIDES") or "{}")
    if not isinstance(overrides, dict):
        raise ParamsError(f"BENCH_OVERRIDES must be a JSON object of benchmark fields, got {overrides!r}")
    section_from_dict(BenchmarkParams, overrides, "benchmark")  # unknown keys and wrong types name the field
    bench_params = dataclasses.replace(
        params.benchmark,
        device=device,
        fwd_bwd_seq_lens=None,  # fwd+bwd at every T
        warmup=1,
        repeats=5,
    )
    bench_params = dataclasses.replace(bench_params, **overrides)
    bench_params.check()
except ParamsError as err:
    fail(f"params: {err}")
except json.JSONDecodeError as err:
    fail(f"BENCH_OVERRIDES is not valid JSON: {err}")
n_layer = bench_params.n_layer
wrong = [s.name for s in params.schedules.values() if len(s.windows) != n_layer]
if wrong:
    fail(f"benchmark.n_layer ({n_layer}) differs from the layer count of schedules {wrong} (model.n_layer)")

from lmask.determinism import pin_cpu  # noqa: E402

pin_cpu(params.cpu_threads)  # as every stage does, before torch loads (CPU numerics and threads)
import torch  # noqa: E402  (after validation: a bad value fails before torch loads)

from lmask import benchmark  # noqa: E402
from lmask.io import write_json  # noqa: E402

if device == "cuda":
    if not torch.cuda.is_available():
        fail("no CUDA device visible (set BENCH_DEVICE=cpu to run it on a CPU)")
    name = torch.cuda.get_device_name(0)
else:
    name = device
slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
dest = Path(os.environ["DEST"]) / f"benchmark_{slug}"
print(f"device: {name}; torch {torch.__version__}; writing {dest}", flush=True)

jobs = [("kernel", None)] + [(s.name, s) for s in params.schedules.values() if not s.is_full]
records = []
for file_name, schedule in jobs:
    out = dest / f"{file_name}.json"
    if schedule is None:
        result = benchmark.run_kernel(bench_params, out)
    else:
        result = benchmark.run_schedule(bench_params, schedule, out)
    paths = sorted({p for r in result["records"] for p in r["attention_paths"]})
    # Run facts stay strings (dvc metrics compares only the summary's numbers).
    result["run"].update(
        device_name=name,
        attention_paths=", ".join(paths),
        torch=torch.__version__,
        source="scripts/gpu_benchmark.sh",
    )
    write_json(out, result, indent=1)
    if "flex_fallback" in paths:
        print(f"warning: {file_name}: FlexAttention failed and fell back to the blocked path", file=sys.stderr)
    records += result["records"]

print()
print(benchmark.table([r for r in records if r["mode"] != "kernel"]))
print()
print(benchmark.table([r for r in records if r["mode"] == "kernel"]))
ran = sorted({p for r in records for p in r["attention_paths"]})
print(f"device: {name}; attention paths: {', '.join(ran)}; wrote {len(jobs)} files to {dest}")
PY
