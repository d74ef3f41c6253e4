"""Remote storage against real servers on loopback: push, clone, pull, and what DVC does with bad data.

Remotes: the committed default (a local folder under ``~``; HOME points at a temp folder here) and S3 (SeaweedFS from
the ``s3_server`` fixture). A pulled clone must match the original byte for byte and have nothing to reproduce.
Corrupted objects on a remote: caught by `dvc pull` only with verify = true, found and repaired by tools.remote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run

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
    assert "Stage 'evaluate_baseline' didn't change, skipping" in repro, repro
    assert UP_TO_DATE in repro, repro


def home_env(tmp_path: Path) -> dict[str, str]:
    """A throwaway HOME, so the default remote (under ~) is private to the test."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home)}


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
    """Add an S3 remote for ``server`` under s3://bucket/path the way tests/s3_server.py prints it (committed, with
    verify = true); keys, if asked, in .dvc/config.local."""
    for cmd in server.dvc_commands("s3", path):
        if keys or " --local " not in cmd:
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
    assert not (other / "models" / "baseline" / "b0").exists()  # only .gitignore files came with git
    run(["dvc", "pull"], other, extra_env=env)
    assert_same_and_nothing_to_run(other, tiny_repo, env)


def test_s3_round_trip(outs_repo, tmp_path, s3_server):
    """Push to S3 with keys in .dvc/config.local; pull in a fresh clone with keys in environment variables: every
    file comes back with its SHA-256 and nothing is stale. (The pipeline's own round trip, with nothing to
    reproduce after the pull, is the local remote's test above: DVC pulls the same way from either.)"""
    configure_s3(outs_repo, s3_server, f"rt-{uuid.uuid4().hex[:8]}")
    assert "pushed" in run(["dvc", "push", "-r", "s3"], outs_repo).stdout
    assert "Cache and remote 's3' are in sync." in run(["dvc", "status", "-c", "-r", "s3"], outs_repo).stdout

    other = clone(outs_repo, tmp_path / "clone")
    assert not (other / ".dvc" / "config.local").exists(), "credentials must not travel with git"
    assert set(sha256_outs(other).values()) == {None}  # only the .dvc files came with git
    run(["dvc", "pull", "-r", "s3"], other, extra_env=s3_server.credentials_env())
    assert sha256_outs(other) == sha256_outs(outs_repo)
    assert UP_TO_DATE in run(["dvc", "status"], other).stdout


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


def test_corrupted_cache_object_never_reaches_the_workspace(outs_repo, tmp_path):
    """A cache file made writable and edited: DVC rehashes it (it trusts only read-only cache files whose mtime
    matches its records), deletes it, and refuses to check it out or push it."""
    target = "models/model.bin"
    obj = local_object(outs_repo / ".dvc" / "cache", md5_of(outs_repo / target))
    flip_byte(obj, bit_rot=False)

    status = run(["dvc", "status"], outs_repo).stdout
    assert "not in cache:" in status and target in status, status
    assert not obj.exists(), "DVC should have removed the corrupted cache object"

    (outs_repo / target).unlink()
    checkout = run(["dvc", "checkout", target], outs_repo, check=False)
    assert checkout.returncode != 0
    assert f"Checkout failed for following targets:\n{target}" in checkout.stderr, checkout
    assert not (outs_repo / target).exists()

    # DVC 3.67 pushes the rest (exit 0) and warns: "Some of the cache files do not exist neither locally nor on
    # remote. Missing cache files:\nmd5: <hash>".
    push = run(["dvc", "push"], outs_repo)
    assert f"Missing cache files:\nmd5: {obj.parent.name}{obj.name}" in push.stderr, push
    assert not local_object(tmp_path / "remote", obj.parent.name + obj.name).exists(), "the corrupted object was pushed"
    assert local_object(tmp_path / "remote", md5_of(outs_repo / "notes.txt")).exists(), "the rest was pushed"


