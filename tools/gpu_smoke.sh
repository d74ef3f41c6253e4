#!/usr/bin/env bash
# GPU smoke run of the GPU preset (50 steps of train_baseline@0 and train_masked@half-0-0, timed, peak GPU memory):
# a wrapper that runs `python -m tools.gpu_smoke` from the repository root; the module's docstring has the details.
#
#   bash tools/gpu_smoke.sh [RESULTS_DIR] [FLAGS]   # results default to $OUT or ./smoke-results (of the caller)
# Environment, as before: NPROC=2 (GPUs; micro batch 16 / NPROC), BACKEND=flex (force an attention path; default
# auto), SMOKE_PREPARE_ONLY=1 (write and validate the params, print them and the stage commands, train nothing).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ ${1:-} == -* ]] && set -- "" "$@"  # flags only: the default folder
RESULTS=$(mkdir -p "${1:-${OUT:-$PWD/smoke-results}}" && cd "${1:-${OUT:-$PWD/smoke-results}}" && pwd)
cd "$ROOT" && exec python -m tools.gpu_smoke "$RESULTS" "${@:2}"
