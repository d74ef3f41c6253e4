"""Faults a user meets: each names its field or file in one line, and nothing is lost or wrong on disk.

Bad params fail in the `validate` stage, which every other stage depends on, so DVC removes no result before the
check runs (tried on the tiny pipeline, marked slow). Data errors name the file (and the params field). Remote
corruption is covered in test_remote.py and a truncated checkpoint in test_train.py. The other faults (stale resume
after an input change, unchecked numbers, local cache corruption, NaN loss, full disk, remotes without verify, timings
in model folders, cpu_threads, unpinned training) are tried at unit level, or on a small DVC repo, below.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import lmask.train
from lmask.determinism import PINNED
from lmask.params import MixParams, ParamsError, TrainParams, params_from_dict
from stages import cli
from tests.conftest import run, stages_ran
from tests.test_remote import flip_byte, local_object, md5_of

KEPT = ("metrics", "plots", "models", "eval", "data")


def snapshot(repo: Path) -> dict[str, str]:
    """SHA-256 of every result file (what a failed run must leave alone)."""
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in KEPT
        for p in sorted((repo / root).rglob("*"))
        if p.is_file()
    }


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    assert "Traceback" not in output, output
    return lines[0]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# A new explicit schedule after aggressive's last line, its first window(s) bad.
MINE = "    end_window: 1\n  mine:\n    type: explicit\n    windows: [{}, 32, 64, 128, 256, 512" + ", null" * 6 + "]\n"
BAD_PARAMS = [
    ("typo", "    end_window: 16\n", "    end_windw: 16\n", "schedules.half.end_windw"),
    ("window 0", "    end_window: 1\n", MINE.format("0"), r"schedules.mine.windows\[0\]"),
    ("window -4", "    end_window: 1\n", MINE.format("-4"), r"schedules.mine.windows\[0\]"),
    ("string window", "    end_window: 1\n", MINE.format("wide"), r"schedules.mine.windows\[0\]"),
    ("13 windows", "    end_window: 1\n", MINE.format("16, 16"), "schedules.mine.windows has 13 entries"),
    ("batch 0", "  batch_size: 4\n", "  batch_size: 0\n", "train.batch_size"),
    (
        "sinks > context",
        "    end_window: 16\n",
        "    end_window: 16\n    sinks: 1000\n",
        r"schedules.half.sinks \(1000\)",
    ),
    ("probe span 0", "  span: 4\n", "  span: 0\n", "copy.span"),
    ("no new tokens", "  new_tokens: 8\n", "  new_tokens: 0\n", "generation.new_tokens"),
]


@pytest.mark.slow
def test_bad_params_change_nothing_on_disk(tiny_repo):
    """Each bad params.yaml in turn (one repo copy: each case restores the file, and the snapshot proves it)."""
    params = tiny_repo / "params.yaml"
    original = params.read_text()
    before = snapshot(tiny_repo)
    for label, old, new, field in BAD_PARAMS:
        edit(params, old, new)
        proc = run(["dvc", "repro"], tiny_repo, check=False)
        params.write_text(original)
        assert proc.returncode != 0, label
        assert re.search(field, one_error_line(proc.stderr + proc.stdout)), (label, proc.stderr)
        assert stages_ran(proc.stdout) == ["validate"], (label, proc.stdout)
        assert snapshot(tiny_repo) == before, f"{label}: a rejected params.yaml changed results on disk"
    out = run(["dvc", "repro"], tiny_repo).stdout
    # Only the cheap check reruns (or DVC's run-cache restores its marker); every result is still valid.
    assert stages_ran(out) in ([], ["validate"]), out
    assert snapshot(tiny_repo) == before


@pytest.mark.slow
def test_empty_schedules_change_nothing_on_disk(tiny_repo):
    params = tiny_repo / "params.yaml"
    text = params.read_text()
    before = snapshot(tiny_repo)
    params.write_text(text[: text.index("\nschedules:")] + "\nschedules: {}\n")
    proc = run(["dvc", "repro"], tiny_repo, check=False)
    assert proc.returncode != 0
    assert "schedules must be a non-empty mapping" in one_error_line(proc.stderr + proc.stdout)
    assert snapshot(tiny_repo) == before


def use_text_corpus(repo: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        (repo / "corpus" / name).write_bytes(content)
    edit(repo / "params.yaml", "  source: embedded", "  source: text")
    edit(
        repo / "params.yaml",
        "  text_files: {}",
        "  text_files: {" + ", ".join(f"{n.split('.')[0]}: {n}" for n in files) + "}",
    )


ARTICLE = " = {t} = \n" + "The quick brown fox jumps over the lazy dog near the river bank every morning. " * 40 + "\n"


def corpus(n: int) -> bytes:
    return "".join(ARTICLE.format(t=f"Article {i}") for i in range(n)).encode()


@pytest.mark.slow
def test_invalid_utf8_names_the_file_and_field(tiny_repo):
    use_text_corpus(tiny_repo, {"train.txt": corpus(20) + b"\xff\xfe broken\n"})
    proc = run(["dvc", "repro", "download"], tiny_repo, check=False)
    assert proc.returncode != 0
    line = one_error_line(proc.stderr + proc.stdout)
    assert "corpus/train.txt: not valid UTF-8 at byte" in line and "data.text_files.train" in line
    assert not list((tiny_repo / "data").glob(".raw.*")), "a partial folder was left behind"


@pytest.mark.slow
def test_changed_corpus_file_reruns_download(tiny_repo):
    use_text_corpus(tiny_repo, {"train.txt": corpus(20)})
    run(["dvc", "repro", "download"], tiny_repo)
    assert "download" not in run(["dvc", "status", "download"], tiny_repo).stdout
    (tiny_repo / "corpus" / "train.txt").write_bytes(corpus(21))  # same path, new content
    status = run(["dvc", "status", "download"], tiny_repo).stdout
    assert "download" in status and "modified:" in status and "corpus" in status, status
    out = run(["dvc", "repro", "tokenize"], tiny_repo).stdout
    assert {"download", "tokenize"} <= set(stages_ran(out))


@pytest.mark.slow
def test_corpus_too_small_for_one_block_leaves_no_partial_folders(tiny_repo):
    # Three long articles (the test split takes them), forty stubs: validation and train get stubs only.
    long = "".join(f" = Long {i} = \n" + "words in a long article " * 100 + "\n" for i in range(3))
    stubs = "".join(f" = Stub {i} = \nshort.\n" for i in range(40))
    use_text_corpus(tiny_repo, {"train.txt": (long + stubs).encode()})
    proc = run(["dvc", "repro", "tokenize"], tiny_repo, check=False)
    assert proc.returncode != 0
    line = one_error_line(proc.stderr + proc.stdout)
    assert "no document fills one block of data.context_length=64" in line and "data/raw/train.jsonl" in line, line
    leftovers = [p.name for p in (tiny_repo / "data").iterdir() if p.name.startswith(".") and p.name != ".gitignore"]
    assert not leftovers, leftovers


# ------------------------------------------------------------------ stale resume, numbers, cache, NaN, disk
ROOT = Path(__file__).resolve().parents[1]


def python(args: list[str], cwd: Path, shell_prefix: str = "", path: Path = ROOT) -> subprocess.CompletedProcess:
    """``python ARGS`` (this venv; lmask and stages from ``path``) in ``cwd``, after shell line ``shell_prefix``."""
    cmd = f"{shell_prefix}exec {shlex.join([sys.executable, *args])}"
    return run(cmd, cwd, check=False, timeout=300, extra_env={"PYTHONPATH": str(path)})


def tiny_run(tmp_path: Path, folder: str = "run", **train) -> tuple[dict, lmask.train.Run]:
    """A tiny GPT-2 on random tokens and the run "baseline" that trains it (writes under tmp_path/folder)."""
    from lmask.model import new_model, scratch_config

    model = new_model(scratch_config(64, 1, 16, 2, 16, 0.0, 0, 0), seed=0)
    blocks = np.random.default_rng(0).integers(0, 64, size=(16, 16))
    cfg = TrainParams(steps=2, batch_size=2, micro_batch_size=2, warmup_steps=0, eval_every=1, eval_batches=1)
    cfg = dataclasses.replace(cfg, device="cpu", **train)
    out = tmp_path / folder
    run_ = lmask.train.Run("baseline", 0, out / "model", out / "live", out / "ckpt", {"inputs": "fixed"})
    mix = MixParams(min_period=2, max_period=8)  # periodic rows of random ids fit the 64-token vocabulary
    return {"model": model, "train_blocks": blocks, "val_blocks": blocks[:4], "cfg": cfg, "mix": mix}, run_


CHECKPOINT_SCRIPT = """\
import sys
from pathlib import Path
import torch, yaml
from lmask import checkpoint
from lmask.device import Distributed
from lmask.provenance import stage_inputs
model = torch.nn.Linear(4, 4)
opt = torch.optim.AdamW(model.parameters())
world = Distributed(torch.device("cpu"))
inputs = stage_inputs("train_baseline", {"baseline": 0}, yaml.safe_load(Path("params.yaml").read_text()))
if sys.argv[1] == "save":  # state.prev.pt and state.pt
    for step in (50, 100):
        checkpoint.save(Path("ckpt"), model, opt, checkpoint.Progress(step=step), inputs, world)
