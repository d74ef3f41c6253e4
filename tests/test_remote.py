"""Remote storage against real servers on loopback: push, clone, pull, and what DVC does with bad data.

Remotes: the committed default (a local folder under ``~``; HOME points at a temp folder here) and S3 (SeaweedFS from
the ``s3_server`` fixture). A pulled clone must match the original byte for byte and have nothing to reproduce.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import run

# The committed default remote (.dvc/config); "~" is expanded by DVC when it reads the config, so it lands in the
# HOME of whoever runs dvc.
DEFAULT_REMOTE = "storage"
DEFAULT_REMOTE_URL = "~/.local/share/lmask/dvc-storage"
UP_TO_DATE = "Data and pipelines are up to date."


def md5_tree(repo: Path) -> dict[str, str]:
    """md5 of every file under data/ and models/ (the DVC-tracked outputs), by path relative to repo."""
    return {
        str(p.relative_to(repo)): hashlib.md5(p.read_bytes()).hexdigest()
        for top in ("data", "models")
        for p in sorted((repo / top).rglob("*"))
        if p.is_file()
    }


def clone(origin: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    return dest


def assert_same_and_nothing_to_run(clone_dir: Path, original: Path, env: dict[str, str] | None = None) -> None:
    """The pulled clone: status clean, every tracked file identical to the original, repro runs no stage."""
    assert UP_TO_DATE in run(["dvc", "status"], clone_dir, extra_env=env).stdout
    pulled, expected = md5_tree(clone_dir), md5_tree(original)
    assert any(p.startswith("models/masked/") for p in expected), "the original has no trained models"
    assert pulled == expected
    repro = run(["dvc", "repro"], clone_dir, extra_env=env).stdout
    assert "Running stage" not in repro, repro
    # DVC 3.67's words for a stage whose deps, params and outs match dvc.lock.
    assert "Stage 'evaluate' didn't change, skipping" in repro, repro
    assert UP_TO_DATE in repro, repro


def home_env(tmp_path: Path) -> dict[str, str]:
    """A throwaway HOME, so the default remote (under ~) is private to the test."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home)}


def cache_object(repo: Path, out: str, relpath: str) -> Path:
    """The .dvc/cache file holding ``relpath`` inside directory output ``out`` (looked up through dvc.lock)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    dir_md5 = next(o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", []) if o["path"] == out)
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    entries = json.loads((cache / dir_md5[:2] / dir_md5[2:]).read_text())
    md5 = next(e["md5"] for e in entries if e["relpath"] == relpath)
    return cache / md5[:2] / md5[2:]


def flip_byte(path: Path, bit_rot: bool) -> None:
    """Corrupt one byte in place (same inode).

    bit_rot=False: an edit of a file made writable first (chmod u+w, then write): new mtime, left writable.
    bit_rot=True: the file still looks untouched (read-only, same size, inode and mtime), as after a disk error.
    """
    st = path.stat()
    path.chmod(0o644)  # DVC makes cache files read-only
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(data)
    if bit_rot:
        path.chmod(st.st_mode)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def configure_s3(repo: Path, server, path: str, keys: bool = True) -> None:
    """Add an S3 remote for ``server`` under s3://bucket/path (committed); keys, if asked, in .dvc/config.local."""
    add, endpoint, *key_cmds = server.dvc_commands("s3", path)
    for cmd in [add, endpoint, *(key_cmds if keys else [])]:
        run(cmd.split(), repo)
    run(["git", "commit", "-qam", "s3 remote"], repo)


def test_committed_default_remote_is_local_under_home():
    """The shipped .dvc/config: default remote under ~ (same for every clone), hash-verified on download."""
    root = Path(__file__).resolve().parents[1]
    assert run(["dvc", "remote", "default", "--project"], root).stdout.strip() == DEFAULT_REMOTE
    # `dvc config` prints the url expanded, so read the file: "~" must be stored as is.
    config = (root / ".dvc" / "config").read_text()
    assert f"url = {DEFAULT_REMOTE_URL}\n" in config, config
    assert run(["dvc", "config", "--project", f"remote.{DEFAULT_REMOTE}.verify"], root).stdout.strip() == "true"


