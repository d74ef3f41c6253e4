"""The replicate check: do two disjoint sets of baseline seeds give the same verdict words?

    python -m tools.replicate run --seeds 3 4 5          # the whole experiment again from baselines 3, 4, 5, in a
                                                         #   copy of this repo (data stages restored from the cache)
    python -m tools.replicate compare A.json B.json --out metrics/replicate.json

``run`` copies the repository's tracked and untracked files into ``--workdir``, sets ``baseline_seeds`` there, runs
``dvc repro summarize`` with this repo's DVC cache (so download and tokenize are restored, not recomputed) and copies
the resulting summary to ``results/replicate/summary.json``. ``--workdir`` is emptied only if this tool made it (it
holds the marker file ``.lmask-replicate``) or it is an empty folder; any other existing path, the repository itself
and every folder above it are refused in one line (exit 2) and left as they are.

``compare`` lines up every verdict word of two summaries (``lmask.summary``): it counts the words that changed, the
reversals (better <-> worse) and each summary's rejections (its "better" and "worse" words, over the same
comparisons), and prints the changes. A file that is missing or not a summary ends it in one line naming the file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from lmask.io import DataError, WriteError, read_json, write_json
from tools import fail

PROG = "replicate"
REVERSAL = {"better", "worse"}
MARKER = ".lmask-replicate"  # in every --workdir this tool made: the only folders it ever deletes


class ReplicateError(Exception):
    """A --workdir this tool must not use (it would delete what it did not create)."""


def verdicts(summary: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every verdict word in a summary, keyed by what it compares."""
    out = {}
    for name, rec in summary.items():
        for key, g in rec.get("gaps", {}).items():
            out[f"{name}/{key}"] = g["verdict"]
        for domain, g in rec.get("domains", {}).items():
            if domain != "test":  # the test domain's word is gaps.vs_full
                out[f"{name}/vs_full/{domain}"] = g["vs_full"]["verdict"]
        for bucket, g in rec.get("by_position", {}).items():
            out[f"{name}/vs_full/positions {bucket}"] = g["verdict"]
        for other, g in rec.get("vs_equal_pairs", {}).items():
            out[f"{name}/vs/{other}"] = g["verdict"]
        for d, g in rec.get("copy_loss_drop", {}).items():
            out[f"{name}/copy_gate/d={d}"] = g["verdict"]
        for key in ("copy_gain_vs_full", "copy_gain_zero_shot_vs_baseline"):
            for d, g in rec.get(key, {}).items():
                out[f"{name}/{key}/d={d}"] = g["verdict"]
        for key in ("repeated_drop_vs_full", "repeated_drop_zero_shot_vs_baseline"):
            if key in rec:
                out[f"{name}/{key}"] = rec[key]["verdict"]
        for contrast, g in rec.get("domain_contrasts", {}).items():
            out[f"{name}/domain_contrast/{contrast}"] = g["verdict"]
    return out


def compare(a: dict, b: dict, seeds_a: list[int], seeds_b: list[int]) -> dict[str, Any]:
    """``metrics/replicate.json``: both words per comparison, the changed ones, and the reversals."""
    wa, wb = verdicts(a), verdicts(b)
    common = sorted(set(wa) & set(wb))
    words = {k: [wa[k], wb[k]] for k in common}
    changed = [k for k in common if wa[k] != wb[k]]
    reversals = [k for k in changed if {wa[k], wb[k]} == REVERSAL]
    return {
        "seeds_a": seeds_a,
        "seeds_b": seeds_b,
        "verdicts": words,
        "total": len(common),
        "changed": len(changed),
        "changed_fraction": round(len(changed) / len(common), 4) if common else 0.0,
        "reversals": len(reversals),
        "rejections_a": sum(wa[k] in REVERSAL for k in common),  # "better"/"worse" words, same comparisons
        "rejections_b": sum(wb[k] in REVERSAL for k in common),
        "changed_comparisons": changed,
        "only_in_one": sorted(set(wa) ^ set(wb)),
    }


def _seeds(summary: dict) -> list[int]:
    return summary["baseline"].get("baseline_seeds", [])