else:
    before = [p.clone() for p in model.parameters()]
    step = checkpoint.load(Path("ckpt"), model, opt, inputs, "baseline", world).step
    print("step", step, "weights loaded:", not all(torch.equal(a, b) for a, b in zip(before, model.parameters())))
"""

CHANGES = {  # resume faults: each input dvc.yaml declares for the stage, changed between save and resume
    "kernel": ("lmask/csrc/band.cpp", lambda p: p.write_text(p.read_text() + "// edited\n"), "lmask/csrc/band.cpp"),
    "code": ("lmask/train.py", lambda p: p.write_text(p.read_text() + "# edited\n"), "lmask/train.py"),
    "data": (
        "data/tokenized/train.npy",
        lambda p: p.write_bytes(p.read_bytes()[::-1]),  # same size, same token counts, other content
        "data/tokenized",
    ),
    "threads": (
        "params.yaml",
        lambda p: p.write_text(p.read_text().replace("cpu_threads: 2", "cpu_threads: 1")),
        "params:cpu_threads",
    ),
}


@pytest.mark.parametrize("what", CHANGES)
def test_resume_after_an_input_change_restarts_from_step_0(tmp_path, what):
    """A checkpoint saved by one process, one of the stage's declared inputs changed (the C++ kernel, code, the
    data's content at equal size, cpu_threads), a new process resumes: it refuses, naming what changed."""
    for package in ("lmask", "stages"):
        shutil.copytree(ROOT / package, tmp_path / package)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "data/tokenized").mkdir(parents=True)
    np.save(tmp_path / "data/tokenized/train.npy", np.arange(4096, dtype=np.uint16))
    saved = python(["-c", CHECKPOINT_SCRIPT, "save"], tmp_path, path=tmp_path)
    assert saved.returncode == 0, saved
    unchanged = python(["-c", CHECKPOINT_SCRIPT, "load"], tmp_path, path=tmp_path)
    assert unchanged.stdout.splitlines()[-1] == "step 100 weights loaded: True", unchanged
    rel, change, named = CHANGES[what]
    change(tmp_path / rel)
    resumed = python(["-c", CHECKPOINT_SCRIPT, "load"], tmp_path, path=tmp_path)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed
    assert resumed.stdout.splitlines() == [
        f"baseline: checkpoint ckpt/state.pt was made from other inputs ({named} changed); starting from step 0",
        "step 0 weights loaded: False",
    ]


YAML11 = "train.lr must be a number, got the string '1.0e6' (YAML 1.1 needs a dot and a signed exponent: write 1.0e+6)"
NUMBERS = [
    ("masked.grad_clip", -1.0, r"masked.grad_clip must be > 0, got -1.0"),
    ("masked.grad_clip", 0, r"masked.grad_clip must be > 0, got 0"),
    ("train.lr", float("nan"), r"train.lr must be a finite number, got nan"),
    ("train.lr", float("inf"), r"train.lr must be a finite number, got inf"),
    ("masked.lr", float("nan"), r"masked.lr must be a finite number"),
    ("train.min_lr", float("nan"), r"train.min_lr must be a finite number"),
    ("train.weight_decay", float("nan"), r"train.weight_decay must be a finite number"),
    ("train.weight_decay", -0.1, r"train.weight_decay must be >= 0"),
    ("generation.temperature", float("nan"), r"generation.temperature must be a finite number"),
    ("train.lr", "1.0e6", re.escape(YAML11)),
]


@pytest.mark.parametrize("dotted, value, message", NUMBERS, ids=[f"{n[0]}={n[1]}" for n in NUMBERS])
def test_unchecked_numbers_name_the_field(dotted, value, message):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    section, key = dotted.split(".")
    raw[section][key] = value
    with pytest.raises(ParamsError, match=f"^{message}"):
        params_from_dict(raw)


