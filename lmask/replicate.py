"""The replicate check: do two disjoint sets of baseline seeds give the same verdict words?

    python -m lmask.replicate run --seeds 3 4 5          # the whole experiment again from baselines 3, 4, 5, in a
                                                         #   copy of this repo (data stages restored from the cache)
    python -m lmask.replicate compare A.json B.json --out metrics/replicate.json

``run`` copies the repository's tracked and untracked files into ``--workdir``, sets ``baseline_seeds`` there, runs
``dvc repro summarize`` with this repo's DVC cache (so download and tokenize are restored, not recomputed) and copies
the resulting summary to ``results/replicate/summary.json``. ``compare`` lines up every verdict word of two summaries
(``lmask.summary``): it counts the words that changed and the reversals (better <-> worse), and prints the changes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from lmask.io import read_json, write_json

REVERSAL = {"better", "worse"}


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
        "changed_comparisons": changed,
        "only_in_one": sorted(set(wa) ^ set(wb)),
    }


def _seeds(summary: dict) -> list[int]:
    return summary["baseline"].get("baseline_seeds", [])


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

    if workdir.exists():
        shutil.rmtree(workdir)
    copy_project(root, workdir)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["baseline_seeds"] = seeds
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cache = (root / ".dvc" / "cache").resolve()
    # A committed git repo: dvclive (the training stages' logger) refuses an empty one.
    who = {"GIT_AUTHOR_NAME": "lmask", "GIT_AUTHOR_EMAIL": "lmask@localhost"}
    who |= {"GIT_COMMITTER_NAME": who["GIT_AUTHOR_NAME"], "GIT_COMMITTER_EMAIL": who["GIT_AUTHOR_EMAIL"]}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", f"replicate from {seeds}"]):
        subprocess.run(cmd, cwd=workdir, check=True, env={**os.environ, **who})
    subprocess.run(["dvc", "cache", "dir", "--local", str(cache)], cwd=workdir, check=True)
    subprocess.run(["dvc", "repro", "summarize"], cwd=workdir, check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(workdir / "metrics" / "summary.json", out)
    shutil.copy2(workdir / "metrics" / "summary.md", out.with_suffix(".md"))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        print(f"wrote {run(args.seeds, args.workdir, args.out)}")
        return
    a, b = read_json(args.a), read_json(args.b)
    result = compare(a, b, _seeds(a), _seeds(b))
    if args.out:
        write_json(args.out, result)
    for key in result["changed_comparisons"]:
        print(f"{key}: {result['verdicts'][key][0]} -> {result['verdicts'][key][1]}")
    print(
        f"{result['changed']} of {result['total']} verdict words changed ({result['changed_fraction']:.0%}), "
        f"{result['reversals']} reversals (better <-> worse); seeds {result['seeds_a']} vs {result['seeds_b']}"
    )


if __name__ == "__main__":
    sys.exit(main())