@pytest.mark.slow
def test_local_remote_round_trip(tiny_repo, tmp_path):
    """Zero setup: `dvc push` in one clone, `dvc pull` in another, through the committed default remote."""
    env = home_env(tmp_path)
    assert "pushed" in run(["dvc", "push"], tiny_repo, extra_env=env).stdout
    storage = Path(env["HOME"]) / ".local/share/lmask/dvc-storage"
    assert any(storage.rglob("*.dir")), f"nothing pushed to {storage}"
    assert "Cache and remote 'storage' are in sync." in run(["dvc", "status", "-c"], tiny_repo, extra_env=env).stdout

    other = clone(tiny_repo, tmp_path / "clone")
    assert not (other / "models" / "baseline").exists()  # only .gitignore files came with git
    run(["dvc", "pull"], other, extra_env=env)
    assert_same_and_nothing_to_run(other, tiny_repo, env)


@pytest.mark.slow
def test_s3_round_trip(tiny_repo, tmp_path, s3_server):
    """Push to S3 with keys in .dvc/config.local; pull in a fresh clone with keys in environment variables."""
    configure_s3(tiny_repo, s3_server, f"rt-{uuid.uuid4().hex[:8]}")
    assert "pushed" in run(["dvc", "push", "-r", "s3"], tiny_repo).stdout
    assert "Cache and remote 's3' are in sync." in run(["dvc", "status", "-c", "-r", "s3"], tiny_repo).stdout

    other = clone(tiny_repo, tmp_path / "clone")
    assert not (other / ".dvc" / "config.local").exists(), "credentials must not travel with git"
    run(["dvc", "pull", "-r", "s3"], other, extra_env=s3_server.credentials_env())
    assert_same_and_nothing_to_run(other, tiny_repo)