def test_yaml11_exponent_is_explained_by_the_validate_stage(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    params = tmp_path / "params.yaml"
    params.write_text(text.replace("  lr: 0.002\n", "  lr: 1.0e6\n", 1))  # train.lr, the first lr in the file
    assert yaml.safe_load(params.read_text())["train"]["lr"] == "1.0e6"
    proc = python(["-m", "stages.validate", "--params", str(params), "--out", "ok"], tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == f"error: params.yaml: {YAML11}"
    assert not (tmp_path / "ok").exists()


def test_corrupt_local_cache_object_is_found_and_removed(tmp_path):
    """Bit rot in the cache (read-only file, same mtime): DVC checks it out silently. verify --cache names the output,
    --repair removes the object and the bad workspace copy, and `dvc pull` restores the right bytes."""
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "models" / "model.bin").write_bytes(os.urandom(65536))
    good = hashlib.sha256((repo / "models" / "model.bin").read_bytes()).hexdigest()
    for cmd in (
        "git init -q -b main",
        "dvc init -q",
        "dvc add -q models/model.bin",
        f"dvc remote add -d mine {tmp_path / 'remote'}",  # DVC's default: no verify
        "dvc push -q",
    ):
        run(cmd.split(), repo)
    md5 = md5_of(repo / "models" / "model.bin")
    flip_byte(local_object(repo / ".dvc" / "cache", md5), bit_rot=True)
    (repo / "models" / "model.bin").unlink()
    run(["dvc", "checkout"], repo)  # exit 0: the corrupted bytes reach the workspace (the fault)
    assert hashlib.sha256((repo / "models" / "model.bin").read_bytes()).hexdigest() != good

    found = python(["-m", "tools.remote", "verify", "--cache"], repo)
    assert found.returncode == 1 and "Traceback" not in found.stderr, found
    assert found.stdout.splitlines() == [
        f"corrupted: {md5}  models/model.bin",
        "1 objects checked, 1 corrupted, 0 repaired",
    ]
    assert found.stderr.splitlines() == [WARNING.format(name="mine")]

    repaired = python(["-m", "tools.remote", "verify", "--cache", "--repair"], repo)
    assert repaired.returncode == 0 and "Traceback" not in repaired.stderr, repaired
    assert repaired.stdout.splitlines()[0] == (
        f"removed: {md5}  models/model.bin  (restore with `dvc pull models/model.bin` or `dvc repro`)"
    )
    assert not local_object(repo / ".dvc" / "cache", md5).exists()
    assert not (repo / "models" / "model.bin").exists(), "the corrupted workspace copy was kept"
    run(["dvc", "pull", "-q"], repo)
    assert hashlib.sha256((repo / "models" / "model.bin").read_bytes()).hexdigest() == good


def test_nan_loss_ends_the_stage_in_one_line(tmp_path, capsys):
    kwargs, run_ = tiny_run(tmp_path, lr=1e30, grad_clip=1e30)
    run_.model_dir.mkdir(parents=True)
    (run_.model_dir / "model.safetensors").write_bytes(b"the previous model")
    with pytest.raises(SystemExit) as stop:
        cli.run(lambda: lmask.train.train(**kwargs, run=run_))
    assert stop.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert re.fullmatch(
        r"error: baseline: training loss became (nan|inf) at step \d \(lr [0-9.]+e\+[0-9]+\); lower the learning rate "
        r"\(lr=1e\+30\) or check the data\. DVC removed this stage's previous outputs before it ran: "
        r"`dvc checkout && git checkout metrics/` restores them \(models and arrays from the cache, the run's "
        r"metrics from git\)",
        line,
    ), line
    assert [p.name for p in run_.model_dir.iterdir()] == ["model.safetensors"]
    assert (run_.model_dir / "model.safetensors").read_bytes() == b"the previous model"


FULL_DISK = {
    "model folder (safetensors)": (
        "models/baseline",
        "import numpy as np\nfrom safetensors.numpy import save_file\nfrom lmask.io import atomic_dir\n"
        "def main():\n    with atomic_dir('models/baseline') as tmp:\n"
        "        save_file({'w': np.zeros(1 << 18, dtype=np.float32)}, str(tmp / 'model.safetensors'))\n",
    ),
    "checkpoint (torch.save)": (
        "checkpoints/baseline/state.pt",
        "import torch\nfrom lmask.io import write_with\n"
        "def main():\n"
        "    write_with('checkpoints/baseline/state.pt', lambda tmp: torch.save(torch.zeros(1 << 18), tmp))\n",
    ),
}


@pytest.mark.parametrize("label", list(FULL_DISK))
def test_full_disk_names_the_output_and_keeps_the_previous_one(tmp_path, label):
    """`ulimit -f 300` (150 KiB): Python ignores SIGXFSZ, so the write fails with EFBIG (torch: "unexpected pos",
    safetensors: "File too large")."""
    dest, code = FULL_DISK[label]
    previous = tmp_path / dest / "model.safetensors" if "." not in dest else tmp_path / dest
    previous.parent.mkdir(parents=True)
    previous.write_bytes(b"previous")
    proc = python(["-c", code + "from stages import cli\ncli.run(main)\n"], tmp_path, shell_prefix="ulimit -f 300; ")
    assert proc.returncode == 2, proc
    line = one_error_line(proc.stderr)
    assert (
        line.startswith(f"error: {dest}: could not write it (")
        and "`dvc checkout && git checkout metrics/` restores them" in line
    ), line
    assert previous.read_bytes() == b"previous"
    leftovers = [p for p in tmp_path.rglob(".*") if p.name.startswith((".baseline", ".state.pt"))]
    assert not leftovers, leftovers


WARNING = (
    "warning: DVC remote '{name}' does not verify downloads (a corrupted object would be checked out with exit 0): "
    "run `dvc remote modify {name} verify true`"
)


def test_remote_without_verify_is_flagged_by_the_validate_stage(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n['remote \"storage\"']\n    url = /a\n    verify = true\n"
        "['remote \"backup\"']\n    url = /b\n['remote \"mine\"']\n    url = /c\n"
    )
    (tmp_path / ".dvc" / "config.local").write_text("['remote \"mine\"']\n    verify = True\n")
    proc = python(["-m", "stages.validate", "--params", str(ROOT / "params.yaml"), "--out", "params.ok"], tmp_path)
    assert proc.returncode == 0, proc
    assert proc.stderr.splitlines() == [WARNING.format(name="backup")]
    assert (tmp_path / "params.ok").is_file()


def test_timings_and_host_stay_out_of_the_model_folder(tmp_path):
    """Two identical runs: byte-identical model folders (DVC hashes them); times and host live in the metrics."""
    folders = []
    for folder in ("a", "b"):
        kwargs, run_ = tiny_run(tmp_path, folder)
        lmask.train.train(**kwargs, run=run_)
        folders.append({p.name: p.read_bytes() for p in sorted(run_.model_dir.iterdir())})
    assert folders[0] == folders[1], "bit-identical weights, different model folder bytes"
    info = json.loads(folders[0]["train_info.json"])
    keys = re.findall(r'"(\w+)":', json.dumps(info))
    assert [k for k in keys if re.search(r"time|per_s|host|isa", k)] == [], info
    live = json.loads((tmp_path / "a" / "live" / "metrics.json").read_text())
    assert live["train_time_s"] >= 0 and live["tokens_per_s"] > 0 and set(live["host"]) == {"cpu", "isa"}


def test_every_torch_stage_takes_cpu_threads_as_a_param():
    from tests.test_dvc_yaml import entry_module, stage_bodies
    from tools.deps import _imported, closure

    torch_stages = {
        name
        for name, body in stage_bodies().items()
        if any(
            "torch" in {m.split(".")[0] for m in _imported(ROOT / f)}
            for f in closure(entry_module(body["cmd"]))
            if f.endswith(".py")  # the closure also holds the C++ kernel's source
        )
    }
    assert torch_stages == {
        "train_baseline",
        "train_masked",
        "evaluate_baseline",
        "evaluate",
        "benchmark",
        "benchmark_kernel",
        "benchmark_train",
    }
    assert [n for n in sorted(torch_stages) if "cpu_threads" not in stage_bodies()[n]["params"]] == []


def test_training_refuses_an_unpinned_cpu(tmp_path, monkeypatch):
    monkeypatch.delenv(PINNED, raising=False)
    kwargs, run_ = tiny_run(tmp_path)
    with pytest.raises(RuntimeError, match=r"^baseline: CPU numerics are not pinned; call lmask.determinism.pin_cpu"):
        lmask.train.train(**kwargs, run=run_)
    assert not run_.model_dir.exists() and not run_.checkpoint_dir.exists()


MALLINFO_PROBE = """
import ctypes, sys
if sys.argv[1] == "pinned":
    from lmask.determinism import pin_cpu
    pin_cpu(1)
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.mallinfo2.restype = Info
before = libc.mallinfo2().hblkhd
block = libc.malloc(64 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(ctypes.c_void_p(block))
print(mapped, libc.mallinfo2().arena)
"""


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33 (mallinfo2)")
def test_pinned_processes_keep_large_blocks_in_the_heap():
    """pin_cpu has glibc serve a 64 MB block from its heap and keep it after free (lmask.determinism.
    keep_freed_memory); without it glibc maps the block apart and returns it to the OS on free."""
    plain, pinned = (python(["-c", MALLINFO_PROBE, which], ROOT) for which in ("plain", "pinned"))
    assert plain.returncode == pinned.returncode == 0, plain.stderr + pinned.stderr
    plain_mapped, _ = map(int, plain.stdout.split())
    pinned_mapped, pinned_heap = map(int, pinned.stdout.split())
    assert plain_mapped >= 64 << 20  # glibc's default: a block this large is its own mapping
    assert pinned_mapped == 0 and pinned_heap >= 64 << 20  # pinned: in the heap, and still there after free


# ------------------------------------------------------------------------- issues 30 and 31: the tools in tools/
def tool(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m tools.<name> ARGS`` (this checkout's tools and lmask) in ``cwd``."""
    return python(["-m", *args], cwd)


def one_tool_error(proc: subprocess.CompletedProcess, prog: str) -> str:
    """The one stderr line of a tool that refused its input: exit 2, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "name",
    [
        "preset",
        "readme",
        "deps",
        "replicate",
        "remote",
        "stage_times",
        "bench_long",
        "profile_band",
        "profile_train",
        "ab_band",
        "copy_onset",
        "copy_recipe",
        "prefix_switch",
        "warmup_seeds",
        "gpu_smoke",
        "gpu_benchmark",
    ],
)
def test_every_tool_answers_help(name):
    proc = tool([f"tools.{name}", "--help"])
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: python -m tools.{name}"), proc
    assert "Traceback" not in proc.stderr, proc.stderr


def test_profile_train_refuses_bad_input_in_one_line(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert f"{missing}: params file not found" in one_tool_error(
        tool(["tools.profile_train", "--params", str(missing)]), "profile_train"
    )
    assert "--steps must be >= 1" in one_tool_error(tool(["tools.profile_train", "--steps", "0"]), "profile_train")


def test_profile_train_splits_the_tiny_step_into_parts_that_add_up(tiny_pipeline):
    """On the tiny preset's model: the three parts (attention, matmuls, the rest) are non-empty and their shares of
    the profiled time add up to 100 %; the step's GFLOP is the benchmark's per-token count times the batch."""
    proc = tool(["tools.profile_train", "--steps", "1", "--warmup", "1", "--rows", "3"], cwd=tiny_pipeline)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert set(parts) >= {"attention", "matmul", "rest"}, proc.stdout
    shares = [float(parts[k][3].rstrip("%")) for k in ("attention", "matmul", "rest")]
    assert min(shares) > 0 and abs(sum(shares) - 100) < 0.3, shares
    from lmask.params import load_params
    from lmask.train_bench import train_flops_per_token

    p = load_params(tiny_pipeline / "params.yaml")
    per_token = train_flops_per_token(p.model.n_layer, p.model.n_embd, p.tokenizer.vocab_size, p.context)
    expected = per_token * p.train.micro_batch_size * p.context / 1e9
    assert f"{expected:.1f} GFLOP:" in proc.stdout, proc.stdout


def test_ab_band_refuses_a_missing_or_foreign_candidate_in_one_line(tmp_path):
    missing = tmp_path / "nope.cpp"
    line = one_tool_error(tool(["tools.ab_band", "--candidate", str(missing)]), "ab_band")
    assert f"{missing}: file not found" in line, line
    foreign = tmp_path / "other.cpp"
    foreign.write_text("int main() { return 0; }\n")
    line = one_tool_error(tool(["tools.ab_band", "--candidate", str(foreign)]), "ab_band")
    assert f"{foreign}: no `TORCH_LIBRARY(lmask, m)` block" in line, line
    line = one_tool_error(tool(["tools.ab_band", "--candidate", str(foreign), "--calls", "0"]), "ab_band")
    assert "--calls must be >= 1" in line, line


def test_params_module_answers_help():
    proc = tool(["lmask.params", "--help"])
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m lmask.params"), proc


# --- tools.replicate run never deletes what it did not create (a workdir of `.` once deleted the repository)
def replicate_run(workdir: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return tool(["tools.replicate", "run", "--seeds", "3", "4", "5", "--workdir", str(workdir)], cwd)


def test_replicate_refuses_a_workdir_it_did_not_make(tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "thesis.tex").write_text("years of work\n")
    line = one_tool_error(replicate_run(workdir), "replicate")
    assert f"--workdir {workdir} exists and was not made by tools.replicate" in line, line
    assert (workdir / "thesis.tex").read_text() == "years of work\n"
    (tmp_path / "a-file").write_text("x")
    assert "is not a folder" in one_tool_error(replicate_run(tmp_path / "a-file"), "replicate")
    assert (tmp_path / "a-file").read_text() == "x"


def test_replicate_refuses_the_repository_and_every_folder_above_it(tmp_path):
    from tools.replicate import ReplicateError, check_workdir

    for path in (ROOT, ROOT.parent, Path("/")):  # the real repository: checked, never touched
        with pytest.raises(ReplicateError, match="refusing to replace it"):
            check_workdir(path, ROOT)
    repo = tmp_path / "repo"  # the command itself, run from a repository of its own
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    (repo / "params.yaml").write_text("seed: 0\n")
    (repo / ".lmask-replicate").write_text("")  # even a marker does not make the repository a workdir
    for workdir, what in ((repo, "the repository itself"), (tmp_path, "a folder above the repository")):
        assert what in one_tool_error(replicate_run(workdir, repo), "replicate")
    assert replicate_run(Path("."), repo).returncode == 2
    assert (repo / "params.yaml").read_text() == "seed: 0\n" and (repo / ".git").is_dir()


def test_replicate_reuses_its_own_marked_workdir(tmp_path):
    from tools.replicate import MARKER, claim_workdir

    workdir = claim_workdir(tmp_path / "new", ROOT)  # made here, marked
    assert (workdir / MARKER).is_file()
    (workdir / "old-run.txt").write_text("from the last run")
    assert claim_workdir(tmp_path / "new", ROOT) == workdir  # its own: emptied and reused
    assert sorted(p.name for p in workdir.iterdir()) == [MARKER]
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose
    assert (claim_workdir(tmp_path / "empty", ROOT) / MARKER).is_file()


# --- tools.replicate compare: rejections, and bad input in one line
def summary_with(words: dict[str, str]) -> dict:
    return {"baseline": {"baseline_seeds": [0]}, "half": {"gaps": {k: {"verdict": v} for k, v in words.items()}}}


def test_replicate_compare_counts_each_summarys_rejections(tmp_path):
    a = summary_with({"vs_full": "better", "zero_shot": "worse", "extra": "better"})  # extra: only in A
    b = summary_with({"vs_full": "no clear difference", "zero_shot": "worse"})
    for name, summary in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(summary))
    proc = tool(["tools.replicate", "compare", "a.json", "b.json", "--out", "r.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["rejections_a"], result["rejections_b"], result["total"], result["changed"]) == (2, 1, 2, 1)
    assert result["only_in_one"] == ["half/extra"]


@pytest.mark.parametrize(
    "content, says",
    [
        (None, "file not found"),
        ("{}", "not a summary"),
        ("[1, 2]", "not a summary"),
        ('{"baseline": {"gaps": ', "not valid JSON"),
        ('{"baseline": {}, "half": {"gaps": {"vs_full": {}}}}', "unexpected layout"),
    ],
)
def test_replicate_compare_names_a_bad_summary_in_one_line(tmp_path, content, says):
    (tmp_path / "good.json").write_text(json.dumps(summary_with({"vs_full": "better"})))
    if content is not None:
        (tmp_path / "bad.json").write_text(content)
    for args in (["bad.json", "good.json"], ["good.json", "bad.json"]):
        proc = tool(["tools.replicate", "compare", *args, "--out", "r.json"], tmp_path)
        line = one_tool_error(proc, "replicate")
        assert "bad.json" in line and says in line, line
        assert not (tmp_path / "r.json").exists()


# --- tools.readme: a removed marker or a bad summary, on a copy of the documents and their sources
@pytest.fixture
def docs_copy(tmp_path) -> Path:
    for name in ("README.md", "params.yaml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    for folder in ("docs", "metrics", "results"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def documents(root: Path) -> dict[str, str]:
    return {doc: (root / doc).read_text() for doc in ("README.md", "docs/results.md")}


@pytest.mark.parametrize(
    "doc, marker", [("README.md", "<!-- long:end -->"), ("docs/results.md", "<!-- replicate:start -->")]
)
def test_readme_names_a_removed_marker(docs_copy, doc, marker):
    edit(docs_copy / doc, marker, "")
    before = documents(docs_copy)
    for check in ([], ["--check"]):
        line = one_tool_error(tool(["tools.readme", "--root", str(docs_copy), *check]), "readme")
        assert f"{docs_copy / doc}: needs exactly one" in line and marker.replace(":end", ":start") in line, line
    assert documents(docs_copy) == before  # nothing written


@pytest.mark.parametrize(
    "content, says",
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),  # truncated
        (lambda text: "", "not valid JSON"),
        (lambda text: "[]", "not a summary"),
        (lambda text: '{"baseline": {}}', "unexpected layout"),
    ],
)
def test_readme_names_a_bad_summary(docs_copy, content, says):
    summary = docs_copy / "metrics" / "summary.json"
    summary.write_text(content(summary.read_text()))
    before = documents(docs_copy)
    line = one_tool_error(tool(["tools.readme", "--root", str(docs_copy)]), "readme")
    assert "metrics/summary.json" in line and says in line, line
    assert documents(docs_copy) == before


# --- tools.bench_long: a bad T in one line, before anything runs
@pytest.mark.parametrize(
    "args, field", [(["--seq-lens", "0"], "benchmark.seq_lens"), (["--repeats", "0"], "benchmark.repeats")]
)
def test_bench_long_names_a_bad_value_before_running(tmp_path, args, field):
    line = one_tool_error(tool(["tools.bench_long", *args, "--out", str(tmp_path / "out")]), "bench_long")
    assert field in line and "nothing was run" in line, line
    assert not (tmp_path / "out").exists()


# --- tools.preset: unknown preset, bad YAML, apply / refuse / --stack / --reset on a committed copy
@pytest.fixture
def preset_repo(tmp_path) -> Path:
    """params.yaml and presets/ in a git repo of their own (committed, for --reset)."""
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    run(["git", "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "params"], tmp_path)
    return tmp_path


def preset(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return tool(["tools.preset", *args, "--params", str(repo / "params.yaml")])


def test_preset_names_an_unknown_preset(preset_repo):
    before = (preset_repo / "params.yaml").read_text()
    line = one_tool_error(preset(preset_repo, "nope"), "preset")
    assert "no such preset: nope" in line and "tiny" in line, line  # lists the presets there are
    assert (preset_repo / "params.yaml").read_text() == before


def test_preset_names_bad_yaml(preset_repo):
    params = preset_repo / "params.yaml"
    before = params.read_text()
    (preset_repo / "presets" / "broken.yaml").write_text("train: {steps: [1, 2\n")
    line = one_tool_error(preset(preset_repo, "broken"), "preset")
    assert "presets/broken.yaml: not valid YAML" in line, line
    (preset_repo / "presets" / "list.yaml").write_text("- train\n")
    assert "must be a mapping" in one_tool_error(preset(preset_repo, "list"), "preset")
    assert params.read_text() == before
    params.write_text("train: [unclosed\n")
    assert f"{params}: not valid YAML" in one_tool_error(preset(preset_repo, "tiny"), "preset")


def test_preset_apply_refuse_stack_and_reset(preset_repo):
    params = preset_repo / "params.yaml"
    committed = params.read_text()
    assert preset(preset_repo, "tiny").returncode == 0
    applied = params.read_text()
    assert applied.startswith("# presets applied: tiny\n") and load_params_at(params).train.steps == 400
    line = one_tool_error(preset(preset_repo, "progressions"), "preset")
    assert "already has preset tiny applied" in line and "--stack" in line, line
    assert params.read_text() == applied  # refused: untouched
    proc = preset(preset_repo, "progressions", "--stack")
    assert proc.returncode == 0, proc.stderr
    assert params.read_text().startswith("# presets applied: tiny, progressions\n")
    proc = preset(preset_repo, "--reset")
    assert proc.returncode == 0 and "undid tiny, progressions" in proc.stdout, proc
    assert params.read_text() == committed
    assert preset(preset_repo, "tiny").returncode == 0  # a fresh start: no refusal


def load_params_at(path: Path):
    from lmask.params import load_params

    return load_params(path)


# ------------------------------------------------- resume and integrity: everything that made a model matches
def test_killed_run_resumes_to_a_byte_identical_model_folder(tmp_path):
    """Row 1: a run stopped mid-way (as kill -9 would, after its last checkpoint) and resumed by a new call writes the
    same model folder, byte for byte, as an uninterrupted run: the attention-call counts live in the run's metrics,
    carried over in the checkpoint, not in the folder."""
    kwargs, whole = tiny_run(tmp_path, "whole", steps=4, checkpoint_every=1)
    lmask.train.train(**kwargs, run=whole)
    kwargs, split = tiny_run(tmp_path, "split", steps=4, checkpoint_every=1)
    assert lmask.train.train(**kwargs, run=split, stop_after=2) == {"stopped_at": 2}
    kwargs, _ = tiny_run(tmp_path, "split", steps=4, checkpoint_every=1)  # a new process: a fresh model object
    lmask.train.train(**kwargs, run=split)

    def folder(run_):
        return {p.name: p.read_bytes() for p in sorted(run_.model_dir.iterdir())}

    assert folder(whole) == folder(split)
    calls = [json.loads((r.live_dir / "metrics.json").read_text())["attention_calls"] for r in (whole, split)]
    assert calls[0] == calls[1] and calls[0]["tiled"] > 0  # full layers on the CPU: the tiled kernel


def test_corrupt_weights_are_refused_where_they_are_used(tmp_path):
    """Row 5: one flipped byte in a model folder's weights (a corrupt cache object checked out with exit 0): loading
    it for evaluation or fine-tuning stops in one line naming the folder and the repair."""
    from lmask.io import DataError
    from lmask.model import load_model

    kwargs, run_ = tiny_run(tmp_path)
    lmask.train.train(**kwargs, run=run_)
    load_model(run_.model_dir)  # intact: loads
    weights = run_.model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        load_model(run_.model_dir)
    assert str(err.value) == (
        f"{run_.model_dir}: weights do not match their recorded hash: run `python -m tools.remote verify --cache "
        "--repair`, then `dvc pull` or `dvc repro`"
    )


def test_one_baseline_gives_no_verdict():
    """Row 7: with baseline_seeds: [0] the run-to-run variance cannot be estimated: no interval, no word."""
    from lmask.stats import ONE_RUN, run_estimate, verdict

    gaps = np.random.default_rng(0).normal(0.005, 0.001, size=(1, 2, 32))  # clearly positive over documents
    e = run_estimate(gaps)
    assert e.lo is None and e.p is None and verdict(e, rejected=True) == ONE_RUN


def test_a_killed_atomic_write_leaves_nothing_the_next_one_does_not_sweep(tmp_path):
    """A folder left by kill -9 during an atomic model write (and a half-renamed previous version) is swept when the
    output is written next, and git and DVC ignore such folders meanwhile."""
    from lmask.io import TMP_MARK, atomic_dir

    final = tmp_path / "models/masked/half/b0-s0"
    final.parent.mkdir(parents=True)
    stray = final.parent / f".b0-s0{TMP_MARK}k2x9"
    stray.mkdir()
    (stray / "model.safetensors").write_bytes(b"half")
    (final.parent / f".b0-s0{TMP_MARK}old").mkdir()
    other = final.parent / "b1-s0"  # another output beside it is not touched
    other.mkdir()
    with atomic_dir(final) as tmp:
        (tmp / "w").write_text("new")
    assert sorted(p.name for p in final.parent.iterdir()) == ["b0-s0", "b1-s0"]
    for ignore in (".gitignore", ".dvcignore"):
        assert f".*{TMP_MARK}*" in (ROOT / ignore).read_text().splitlines()


def test_a_diverged_runs_checkpoint_is_removed(tmp_path):
    kwargs, run_ = tiny_run(tmp_path, lr=1e30, grad_clip=1e30, checkpoint_every=1, steps=3)
    with pytest.raises(FloatingPointError):
        lmask.train.train(**kwargs, run=run_)
    assert not run_.checkpoint_dir.exists()


BOUNDS = [
    ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*31\)"),
    ({"train.steps": 10**12}, r"train.steps must be at most 10000000"),
    ({"cpu_threads": 10000}, r"cpu_threads must be an integer in \[1, 1024\]"),
    ({"model.n_layer": 1000}, r"model.n_layer must be at most 128"),
    ({"data.test_documents": 10**6}, r"data.test_documents must be at most 100000"),
]


@pytest.mark.parametrize("change, message", BOUNDS, ids=[next(iter(c)) for c, _ in BOUNDS])
def test_out_of_bounds_values_name_the_field(change, message):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in change.items():
        node = raw
        *parents, key = dotted.split(".")
        for p in parents:
            node = node[p]
        node[key] = value
    with pytest.raises(ParamsError, match=message):
        params_from_dict(raw)


def test_too_many_test_documents_name_the_field(tmp_path):
    """Within bounds but more than the corpus holds: the empty train split's message names data.test_documents."""
    from lmask.data import download
    from lmask.io import DataError
    from lmask.params import DataParams

    with pytest.raises(DataError, match=r"train split is empty \(data.test_documents = 100000 .*: lower them\)"):
        download(DataParams(test_documents=100000), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_a_duplicated_key_is_refused_with_its_name(tmp_path):
    from lmask.params import load_params

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + "seed: 3\n")
    with pytest.raises(ParamsError, match=r"'seed' appears twice in one mapping"):
        load_params(path)


def test_a_size_limited_write_says_file_too_large():
    """The `ulimit -f` case: torch's writer fails with "unexpected pos"; the line says what that means."""
    from lmask.io import WriteError, write_with

    def cut_short(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1007680 vs 1007572")

    with pytest.raises(WriteError, match=r"file too large for the file size limit \(ulimit -f\) or the disk is full"):
        write_with(Path("/tmp/never-written.pt"), cut_short)


def test_a_user_level_remote_without_verify_is_flagged(tmp_path, monkeypatch):
    from lmask.io import unverified_remotes

    home = tmp_path / "xdg"
    (home / "dvc").mkdir(parents=True)
    (home / "dvc" / "config").write_text("['remote \"shared\"']\n    url = s3://bucket/x\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "none"))
    (tmp_path / "repo" / ".dvc").mkdir(parents=True)
    assert unverified_remotes(tmp_path / "repo") == ["shared"]
    (tmp_path / "repo" / ".dvc" / "config.local").write_text("['remote \"shared\"']\n    verify = true\n")
    assert unverified_remotes(tmp_path / "repo") == []


def test_a_truncated_evaluation_archive_is_named_in_one_line(tmp_path):
    from lmask.io import DataError
    from lmask.summary import load_model_files

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "half.json").write_text("{}")
    (tmp_path / "eval" / "half").mkdir(parents=True)
    good = tmp_path / "eval" / "half" / "b0-s0.npz"
    np.savez_compressed(good, nll_test=np.zeros((4, 8)))
    good.write_bytes(good.read_bytes()[:40])
    (tmp_path / "eval" / "half" / "b0-s0.json").write_text("{}")
    with pytest.raises(DataError, match=r"b0-s0.npz: not a readable .npz archive"):
        load_model_files("half", tmp_path / "metrics", tmp_path / "eval")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-S", "train.lrr=0.1"], "train.lrr"),
        (["-S", "model.initializer_range=0"], "model.initializer_range"),
        (["-S", "nokey"], "-S nokey: expected KEY=VALUE"),
        (["-S", "seed.x=1"], "-S seed.x=1: seed is not a params section"),
        (["--preset", "nope"], "no such preset: nope"),
        (["--baseline", "99"], "--baseline 99: not in baseline_seeds"),
        (["--data", "no/such/folder"], "no/such/folder/train.npy: not found"),
    ],
)
def test_copy_recipe_refuses_bad_input_in_one_line(args, expected):
    assert expected in one_tool_error(tool(["tools.copy_recipe", *args]), "copy_recipe")


def test_copy_recipe_trains_and_scores_baseline_b0_as_the_pipeline_does(tiny_pipeline, tmp_path):
    """No overrides: the tool's model is the pipeline's models/baseline/b0 bit for bit, and its copy measures are
    the ones computed here from evaluate_baseline's per-document arrays. An override (-S) changes the model."""
    from lmask.summary import repeated_drop

    out = tmp_path / "run"
    proc = tool(["tools.copy_recipe", "--out", str(out), "--json", str(tmp_path / "r.json")], cwd=tiny_pipeline)
    assert proc.returncode == 0, proc.stderr[-3000:]
    weights = "model.safetensors"
    assert (out / "model" / weights).read_bytes() == (tiny_pipeline / "models/baseline/b0" / weights).read_bytes()
    got = json.loads((tmp_path / "r.json").read_text())
    arrays = np.load(tiny_pipeline / "eval/baseline/b0.npz")
    drop = repeated_drop(arrays["nll_repeated"])
    assert got["repeated_drop_nats"][0] == pytest.approx(drop.mean(), abs=1e-4)
    low, high = got["repeated_drop_nats"][1:]
    assert low < drop.mean() < high
    distances = params_from_dict(yaml.safe_load((tiny_pipeline / "params.yaml").read_text())).copy.distances
    gain = arrays["copy_nll"][:, :, 1] - arrays["copy_nll"][:, :, 0]
    assert list(got["copy_gain_nats"]) == [str(d) for d in distances]
    for d, g in zip(distances, gain):
        assert got["copy_gain_nats"][str(d)][0] == pytest.approx(g.mean(), abs=1e-4)
    assert "repeated-text drop" in proc.stdout
    other = tmp_path / "other"
    proc = tool(["tools.copy_recipe", "-S", "model.initializer_range=0.05", "--out", str(other)], cwd=tiny_pipeline)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (other / "model" / weights).read_bytes() != (out / "model" / weights).read_bytes()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--probe", "40", "40"], "--probe 40 40: need 1 <= P < T <= 1024"),
        (["--probe", "8", "2048"], "--probe 8 2048: need 1 <= P < T <= 1024"),
        (["--periods", "8", "80"], "--periods 8 80"),
        (["--phase", "16", "2", "4", "10"], "--phase 16 2 4 10: need"),  # period 10 does not repeat in 16 tokens
        (["--phase", "2048", "2", "4", "8"], "--phase 2048 2 4 8: need"),
        (["--weight-decay", "1.5"], "--weight-decay 1.5: must be in [0, 1)"),
        (["--reach", "600", "0"], "--reach 600 0: need"),  # two 600-token occurrences do not fit 1024
    ],
)
def test_copy_onset_refuses_bad_input_in_one_line(args, expected):
    assert expected in one_tool_error(tool(["tools.copy_onset", *args]), "copy_onset")