def load_summary(path: Path) -> dict[str, Any]:
    """A summary.json to compare: a JSON object of records with the baseline's; DataError naming the file if not."""
    summary = read_json(path)
    if not isinstance(summary, dict) or not all(isinstance(r, dict) for r in summary.values()):
        raise DataError(f"{path}: not a summary (a JSON object of records, as metrics/summary.json)")
    if not isinstance(summary.get("baseline"), dict):
        raise DataError(f"{path}: not a summary (no 'baseline' record, as in metrics/summary.json)")
    try:
        verdicts(summary)
        list(_seeds(summary))
    except (KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: a summary of an unexpected layout ({type(err).__name__}: {err})") from None
    return summary


def check_workdir(workdir: Path, root: Path) -> Path:
    """``workdir``, resolved, if ``run`` may empty and use it; ReplicateError (nothing touched) if not: the
    repository ``root`` and every folder above it, and any existing path without this tool's marker (an empty
    folder is fine: nothing in it to lose)."""
    path, repo = workdir.resolve(), root.resolve()
    if path == repo or path in repo.parents:
        where = "the repository itself" if path == repo else f"a folder above the repository {repo}"
        raise ReplicateError(f"--workdir {workdir} is {where}: refusing to replace it")
    if workdir.is_symlink() or (path.exists() and not path.is_dir()):
        raise ReplicateError(f"--workdir {workdir} exists and is not a folder: refusing to replace it")
    if path.is_dir() and not (path / MARKER).is_file() and any(path.iterdir()):
        raise ReplicateError(
            f"--workdir {workdir} exists and was not made by tools.replicate (no {MARKER} in it): refusing to delete "
            "it; remove it yourself or give another --workdir"
        )
    return path


def claim_workdir(workdir: Path, root: Path) -> Path:
    """An empty ``workdir`` marked as this tool's (its earlier contents removed only if it was already ours)."""
    path = check_workdir(workdir, root)
    if (path / MARKER).is_file():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("made by `python -m tools.replicate run`; it deletes and reuses this folder\n")
    return path


def copy_project(root: Path, dest: Path) -> Path:
    """Copy the repo's tracked and untracked-but-not-ignored files (not data, models or caches) into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    for rel in files:
        if (root / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, dest / rel)
    return dest


def run(seeds: list[int], workdir: Path, out: Path, root: Path = Path(".")) -> Path:
    """The whole experiment from other baseline seeds, in a copy of the repo; returns the copied summary."""
    import yaml

    workdir = claim_workdir(workdir, root)
    copy_project(root, workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["baseline_seeds"] = seeds
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cache = (root / ".dvc" / "cache").resolve()
    # A committed git repo: dvclive (the training stages' logger) refuses an empty one.
    who = {"GIT_AUTHOR_NAME": "lmask", "GIT_AUTHOR_EMAIL": "lmask@localhost"}
    who |= {"GIT_COMMITTER_NAME": who["GIT_AUTHOR_NAME"], "GIT_COMMITTER_EMAIL": who["GIT_AUTHOR_EMAIL"]}
    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    with (workdir / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write(f"/{MARKER}\n")  # the marker stays out of the copy's commit
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", f"replicate from {seeds}"]):
        subprocess.run(cmd, cwd=workdir, check=True, env={**os.environ, **who})
    subprocess.run(["dvc", "cache", "dir", "--local", str(cache)], cwd=workdir, check=True)
    subprocess.run(["dvc", "repro", "summarize"], cwd=workdir, check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(workdir / "metrics" / "summary.json", out)
    shutil.copy2(workdir / "metrics" / "summary.md", out.with_suffix(".md"))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m tools.replicate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="rerun the experiment from other baseline seeds in a copy of this repo")
    r.add_argument("--seeds", type=int, nargs="+", required=True)
    r.add_argument("--workdir", type=Path, default=Path("/tmp/lmask-replicate"))
    r.add_argument("--out", type=Path, default=Path("results/replicate/summary.json"))
    c = sub.add_parser("compare", help="compare the verdict words of two summaries")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--out", type=Path, default=None, help="write the comparison here (metrics/replicate.json)")
    args = p.parse_args(argv)
    if args.command == "run":
        try:
            print(f"wrote {run(args.seeds, args.workdir, args.out)}")
        except ReplicateError as err:
            fail(PROG, err)
        return
    try:
        a, b = load_summary(args.a), load_summary(args.b)
        result = compare(a, b, _seeds(a), _seeds(b))
        if args.out:
            write_json(args.out, result)
    except (DataError, WriteError) as err:
        fail(PROG, err)
    for key in result["changed_comparisons"]:
        print(f"{key}: {result['verdicts'][key][0]} -> {result['verdicts'][key][1]}")
    print(
        f"{result['changed']} of {result['total']} verdict words changed ({result['changed_fraction']:.0%}), "
        f"{result['reversals']} reversals (better <-> worse), {result['rejections_a']} and {result['rejections_b']} "
        f"better/worse words; seeds {result['seeds_a']} vs {result['seeds_b']}"
    )


if __name__ == "__main__":
    sys.exit(main())