def test_bit_rot_is_caught_on_pull_by_verify(outs_repo, tmp_path):
    """Bit rot in the local cache (a flipped byte in a read-only file, mtime kept) is invisible to DVC in the
    original repo and is pushed; `verify = true` on the remote (as the committed default remote has it) makes
    `dvc pull` rehash downloads, reject the object and fail."""
    target = "models/model.bin"
    good = md5_of(outs_repo / target)
    flip_byte(local_object(outs_repo / ".dvc" / "cache", good), bit_rot=True)
    # DVC trusts its recorded hash while inode, size and mtime are unchanged: nothing noticed, the object is pushed.
    assert UP_TO_DATE in run(["dvc", "status"], outs_repo).stdout
    run(["dvc", "push"], outs_repo)

    verified = clone(outs_repo, tmp_path / "verified")
    pull = run(["dvc", "pull"], verified, check=False)
    assert pull.returncode != 0
    assert f"Checkout failed for following targets:\n{target}" in pull.stderr, pull
    pulled = sha256_outs(verified)
    assert pulled[target] is None, "the corrupted file reached the workspace"
    assert all(h is not None for f, h in pulled.items() if f != target), "the intact outputs should still be pulled"

    # Why verify is committed: without it the corrupted bytes reach the workspace and `dvc status` stays clean.
    unverified = clone(outs_repo, tmp_path / "unverified")
    run(["dvc", "remote", "modify", "--local", "local", "verify", "false"], unverified)
    run(["dvc", "pull"], unverified)
    assert md5_of(unverified / target) != good
    assert UP_TO_DATE in run(["dvc", "status"], unverified).stdout


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


# --- Corrupted objects on a remote: `verify = true` on pull, and `python -m tools.remote verify [--repair]` ---------