def test_copy_onset_prints_the_asked_probes_and_offsets_or_fixed_positions_change_what_it_trains(tmp_path):
    """A tiny model, 3 steps: every --probe and --reach gets its column in the onset curve, and starting the rows at
    random positions (--position-offsets, from step 0 or 2), keeping the position table fixed (--freeze-positions) or
    putting a non-repeating prefix before the repeats (--prefix) trains other weights than the plain run does (the
    drops at step 3 differ; at step 0, before any training, they agree)."""
    small = ["--layers", "1", "--embd", "16", "--heads", "2", "--context", "16", "--periods", "2", "4"]
    small += ["--batch", "4", "--steps", "3", "--every", "3", "--warmup", "1", "--lr", "1e-2", "--probe", "10", "40"]
    small += ["--reach", "4", "20"]
    variants = ([], ["--position-offsets"], ["--position-offsets", "2"], ["--freeze-positions"], ["--prefix"])
    curves = []
    for k, extra in enumerate(variants):
        tsv = tmp_path / f"onset{k}.tsv"
        proc = tool(["tools.copy_onset", *small, *extra, "--tsv", str(tsv)])
        assert proc.returncode == 0, proc.stderr[-3000:]
        header, *rows = [line.split("\t") for line in tsv.read_text().splitlines()]
        assert header == ["step", "tokens", "seconds", "P3", "P8", "P10T40", "R4@20"]
        assert [r[0] for r in rows] == ["0", "3"]
        curves.append([[float(v) for v in r[3:]] for r in rows])
    assert all(c[0] == curves[0][0] for c in curves)
    assert all(c[1] != curves[0][1] for c in curves[1:])


