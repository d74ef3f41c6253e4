"""Check every object on a DVC remote against its content hash, and repair bad ones from the local cache.

    python -m tools.remote verify [-r REMOTE] [--repair] [--json] [-j JOBS]
    python -m tools.remote verify --cache [--repair]

DVC names each object on a remote by the md5 of its bytes (``files/md5/ab/cdef…``; a ``….dir`` object is a
directory listing, named by the md5 of its bytes plus ``.dir``: dvc_data's ``Tree.digest``). DVC does not recheck
them: ``dvc push`` skips objects that already exist on the remote, ``dvc status -c`` compares names (on a local
remote it rehashes only objects that are not read-only, and deletes those), and ``verify = true`` only makes
``dvc pull`` reject a bad download. This command downloads (streams) every object,
rehashes it with DVC's own md5 code and names the workspace outputs each bad object belongs to. With ``--repair``
a corrupted object is re-uploaded from the local cache, if the cache holds a copy whose md5 is right.

``--cache`` rehashes the local cache the same way: DVC trusts a read-only cache file whose mtime it recorded, so bit
rot there is checked out silently. ``--cache --repair`` removes each corrupted object and the workspace copies made
from it, and says how to restore them (``dvc pull`` or ``dvc repro``). Both modes warn about remotes without
``verify = true``.

Exit status: 0 when no corrupted object is left, 1 when one is, 2 when the repo or remote cannot be opened.
Outputs hashed with DVC 2's ``md5-dos2unix`` live in the remote's legacy layout and are not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from lmask.io import remote_warnings

if TYPE_CHECKING:
    from dvc.repo import Repo
    from dvc_data.hashfile.db import HashFileDB

OID = re.compile(r"[0-9a-f]{32}(\.dir)?")  # names of objects in the files/md5 layout (others, e.g. *.tmp, skipped)
NOT_IN_WORKSPACE = "(not in the workspace)"


@dataclass
class Check:
    """One object: ``ok``, ``corrupted``, ``repaired`` or ``missing`` (referenced by the workspace, not on the
    remote). ``md5`` is that of the bytes found on the remote; ``note`` says why a repair did not happen."""

    oid: str
    status: str
    paths: list[str] = field(default_factory=list)
    md5: str | None = None
    note: str = ""

    def line(self) -> str:
        text = f"{self.status}: {self.oid}  {', '.join(self.paths) or NOT_IN_WORKSPACE}"
        return f"{text}  ({self.note})" if self.note else text


def object_md5(odb: HashFileDB, oid: str) -> str:
    """md5 of an object's bytes as stored, streamed (not HashFileDB.check: it deletes a mismatching object, and for
    a local ODB it trusts any read-only file without hashing it)."""
    from dvc_data.hashfile.hash import fobj_md5

    with odb.fs.open(odb.oid_to_path(oid), "rb") as fobj:
        return fobj_md5(fobj, name="md5")


def file_md5(path: str) -> str:
    """md5 of a workspace file, with the same code as objects (DVC hashes text and binary files alike in 3.x)."""
    from dvc_data.hashfile.hash import fobj_md5

    with open(path, "rb") as fobj:
        return fobj_md5(fobj, name="md5")


def intact(oid: str, md5: str | None) -> bool:
    return md5 == oid.removesuffix(".dir")


def stored_md5(odb: HashFileDB, oid: str) -> str | None:
    """md5 of the object's bytes, None when it is absent or unreadable."""
    try:
        return object_md5(odb, oid)
    except OSError:
        return None


def workspace_objects(repo: Repo, remote: HashFileDB) -> dict[str, list[str]]:
    """md5 -> workspace paths (relative to the repo root) of every cached output in dvc.lock / *.dvc files: file
    outputs by path, directory outputs by path (the .dir object) and ``path/member`` for each file listed in the
    .dir object (read from the local cache, else from the remote, whichever copy is intact)."""
    from dvc_data.hashfile.tree import Tree

    refs: dict[str, list[str]] = {}

    def add(oid: str, path: str) -> None:
        if path not in refs.setdefault(oid, []):
            refs[oid].append(path)

    for out in repo.index.outs:
        hi = out.hash_info
        if not (out.use_cache and hi and hi.value) or hi.name != "md5":
            continue
        path = os.path.relpath(out.fs_path, repo.root_dir).replace(os.sep, "/")
        add(hi.value, path)
        if not hi.isdir:
            continue
        odb = next((o for o in (repo.cache.local, remote) if intact(hi.value, stored_md5(o, hi.value))), None)
        if odb is None:
            print(
                f"warning: {path}: no intact {hi.value} here or on the remote, its files are not named", file=sys.stderr
            )
            continue
        for key, _meta, member in Tree.load(odb, hi):
            if member and member.value:
                add(member.value, "/".join((path, *key)))
    return refs


def verify(odb: HashFileDB, refs: dict[str, list[str]], jobs: int, desc: str) -> list[Check]:
    """Rehash every object on the remote; add a ``missing`` entry for each referenced object it lacks."""
    oids = sorted(oid for oid in odb.all(jobs) if OID.fullmatch(oid))
    checks = []
    with (
        ThreadPoolExecutor(jobs) as pool,
        tqdm(total=len(oids), unit="obj", desc=desc, leave=False, disable=None) as bar,  # bar on a terminal only
    ):
        for oid, md5 in zip(oids, pool.map(lambda oid: stored_md5(odb, oid), oids)):
            status = "ok" if intact(oid, md5) else "corrupted"
            checks.append(Check(oid, status, refs.get(oid, []), md5, "" if md5 else "unreadable"))
            bar.update()
    present = set(oids)
    checks += [Check(oid, "missing", paths) for oid, paths in sorted(refs.items()) if oid not in present]
    return checks


