#!/usr/bin/env bash
# The benchmark on a GPU, in one process (every windowed schedule against full attention at benchmark.gpu_seq_lens,
# plus the one-layer kernel comparison): a wrapper that runs `python -m tools.gpu_benchmark` from the repository
# root; the module's docstring has the details. Writes DEST/benchmark_<device-slug>/<schedule>.json and kernel.json.
#
#   bash tools/gpu_benchmark.sh [DEST] [FLAGS]   # from anywhere; DEST defaults to $OUT or <repo>/metrics
# Environment, as before: BENCH_OVERRIDES='{"repeats": 3}' (JSON of benchmark fields, merged last and validated),
# BENCH_DEVICE=cpu (run it on a CPU), BENCH_PARAMS=path/to/params.yaml (relative to the repo; default params.yaml).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ ${1:-} == -* ]] && set -- "" "$@"  # flags only: the default folder
DEST=$(mkdir -p "${1:-${OUT:-$ROOT/metrics}}" && cd "${1:-${OUT:-$ROOT/metrics}}" && pwd)
cd "$ROOT" && exec python -m tools.gpu_benchmark "$DEST" "${@:2}"