def test_copy_onset_trains_a_curriculum_phase_by_phase(tmp_path):
    """--phase T STEPS BATCH HI, twice: the tokens column counts each phase's rows at its own length (2 steps x 4
    rows x 16 tokens, then 1 x 2 x 32), the curve ends at the last step, and the built-in probes follow the last
    phase's longest period (periods 2..8: P5, and P16 on rows of 64 tokens)."""
    tsv = tmp_path / "onset.tsv"
    args = ["--layers", "1", "--embd", "16", "--heads", "2", "--periods", "2", "4", "--every", "2", "--warmup", "1"]
    args += ["--phase", "16", "2", "4", "4", "--phase", "32", "1", "2", "8", "--tsv", str(tsv)]
    proc = tool(["tools.copy_onset", *args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, *rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    assert header == ["step", "tokens", "seconds", "P5", "P16"]
    assert [(r[0], r[1]) for r in rows] == [("0", "0"), ("2", "128"), ("3", "192")]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--share", "1.5"], "--share 1.5: must be in [0, 1]"),
        (["--params", "no/such.yaml"], "no/such.yaml: params file not found"),
        (["--max-period", "80"], "--max-period 80 --context 128: need"),
        (["--data", "no/such/folder"], "no/such/folder/tokenized/train.npy: not found"),
    ],
)
def test_prefix_switch_refuses_bad_input_in_one_line(args, expected):
    assert expected in one_tool_error(tool(["tools.prefix_switch", *args]), "prefix_switch")


