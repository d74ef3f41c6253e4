#!/usr/bin/env bash
# The benchmark on a GPU, in about 10 minutes: every schedule in params.yaml, T = benchmark.gpu_seq_lens (up to
# 16384), fwd and fwd+bwd at every T, one warm-up round and 5 timed rounds, FlexAttention for windowed layers.
# Writes metrics/benchmark_<device>.json (records, as metrics/benchmark.json) and prints the table.
#
#   bash scripts/gpu_benchmark.sh [OUT_DIR]     # from the repo root; OUT_DIR defaults to $OUT or ./metrics
#
# Environment: BENCH_OVERRIDES='{"repeats": 3}' (JSON merged into the benchmark section last);
# BENCH_DEVICE=cpu with tiny overrides runs the same script on a CPU (the tests do this).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$(mkdir -p "${1:-${OUT:-$ROOT/metrics}}" && cd "${1:-${OUT:-$ROOT/metrics}}" && pwd)
cd "$ROOT"
export PYTHONUNBUFFERED=1

DEST="$DEST" python - <<'PY'
import json
import os
import re
from pathlib import Path

import torch

from lmask.benchmark import benchmark_params, run
from lmask.params import load_params

params = load_params()
raw = dict(params.extra.get("benchmark") or {})
device = os.environ.get("BENCH_DEVICE", "cuda")
if device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("gpu_benchmark.sh: no CUDA device visible (set BENCH_DEVICE=cpu to run it on a CPU)")
name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
dest = Path(os.environ["DEST"])
raw.update(
    device=device,
    schedules=None,  # every schedule
    fwd_bwd_seq_lens=None,  # fwd+bwd at every T
    warmup=1,
    repeats=5,
    output=str(dest / f"benchmark_{slug}.json"),
    summary=str(dest / f"benchmark_{slug}_summary.json"),
    plot=str(dest / f"benchmark_{slug}.csv"),
)
raw.update(json.loads(os.environ.get("BENCH_OVERRIDES", "{}")))
records = run(benchmark_params(raw), params.schedules)
for r in records:
    r["device_name"] = name
Path(raw["output"]).write_text(json.dumps(records, indent=1) + "\n")
print(f"device: {name}; wrote {raw['output']}")
PY
