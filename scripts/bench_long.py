"""The long benchmark: issue 20's whole-model targets (fwd and fwd+bwd, T = 4096 and 8192, the seed's three schedules),
outside the default pipeline's 10-min benchmark budget.

    python scripts/bench_long.py                          # presets/bench-long.yaml as it is (about 2 h on 2 cores)
    python scripts/bench_long.py --seq-lens 4096 --repeats 2 --out results/bench-long

It copies the project into a temporary folder, applies presets/progressions.yaml (the seed's ``quarter``) and
presets/bench-long.yaml (plus the overrides given here), and runs the benchmark stage's own code,
``python -m stages.benchmark --schedule S``, once per schedule: each times S and full attention interleaved in one
process. Then it writes into --out each schedule's JSON, the merged params.yaml, the command (command.txt) and
benchmark.md (``lmask.bench_tables``: the tables and the targets); ``--render`` rewrites benchmark.md from those
files. Nothing in the working tree changes except --out.
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
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench-long")
    ap.add_argument("--render", action="store_true", help="only rewrite --out/benchmark.md from the files there")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from lmask.bench_tables import benchmark_markdown
    from lmask.io import atomic_dir, write_text
    from lmask.preset import apply_preset
    from lmask.replicate import copy_project

    def markdown(files: dict[str, dict], command: str) -> str:
        return benchmark_markdown(files, f"`{command}` from the JSON files here") + "\n"

    if args.render:  # after a change to lmask.bench_tables: same numbers, new text
        command = (args.out / "command.txt").read_text().strip()
        files = {name: json.loads((args.out / f"{name}.json").read_text()) for name in SCHEDULES}
        write_text(args.out / "benchmark.md", markdown(files, command))
        print(f"wrote {args.out / 'benchmark.md'}")
        return

    override: dict = {}
    if args.seq_lens:
        override |= {"seq_lens": args.seq_lens, "fwd_bwd_seq_lens": args.seq_lens}
    if args.repeats:
        override["repeats"] = args.repeats
    with tempfile.TemporaryDirectory(prefix="lmask-bench-long-") as tmp:
        work = copy_project(ROOT, Path(tmp) / "repo")
        params = work / "params.yaml"
        for preset in ("progressions", "bench-long"):
            apply_preset(preset, params)
        if override:
            extra = Path(tmp) / "override.yaml"
            extra.write_text(json.dumps({"benchmark": override}))  # JSON is YAML
            apply_preset(extra, params)
        files = {}
        for name in SCHEDULES:
            out = work / "bench" / f"{name}.json"
            cmd = [sys.executable, "-m", "stages.benchmark", "--schedule", name, "--out", str(out)]
            subprocess.run(cmd, cwd=work, check=True)
            files[name] = json.loads(out.read_text())
        with atomic_dir(args.out) as dest:
            for name in SCHEDULES:
                shutil.copy2(work / "bench" / f"{name}.json", dest / f"{name}.json")
            shutil.copy2(params, dest / "params.yaml")
            command = shlex.join(["python", "scripts/bench_long.py", *sys.argv[1:]])
            (dest / "command.txt").write_text(command + "\n")
            (dest / "benchmark.md").write_text(markdown(files, command))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