def test_prefix_switch_trains_the_first_phase_once_then_each_share_from_it(tiny_pipeline, tmp_path):
    """The tiny pipeline with a 2-step first warm-up phase: the first call trains baseline 0 to step 2 (the stage's
    own training, stopped there) and every share starts from that checkpoint (the same copy losses at step 2), then
    trains other weights (share 1 and 0 differ at step 4); a second call reuses the checkpoint and prints the same
    numbers; params that change train_baseline@0's inputs train it again. Params without a warm-up, or rows longer than
    the model's positions, are refused in one line first."""
    raw = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    common = ["--data", str(tiny_pipeline / "data"), "--checkpoints", str(tmp_path / "ck")]
    common += ["--context", "16", "--max-period", "4", "--batch", "4", "--steps", "2", "--every", "1"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(raw))
    assert "train.copy_warmup.phases is empty" in one_tool_error(
        tool(["tools.prefix_switch", "--params", str(plain), *common], cwd=tiny_pipeline), "prefix_switch"
    )
    raw["train"]["copy_warmup"]["phases"] = [{"context": 16, "steps": 2, "batch_size": 4, "max_period": 4}]
    warm = tmp_path / "warm.yaml"
    warm.write_text(yaml.safe_dump(raw))
    too_long = ["tools.prefix_switch", "--params", str(warm), *common, "--context", "128", "--max-period", "8"]
    assert "--context 128: more than model.n_positions (64)" in one_tool_error(
        tool(too_long, cwd=tiny_pipeline), "prefix_switch"
    )
    assert not (tmp_path / "ck").exists()  # refused before any training
    args = ["tools.prefix_switch", "--params", str(warm), *common, "--share", "1", "0"]
    first, second = (tool(args, cwd=tiny_pipeline) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-3000:] + second.stderr[-3000:]
    assert "training baseline 0 to step 2" in first.stdout and "training baseline" not in second.stdout
    lines = [line for line in first.stdout.splitlines() if line.startswith("share ")]
    assert lines == [line for line in second.stdout.splitlines() if line.startswith("share ")]
    curve = {line.split(":")[0]: line.split(": ")[1] for line in lines}
    assert list(curve) == [f"share {s} step {k}" for s in (1, 0) for k in (2, 3, 4)]
    assert curve["share 1 step 2"] == curve["share 0 step 2"]
    assert curve["share 1 step 4"] != curve["share 0 step 4"]
    raw["train"]["grad_clip"] = 0.77  # another input of train_baseline@0: its checkpoint is not this one's first phase
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    third = tool(["tools.prefix_switch", "--params", str(other), *common, "--share", "1"], cwd=tiny_pipeline)
    assert third.returncode == 0 and "training baseline 0 to step 2" in third.stdout, third.stderr[-3000:]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--init", "-1"], "--init -1: a baseline number must be >= 0"),
        (["-S", "train.lrr=0.1"], "train.lrr"),
        (["--params", "no/such.yaml"], "no/such.yaml: no such file"),
        ([], "train.copy_warmup.phases is empty: give --stop"),  # the default has no warm-up
        (["--stop", "0"], "--stop 0: must be in [1, train.steps)"),
        (["--stop", "5", "--shifts", "0"], "--shifts: step 5 is past the copy warm-up"),
        (["--shifts", "-1"], "--shifts -1: position ids must be >= 0"),
    ],
)
def test_warmup_seeds_refuses_bad_input_in_one_line(args, expected):
    assert expected in one_tool_error(tool(["tools.warmup_seeds", *args]), "warmup_seeds")


