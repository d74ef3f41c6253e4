"""The long benchmark: issue 20's whole-model targets (fwd and fwd+bwd, T = 4096 and 8192, the seed's three schedules),
outside the default pipeline's 10-min benchmark budget.

    python scripts/bench_long.py                          # presets/bench-long.yaml's T, one after another (~1.5 h)
    python scripts/bench_long.py --seq-lens 4096 --repeats 2
    python scripts/bench_long.py --seq-lens 8192 --schedules half   # redo one schedule, keep the others' files
    python scripts/bench_long.py --render                 # rewrite benchmark.md from the folders there

For each T it copies the project into a temporary folder, applies presets/progressions.yaml (the seed's
``quarter``) and presets/bench-long.yaml (plus the overrides given here), and runs the benchmark stage's own code,
``python -m stages.benchmark --schedule S``, once per schedule: each times S and full attention interleaved in one
process. Each T lands in its own folder, --out/T<T>/ (each schedule's JSON, the merged params.yaml and the commands
that made it, command.txt), so a run at one T leaves the others as they are, and a run of some --schedules keeps
the other schedules' files in that folder (its command is added to command.txt); --out/benchmark.md
(``lmask.bench_tables``: the tables and the targets) is rendered from all of them. Nothing in the working tree
changes except --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = ("half", "quarter", "aggressive")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq-lens", type=int, nargs="+", help="T to time, fwd and fwd+bwd (default: the preset's)")
    ap.add_argument("--repeats", type=int, help="timed rounds per T (default: the preset's)")
    ap.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES), help="(default: all three)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench-long")
    ap.add_argument("--render", action="store_true", help="only rewrite --out/benchmark.md from the folders there")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from lmask.io import atomic_dir
    from lmask.params import load_params
    from lmask.preset import apply_preset
    from lmask.replicate import copy_project

    if not args.render:
        command = shlex.join(["python", "scripts/bench_long.py", *sys.argv[1:]])
        with tempfile.TemporaryDirectory(prefix="lmask-bench-long-") as tmp:
            work = copy_project(ROOT, Path(tmp) / "repo")
            params = work / "params.yaml"
            for preset in ("progressions", "bench-long"):
                apply_preset(preset, params)
            seq_lens = args.seq_lens or load_params(params).benchmark.fwd_bwd_seq_lens
            for seq_len in seq_lens:  # one T at a time, so each finished T is kept even if a later one fails
                override: dict = {"seq_lens": [seq_len], "fwd_bwd_seq_lens": [seq_len]}
                if args.repeats:
                    override["repeats"] = args.repeats
                extra = Path(tmp) / "override.yaml"
                extra.write_text(json.dumps({"benchmark": override}))  # JSON is YAML; replaces the previous T's keys
                apply_preset(extra, params)
                for name in args.schedules:
                    out = work / "bench" / f"{name}.json"
                    cmd = [sys.executable, "-m", "stages.benchmark", "--schedule", name, "--out", str(out)]
                    subprocess.run(cmd, cwd=work, check=True)
                folder = args.out / f"T{seq_len}"
                kept = [n for n in SCHEDULES if n not in args.schedules and (folder / f"{n}.json").is_file()]
                with atomic_dir(folder) as dest:
                    for name in kept:  # from an earlier run of this T
                        shutil.copy2(folder / f"{name}.json", dest / f"{name}.json")
                    for name in args.schedules:
                        shutil.copy2(work / "bench" / f"{name}.json", dest / f"{name}.json")
                    shutil.copy2(params, dest / "params.yaml")
                    earlier = (folder / "command.txt").read_text() if kept else ""
                    (dest / "command.txt").write_text(earlier + command + "\n")
                print(f"wrote {args.out / f'T{seq_len}'}")
    render(args.out)


def render(out: Path) -> None:
    """out/benchmark.md from every out/T*/ folder: one table over all T, the commands that made each."""
    from lmask.bench_tables import benchmark_markdown
    from lmask.io import write_text

    folders = sorted((d for d in out.glob("T*") if d.is_dir()), key=lambda d: int(d.name[1:]))
    if not folders:
        raise SystemExit(f"{out}: no T<seq_len>/ folders to render")
    files = {f"{d.name}/{name}": json.loads((d / f"{name}.json").read_text()) for d in folders for name in SCHEDULES}
    made_by = ", ".join(
        f"`{line}` ({d.name}/)" for d in folders for line in (d / "command.txt").read_text().splitlines() if line
    )
    write_text(out / "benchmark.md", benchmark_markdown(files, f"{made_by} from the JSON files there") + "\n")
    print(f"wrote {out / 'benchmark.md'}")


if __name__ == "__main__":
    main()