@pytest.fixture
def outs_repo(tmp_path) -> Path:
    """A git + DVC repo (no pipeline) tracking two files and a folder of three, committed, not pushed. Default remote
    ``local``: the folder tmp_path/remote, with verify = true. Six objects: three files, the .dir and two more files."""
    repo = tmp_path / "repo"
    (repo / "data" / "shards").mkdir(parents=True)
    (repo / "models").mkdir()
    for i in range(3):
        (repo / "data" / "shards" / f"s{i}.bin").write_bytes(os.urandom(4096))
    (repo / "models" / "model.bin").write_bytes(os.urandom(65536))
    (repo / "notes.txt").write_text("a small text output\n")
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "config", "core.analytics", "false"], repo)
    run(["dvc", "add", "-q", "data/shards", "models/model.bin", "notes.txt"], repo)
    run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], repo)
    run(["dvc", "remote", "modify", "local", "verify", "true"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data"], repo)
    return repo


OUTS_FILES = ("notes.txt", "models/model.bin", "data/shards/s0.bin", "data/shards/s1.bin", "data/shards/s2.bin")


def sha256_outs(repo: Path) -> dict[str, str | None]:
    """SHA-256 of each tracked file in an outs_repo workspace (None: absent)."""
    return {f: hashlib.sha256((repo / f).read_bytes()).hexdigest() if (repo / f).exists() else None for f in OUTS_FILES}


def md5_of(path: Path) -> str:
    """The DVC object name of a file: the md5 of its bytes."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def dir_md5(repo: Path) -> str:
    """The .dir object name of data/shards, from its .dvc file."""
    return yaml.safe_load((repo / "data" / "shards.dvc").read_text())["outs"][0]["md5"]


def local_object(root: Path, md5: str) -> Path:
    """An object's file in a local remote or cache root (files/md5 layout)."""
    return root / "files" / "md5" / md5[:2] / md5[2:]


def flip16(data: bytes) -> bytes:
    """The bytes with 16 of them (in the middle) inverted."""
    out = bytearray(data)
    start = max(0, len(out) // 2 - 8)
    for i in range(start, min(start + 16, len(out))):
        out[i] ^= 0xFF
    return bytes(out)


def s3_filesystem(server):
    import s3fs

    return s3fs.S3FileSystem(
        key=server.access_key, secret=server.secret_key, client_kwargs={"endpoint_url": server.endpoint}
    )


def s3_key(server, prefix: str, md5: str) -> str:
    return f"{server.bucket}/{prefix}/files/md5/{md5[:2]}/{md5[2:]}"


def corrupt_s3_object(server, prefix: str, md5: str) -> None:
    """Flip 16 bytes of an object on the S3 server (rewritten in place through the S3 API: same key, same size)."""
    fs = s3_filesystem(server)
    key = s3_key(server, prefix, md5)
    data = fs.cat_file(key)
    fs.pipe_file(key, flip16(data))
    assert hashlib.md5(fs.cat_file(key)).hexdigest() != md5 and fs.size(key) == len(data)


def verify(repo: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m tools.remote verify ARGS` in repo (lmask from this checkout); exit status not checked."""
    env = {"PYTHONPATH": str(ROOT), **(extra_env or {})}
    return run([sys.executable, "-m", "tools.remote", "verify", *args], repo, check=False, timeout=300, extra_env=env)


def test_s3_corruption_is_caught_on_pull_only_with_verify(outs_repo, s3_server, tmp_path):
    """16 bytes flipped in an object on the S3 server. With the remote set up as tests/s3_server.py prints it
    (verify = true) `dvc pull` fails and the corrupted bytes never reach the workspace; with verify = false the pull
    "succeeds", writes them and `dvc status` stays clean."""
    prefix = f"pull-{uuid.uuid4().hex[:8]}"
    assert "dvc remote modify s3 verify true" in s3_server.dvc_commands("s3", prefix)
    configure_s3(outs_repo, s3_server, prefix)
    assert run(["dvc", "config", "remote.s3.verify"], outs_repo).stdout.strip() == "true"
    run(["dvc", "push", "-r", "s3"], outs_repo)
    original = sha256_outs(outs_repo)
    corrupt_s3_object(s3_server, prefix, md5_of(outs_repo / "models" / "model.bin"))
    creds = s3_server.credentials_env()

    verified = clone(outs_repo, tmp_path / "verified")
    pull = run(["dvc", "pull", "-r", "s3"], verified, check=False, timeout=300, extra_env=creds)
    assert pull.returncode != 0, pull
    assert "Checkout failed for following targets:\nmodels/model.bin" in pull.stderr, pull.stderr
    pulled = sha256_outs(verified)
    assert pulled["models/model.bin"] is None, "the corrupted file reached the workspace"
    assert {f: h for f, h in pulled.items() if f != "models/model.bin"} == {
        f: h for f, h in original.items() if f != "models/model.bin"
    }, "the intact outputs should still be pulled"

    unverified = clone(outs_repo, tmp_path / "unverified")
    run(["dvc", "remote", "modify", "--local", "s3", "verify", "false"], unverified)
    run(["dvc", "pull", "-r", "s3"], unverified, timeout=300, extra_env=creds)
    assert sha256_outs(unverified)["models/model.bin"] != original["models/model.bin"]
    assert UP_TO_DATE in run(["dvc", "status"], unverified).stdout


def test_verify_finds_and_repairs_corruption_on_a_local_remote(outs_repo, tmp_path):
    """Two objects on the local remote rot (a file and a member of the folder). DVC notices nothing (`dvc status -c`
    in sync, `dvc push` skips them); verify names both outputs and exits 1; --repair re-uploads the intact cache
    copies; verify then exits 0 and a fresh clone pulls every file with its original SHA-256."""
    remote = tmp_path / "remote"
    nothing = verify(outs_repo)  # not pushed yet: every referenced object is missing, nothing is corrupted
    assert nothing.returncode == 0, nothing
    assert nothing.stdout.splitlines()[-1] == (
        "0 objects checked, 0 corrupted, 0 repaired; 6 referenced objects not on the remote (dvc push)"
    )
    assert f"missing: {md5_of(outs_repo / 'notes.txt')}  notes.txt" in nothing.stdout.splitlines()
    bad_remote = verify(outs_repo, "-r", "nosuch")
    assert bad_remote.returncode == 2 and "ERROR:" in bad_remote.stderr and "nosuch" in bad_remote.stderr

    run(["dvc", "push"], outs_repo)
    original = sha256_outs(outs_repo)
    clean = verify(outs_repo)
    assert (clean.returncode, clean.stdout) == (0, "6 objects checked, 0 corrupted, 0 repaired\n"), clean

    model, member = md5_of(outs_repo / "models" / "model.bin"), md5_of(outs_repo / "data" / "shards" / "s1.bin")
    for md5 in (model, member):
        flip_byte(local_object(remote, md5), bit_rot=True)
    assert "Cache and remote 'local' are in sync." in run(["dvc", "status", "-c"], outs_repo).stdout
    assert "Everything is up to date." in run(["dvc", "push"], outs_repo).stdout

    found = verify(outs_repo)
    assert found.returncode == 1, found
    *lines, last = found.stdout.splitlines()  # one line per object, in object-name order
    assert sorted(lines) == sorted(
        [
            f"corrupted: {member}  data/shards/s1.bin",
            f"corrupted: {model}  models/model.bin",
        ]
    )
    assert last == "6 objects checked, 2 corrupted, 0 repaired"
    records = {r["oid"]: r for r in json.loads(verify(outs_repo, "--json").stdout)}
    assert len(records) == 6
    assert records[model]["status"] == "corrupted" and records[model]["paths"] == ["models/model.bin"]
    assert records[model]["md5"] == md5_of(local_object(remote, model))
    assert records[dir_md5(outs_repo)] | {"md5": None} == {
        "oid": dir_md5(outs_repo),
        "status": "ok",
        "paths": ["data/shards"],
        "md5": None,
        "note": "",
    }
    assert sorted(oid for oid, r in records.items() if r["status"] != "ok") == sorted([model, member])

    repaired = verify(outs_repo, "--repair")
    assert repaired.returncode == 0, repaired
    *lines, last = repaired.stdout.splitlines()  # one line per object, in object-name order
    assert sorted(lines) == sorted(
        [
            f"repaired: {member}  data/shards/s1.bin  (re-uploaded from the local cache)",
            f"repaired: {model}  models/model.bin  (re-uploaded from the local cache)",
        ]
    )
    assert last == "6 objects checked, 2 corrupted, 2 repaired"
    assert oct(local_object(remote, model).stat().st_mode & 0o777) == "0o444"  # read-only, as DVC leaves objects
    after = verify(outs_repo)
    assert (after.returncode, after.stdout) == (0, "6 objects checked, 0 corrupted, 0 repaired\n"), after

    other = clone(outs_repo, tmp_path / "clone")
    run(["dvc", "pull"], other)
    assert sha256_outs(other) == original


def test_verify_repairs_corruption_on_s3(outs_repo, s3_server, tmp_path):
    """The folder's .dir listing and a file rot on the S3 server: verify -r s3 names them (folder members still
    named, from the local cache's listing), --repair uploads the cache copies over them through S3, a fresh clone
    then pulls every file with its original SHA-256."""
    prefix = f"repair-{uuid.uuid4().hex[:8]}"
    configure_s3(outs_repo, s3_server, prefix)
    run(["dvc", "push", "-r", "s3"], outs_repo)
    original = sha256_outs(outs_repo)
    model, listing = md5_of(outs_repo / "models" / "model.bin"), dir_md5(outs_repo)
    for md5 in (model, listing):
        corrupt_s3_object(s3_server, prefix, md5)

    found = verify(outs_repo, "-r", "s3")
    assert found.returncode == 1, found
    *lines, last = found.stdout.splitlines()  # one line per object, in object-name order
    assert sorted(lines) == sorted(
        [
            f"corrupted: {model}  models/model.bin",
            f"corrupted: {listing}  data/shards",
        ]
    )
    assert last == "6 objects checked, 2 corrupted, 0 repaired"
    repaired = verify(outs_repo, "-r", "s3", "--repair")
    assert repaired.returncode == 0, repaired
    assert repaired.stdout.splitlines()[-1] == "6 objects checked, 2 corrupted, 2 repaired"
    assert f"repaired: {listing}  data/shards  (re-uploaded from the local cache)" in repaired.stdout.splitlines()
    fs = s3_filesystem(s3_server)
    assert hashlib.md5(fs.cat_file(s3_key(s3_server, prefix, listing))).hexdigest() == listing.removesuffix(".dir")
    after = verify(outs_repo, "-r", "s3")
    assert (after.returncode, after.stdout) == (0, "6 objects checked, 0 corrupted, 0 repaired\n"), after

    other = clone(outs_repo, tmp_path / "clone")
    run(["dvc", "pull", "-r", "s3"], other, timeout=300, extra_env=s3_server.credentials_env())
    assert sha256_outs(other) == original


def test_verify_cannot_repair_without_an_intact_local_copy(outs_repo, tmp_path):
    """Corrupted on the remote and absent from the local cache, or corrupted in both: reported, not repaired, the
    remote bytes left as they were, exit 1. An object deleted from the remote is reported missing."""
    remote, cache = tmp_path / "remote", outs_repo / ".dvc" / "cache"
    run(["dvc", "push"], outs_repo)
    notes, model = md5_of(outs_repo / "notes.txt"), md5_of(outs_repo / "models" / "model.bin")
    gone = md5_of(outs_repo / "data" / "shards" / "s0.bin")
    for md5 in (notes, model):
        flip_byte(local_object(remote, md5), bit_rot=True)
    local_object(cache, notes).unlink()
    flip_byte(local_object(cache, model), bit_rot=True)
    local_object(remote, gone).unlink()
    damaged = {md5: local_object(remote, md5).read_bytes() for md5 in (notes, model)}

    result = verify(outs_repo, "--repair")
    assert result.returncode == 1, result
    *lines, last = result.stdout.splitlines()  # one line per object, in object-name order
    assert sorted(lines) == sorted(
        [
            f"corrupted: {notes}  notes.txt  (not repaired: no copy in the local cache)",
            f"corrupted: {model}  models/model.bin  (not repaired: the local cache copy is corrupted too)",
            f"missing: {gone}  data/shards/s0.bin",
        ]
    )
    assert last == "5 objects checked, 2 corrupted, 0 repaired; 1 referenced objects not on the remote (dvc push)"
    assert {md5: local_object(remote, md5).read_bytes() for md5 in damaged} == damaged
    again = verify(outs_repo)
    assert again.returncode == 1 and again.stdout.splitlines()[-1].startswith("5 objects checked, 2 corrupted, 0 r")