REFERENCE_STOP = """
import sys
from pathlib import Path
from lmask.determinism import pin_cpu
from lmask.params import load_params
params = load_params(sys.argv[1])
pin_cpu(params.cpu_threads)
from lmask.train import train_baseline
out = Path(sys.argv[2])
train_baseline(params, 0, Path("data/tokenized"), Path("data/tokenizer"), out / "m", out / "l", out, stop_after=3)
"""


def test_warmup_seeds_equal_seeds_train_the_stage_and_each_seed_matters(tiny_pipeline, tmp_path):
    """--init 0 --data 0 stopped at step 3 leaves the weights that lmask.train.train_baseline(..., 0, stop_after=3)
    leaves (the stage's own training, run here apart); the initial weights' seed and the data's seed each change
    the weights; a second call with a larger --stop resumes the checkpoint and repeats the first call's rows."""
    import torch

    raw = yaml.safe_load((tiny_pipeline / "params.yaml").read_text())
    raw["train"]["copy_warmup"]["phases"] = [{"context": 16, "steps": 4, "batch_size": 4, "max_period": 4}]
    raw["train"]["eval_every"] = 1
    warm = tmp_path / "warm.yaml"
    warm.write_text(yaml.safe_dump(raw))

    def run(init: int, data: int, stop: int, *more: str) -> tuple[str, list[str]]:
        args = ["--params", str(warm), "--init", str(init), "--data", str(data), "--stop", str(stop), *more]
        proc = tool(["tools.warmup_seeds", *args, "--out", str(tmp_path / f"i{init}d{data}")], cwd=tiny_pipeline)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout, [line for line in proc.stdout.splitlines() if line.startswith("step ")]

    _, same = run(0, 0, 3)
    assert [line.split(":")[0] for line in same] == ["step 1", "step 2", "step 3"]
    reference = python(["-c", REFERENCE_STOP, str(warm), str(tmp_path / "ref")], tiny_pipeline)
    assert reference.returncode == 0, reference.stderr[-3000:]
    mine, ref = (torch.load(d / "state.pt", weights_only=False) for d in (tmp_path / "i0d0", tmp_path / "ref"))
    assert mine["progress"]["step"] == ref["progress"]["step"] == 3
    assert all(torch.equal(mine["model"][k], ref["model"][k]) for k in ref["model"])
    assert [r["copy_loss"] for r in mine["progress"]["rows"]] == [r["copy_loss"] for r in ref["progress"]["rows"]]
    run(0, 1, 3)
    run(1, 0, 3)
    other_data, other_init = (torch.load(tmp_path / d / "state.pt", weights_only=False) for d in ("i0d1", "i1d0"))
    key = "transformer.h.0.attn.c_attn.weight"  # neither seed ignored: each changes the weights at step 3
    assert not torch.equal(other_data["model"][key], mine["model"][key])
    assert not torch.equal(other_init["model"][key], mine["model"][key])
    assert not torch.equal(other_data["model"][key], other_init["model"][key])
    resumed, longer = run(0, 0, 4, "--shifts", "0", "48")
    assert "resuming from" in resumed and longer[:3] == same and longer[3].startswith("step 4:")
    shifted = [line.split(":")[0] for line in resumed.splitlines() if line.startswith("shift ")]
    assert shifted == ["shift 0", "shift 48"]
    too_far = ["tools.warmup_seeds", "--params", str(warm), "--stop", "4", "--shifts", "49"]
    assert "--shifts 49: + context 16 > data.context_length" in one_tool_error(
        tool(too_far, cwd=tiny_pipeline), "warmup_seeds"
    )
