"""Faults a user meets: each names its field or file in one line, and nothing is lost or wrong on disk.

Bad params fail in the `validate` stage, which every other stage depends on, so DVC removes no result before the
check runs (tried on the tiny pipeline, marked slow). Data errors name the file (and the params field). Remote
corruption is covered in test_remote.py and a truncated checkpoint in test_train.py. The faults of issue 18 (stale
resume after a code change, unchecked numbers, local cache corruption, NaN loss, full disk, remotes without verify,
timings in model folders, cpu_threads, unpinned training) are tried at unit level, or on a small DVC repo, below.
"""

from __future__ import annotations

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


# --------------------------------------------------------------------------------------------- issue 18
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
    run_ = lmask.train.Run("baseline", 0, out / "model", out / "live", out / "ckpt", "fingerprint")
    return {"model": model, "train_blocks": blocks, "val_blocks": blocks[:4], "cfg": cfg, "mix": MixParams()}, run_


CHECKPOINT_SCRIPT = """\
import sys
from pathlib import Path
import torch
from lmask import checkpoint
from lmask.device import Distributed
model = torch.nn.Linear(4, 4)
opt = torch.optim.AdamW(model.parameters())
world = Distributed(torch.device("cpu"))
if sys.argv[1] == "save":  # state.prev.pt and state.pt
    for step in (50, 100):
        checkpoint.save(Path("ckpt"), model, opt, checkpoint.Progress(step=step), "fp", world)
else:
    before = [p.clone() for p in model.parameters()]
    step = checkpoint.load(Path("ckpt"), model, opt, "fp", "baseline", world).step
    print("step", step, "weights loaded:", not all(torch.equal(a, b) for a, b in zip(before, model.parameters())))
"""


def test_resume_after_a_code_change_restarts_from_step_0(tmp_path):
    """A checkpoint saved by one process, the learning-rate line of lmask/train.py edited, a new process resumes."""
    for package in ("lmask", "stages"):
        shutil.copytree(ROOT / package, tmp_path / package)
    saved = python(["-c", CHECKPOINT_SCRIPT, "save"], tmp_path, path=tmp_path)
    assert saved.returncode == 0, saved
    edit(tmp_path / "lmask/train.py", "return cfg.lr * (step + 1)", "return 2 * cfg.lr * (step + 1)")
    resumed = python(["-c", CHECKPOINT_SCRIPT, "load"], tmp_path, path=tmp_path)
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed
    assert resumed.stdout.splitlines() == [
        "baseline: checkpoint ckpt/state.pt was made by other code (lmask/train.py changed); starting from step 0",
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

    found = python(["-m", "lmask.remote", "verify", "--cache"], repo)
    assert found.returncode == 1 and "Traceback" not in found.stderr, found
    assert found.stdout.splitlines() == [
        f"corrupted: {md5}  models/model.bin",
        "1 objects checked, 1 corrupted, 0 repaired",
    ]
    assert found.stderr.splitlines() == [WARNING.format(name="mine")]

    repaired = python(["-m", "lmask.remote", "verify", "--cache", "--repair"], repo)
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
        r"`dvc checkout` restores them",
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
    assert line.startswith(f"error: {dest}: could not write it (") and "`dvc checkout` restores them" in line, line
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
    from lmask.deps import _imported, closure
    from tests.test_dvc_yaml import entry_module, stage_bodies

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
    }
    assert [n for n in sorted(torch_stages) if "cpu_threads" not in stage_bodies()[n]["params"]] == []


def test_training_refuses_an_unpinned_cpu(tmp_path, monkeypatch):
    monkeypatch.delenv(PINNED, raising=False)
    kwargs, run_ = tiny_run(tmp_path)
    with pytest.raises(RuntimeError, match=r"^baseline: CPU numerics are not pinned; call lmask.determinism.pin_cpu"):
        lmask.train.train(**kwargs, run=run_)
    assert not run_.model_dir.exists() and not run_.checkpoint_dir.exists()