@pytest.fixture
def small_dvc_repo(tmp_path) -> Path:
    """A git + DVC repo tracking one small folder (no pipeline run: these tests are about the remote)."""
    repo = tmp_path / "small"
    (repo / "data").mkdir(parents=True)
    for i in range(3):
        (repo / "data" / f"part{i}.bin").write_bytes(os.urandom(4096))
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "config", "core.analytics", "false"], repo)
    run(["dvc", "add", "-q", "data"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data"], repo)
    return repo


def test_s3_wrong_or_missing_credentials_fail_clearly(small_dvc_repo, s3_server, tmp_path):
    """Bad keys: push and pull exit non-zero and name the cause (HTTP 403 Forbidden / no credentials found)."""
    configure_s3(small_dvc_repo, s3_server, f"bad-{uuid.uuid4().hex[:8]}", keys=False)
    # A wrong secret from the environment (DVC 3.67 + SeaweedFS: "unexpected error - Forbidden: ... (403) ...").
    wrong = s3_server.credentials_env() | {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    push = run(["dvc", "push", "-r", "s3"], small_dvc_repo, check=False, timeout=120, extra_env=wrong)
    assert push.returncode != 0
    assert "Forbidden" in push.stderr and "(403)" in push.stderr, push.stderr

    # A wrong secret in .dvc/config.local, on pull into an empty cache.
    run(["dvc", "remote", "modify", "--local", "s3", "access_key_id", s3_server.access_key], small_dvc_repo)
    run(["dvc", "remote", "modify", "--local", "s3", "secret_access_key", "not-the-secret"], small_dvc_repo)
    shutil.rmtree(small_dvc_repo / ".dvc" / "cache")
    shutil.rmtree(small_dvc_repo / "data")
    pull = run(["dvc", "pull", "-r", "s3"], small_dvc_repo, check=False, timeout=120)
    assert pull.returncode != 0
    assert "failed to pull data from the cloud" in pull.stderr and "Forbidden" in pull.stderr, pull.stderr
    assert not (small_dvc_repo / "data").exists()

    # No keys anywhere (empty HOME, so no ~/.aws): boto says so at once (AWS_EC2_METADATA_DISABLED=true in env()).
    run(["dvc", "remote", "modify", "--local", "--unset", "s3", "access_key_id"], small_dvc_repo)
    run(["dvc", "remote", "modify", "--local", "--unset", "s3", "secret_access_key"], small_dvc_repo)
    push = run(["dvc", "push", "-r", "s3"], small_dvc_repo, check=False, timeout=120, extra_env=home_env(tmp_path))
    assert push.returncode != 0
    assert "Unable to locate credentials" in push.stderr, push.stderr


@pytest.mark.slow
def test_corrupted_cache_object_never_reaches_the_workspace(tiny_repo, tmp_path):
    """A cache file made writable and edited: DVC rehashes it (it trusts only read-only cache files whose mtime
    matches its records), deletes it, and refuses to check it out or push it."""
    target = "models/baseline/model.safetensors"
    obj = cache_object(tiny_repo, "models/baseline", "model.safetensors")
    flip_byte(obj, bit_rot=False)

    status = run(["dvc", "status"], tiny_repo).stdout
    assert "not in cache:" in status and "models/baseline" in status, status
    assert not obj.exists(), "DVC should have removed the corrupted cache object"

    (tiny_repo / target).unlink()
    checkout = run(["dvc", "checkout", "models/baseline"], tiny_repo, check=False)
    assert checkout.returncode != 0
    assert "Checkout failed for following targets:\nmodels/baseline" in checkout.stderr, checkout
    assert not (tiny_repo / target).exists()

    env = home_env(tmp_path)
    # DVC 3.67 pushes the rest (exit 0) and warns: "Some of the cache files do not exist neither locally nor on
    # remote. Missing cache files:\nmd5: <hash>".
    push = run(["dvc", "push"], tiny_repo, extra_env=env)
    assert f"Missing cache files:\nmd5: {obj.parent.name}{obj.name}" in push.stderr, push
    pushed = Path(env["HOME"]) / ".local/share/lmask/dvc-storage/files/md5" / obj.parent.name / obj.name
    assert not pushed.exists(), "the corrupted object was pushed"


@pytest.mark.slow
def test_bit_rot_is_caught_on_pull_by_verify(tiny_repo, tmp_path):
    """Bit rot (a flipped byte in a read-only file, mtime kept) is invisible to DVC in the original repo and is pushed;
    the committed `verify = true` makes `dvc pull` rehash downloads, reject the object and fail."""
    target = "models/baseline/model.safetensors"
    good = hashlib.md5((tiny_repo / target).read_bytes()).hexdigest()
    obj = cache_object(tiny_repo, "models/baseline", "model.safetensors")
    flip_byte(obj, bit_rot=True)
    env = home_env(tmp_path)
    # DVC trusts its recorded hash while inode, size and mtime are unchanged: nothing noticed, the object is pushed.
    assert UP_TO_DATE in run(["dvc", "status"], tiny_repo).stdout
    run(["dvc", "push"], tiny_repo, extra_env=env)

    verified = clone(tiny_repo, tmp_path / "verified")
    pull = run(["dvc", "pull"], verified, extra_env=env, check=False)
    assert pull.returncode != 0
    assert "Checkout failed for following targets" in pull.stderr and "models/baseline" in pull.stderr, pull
    assert not (verified / target).exists(), "the corrupted file reached the workspace"
    assert (verified / "data" / "tokenized").is_dir(), "the intact outputs should still be pulled"

    # Why verify is committed: without it the corrupted bytes reach the workspace and `dvc status` stays clean.
    unverified = clone(tiny_repo, tmp_path / "unverified")
    run(["dvc", "remote", "modify", "--local", DEFAULT_REMOTE, "verify", "false"], unverified)
    run(["dvc", "pull"], unverified, extra_env=env)
    assert hashlib.md5((unverified / target).read_bytes()).hexdigest() != good


def test_s3_server_binds_loopback_only(s3_server):
    """Every listening socket of the weed process is on 127.0.0.1 (weed binds 0.0.0.0 unless told otherwise)."""
    if not shutil.which("ss"):
        pytest.skip("no ss (iproute2) here")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    mine = [line for line in out.splitlines() if f"pid={s3_server.process.pid}," in line]
    if not mine:
        pytest.skip("ss shows no process info here")
    local = [line.split()[3] for line in mine]
    assert all(addr.startswith("127.0.0.1:") for addr in local), local
    assert s3_server.endpoint.rsplit(":", 1)[1] in " ".join(local)