def repair(odb: HashFileDB, cache: HashFileDB, check: Check) -> None:
    """Re-upload a corrupted object from the local cache if the cached copy is intact, then rehash the upload."""
    if not cache.fs.isfile(cache.oid_to_path(check.oid)):
        check.note = "not repaired: no copy in the local cache"
        return
    if not intact(check.oid, stored_md5(cache, check.oid)):
        check.note = "not repaired: the local cache copy is corrupted too"
        return
    path = odb.oid_to_path(check.oid)
    try:
        odb.fs.put_file(cache.oid_to_path(check.oid), path)  # the remote's fsspec filesystem: local folder, S3, ...
    except OSError as exc:
        check.note = f"not repaired: upload failed: {exc}"
        return
    odb.protect(path)  # read-only on a local remote, as DVC leaves its objects; no-op elsewhere
    check.md5 = stored_md5(odb, check.oid)
    if intact(check.oid, check.md5):
        check.status, check.note = "repaired", "re-uploaded from the local cache"
    else:
        check.note = f"not repaired: the re-uploaded object hashes to {check.md5}"


def repair_cache(cache: HashFileDB, root: str, check: Check) -> None:
    """Remove a corrupted object from the local cache, and each workspace copy of it (checked out before the damage
    was found: DVC's state records it as intact, so `dvc checkout` would never replace it). `dvc pull` or
    `dvc repro` then brings back the right bytes."""
    for path in check.paths:
        file = os.path.join(root, path)
        if os.path.isfile(file) and not intact(check.oid, file_md5(file)):
            os.unlink(file)
    try:
        cache.fs.remove(cache.oid_to_path(check.oid))
    except OSError as exc:
        check.note = f"not removed: {exc}"
        return
    targets = " ".join(p for p in check.paths if p != NOT_IN_WORKSPACE) or "<its output>"
    check.status, check.note = "removed", f"restore with `dvc pull {targets}` or `dvc repro`"


def run_cache(do_repair: bool, jobs: int | None) -> tuple[list[Check], bool]:
    """Rehash every object in the local cache (DVC trusts read-only cache files: bit rot is checked out silently);
    with ``do_repair`` remove the corrupted ones. Objects referenced but absent (never pulled) are not listed."""
    from dvc.repo import Repo

    with Repo() as repo:
        cache = repo.cache.local
        checks = verify(cache, workspace_objects(repo, cache), jobs or 4, "verifying the local cache")
        checks = [c for c in checks if c.status != "missing"]
        if do_repair:
            for check in (c for c in checks if c.status == "corrupted"):
                repair_cache(cache, repo.root_dir, check)
    return checks, any(c.status == "corrupted" for c in checks)


def run(remote_name: str | None, do_repair: bool, jobs: int | None) -> tuple[list[Check], bool]:
    """Verify (and repair) the remote; returns the checks and whether corruption remains."""
    from dvc.repo import Repo

    with Repo() as repo:
        remote = repo.cloud.get_remote(remote_name, "verify")
        odb = repo.cloud.get_remote_odb(remote_name, "verify")  # files/md5 under the remote's url
        jobs = jobs or remote.fs.jobs or 4
        checks = verify(odb, workspace_objects(repo, odb), jobs, f"verifying remote '{remote.name}'")
        bad = [c for c in checks if c.status == "corrupted"]
        if do_repair:
            for check in tqdm(bad, unit="obj", desc="repairing", leave=False, disable=None):
                repair(odb, repo.cache.local, check)
    return checks, any(c.status == "corrupted" for c in checks)


def summary(checks: list[Check]) -> str:
    count = {s: sum(c.status == s for c in checks) for s in ("corrupted", "repaired", "missing", "removed")}
    text = (
        f"{len(checks) - count['missing']} objects checked, "
        f"{count['corrupted'] + count['repaired'] + count['removed']} corrupted, {count['repaired']} repaired"
    )
    if count["removed"]:
        text += f", {count['removed']} removed from the cache"
    return text + (f"; {count['missing']} referenced objects not on the remote (dvc push)" if count["missing"] else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.remote", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("verify", help="rehash every object on a DVC remote (run from the repo root)")
    cmd.add_argument("-r", "--remote", help="remote name (default: the repo's default remote)")
    cmd.add_argument(
        "--repair", action="store_true", help="re-upload corrupted objects from an intact local cache copy"
    )
    cmd.add_argument("--json", action="store_true", help="print every object as a JSON list instead of text lines")
    cmd.add_argument("-j", "--jobs", type=int, default=None, help="parallel downloads (default: the remote's jobs)")
    cmd.add_argument(
        "--cache",
        action="store_true",
        help="check the local cache instead (--repair removes corrupted objects and their workspace copies)",
    )
    args = parser.parse_args(argv)

    from dvc.exceptions import DvcException

    for warning in remote_warnings():
        print(warning, file=sys.stderr)
    try:
        if args.cache:
            checks, remains = run_cache(args.repair, args.jobs)
        else:
            checks, remains = run(args.remote, args.repair, args.jobs)
    except DvcException as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    if args.json:
        records: list[dict[str, Any]] = [asdict(c) for c in checks]
        print(json.dumps(records, indent=2))
    else:
        for check in checks:
            if check.status != "ok":
                print(check.line())
        print(summary(checks))
    return 1 if remains else 0


if __name__ == "__main__":
    sys.exit(main())
