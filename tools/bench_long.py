"""The long benchmark: the whole-model speed targets (fwd and fwd+bwd, T = 4096 and 8192, the original three schedules),
outside the default pipeline's 10-min benchmark budget.

    python -m tools.bench_long                          # presets/bench-long.yaml's T, one after another (~1.5 h)
    python -m tools.bench_long --seq-lens 4096 --repeats 2
    python -m tools.bench_long --seq-lens 8192 --schedules half   # redo one schedule, keep the others' files
    python -m tools.bench_long --render                 # rewrite benchmark.md from the folders there

For each T it copies the project into a temporary folder, applies presets/progressions.yaml (the original project's
``quarter``) and presets/bench-long.yaml (plus the overrides given here), and runs the benchmark stage's own code,
``python -m stages.benchmark --schedule S``, once per schedule: each times S and full attention interleaved in one
process. Each T lands in its own folder, --out/T<T>/ (each schedule's JSON, the merged params.yaml and the commands
that made it, command.txt), so a run at one T leaves the others as they are, and a run of some --schedules keeps
the other schedules' files in that folder (its command is added to command.txt); --out/benchmark.md
(``lmask.bench_tables``: the tables and the targets) is rendered from all of them. Nothing in the working tree
changes except --out. Every T's params are validated before the first one runs: a bad --seq-lens or --repeats
ends the run in one line naming the field (exit 2).
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

from tools import fail

PROG = "bench_long"
ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = ("half", "quarter", "aggressive")


def _override(seq_len: int, repeats: int | None, path: Path) -> Path:
    """The benchmark keys for one T, as a preset file (JSON is YAML); merged over the previous T's."""
    override: dict = {"seq_lens": [seq_len], "fwd_bwd_seq_lens": [seq_len]}
    if repeats is not None:
        override["repeats"] = repeats
    path.write_text(json.dumps({"benchmark": override}))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m tools.bench_long", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seq-lens", type=int, nargs="+", help="T to time, fwd and fwd+bwd (default: the preset's)")
    ap.add_argument("--repeats", type=int, help="timed rounds per T (default: the preset's)")
    ap.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES), help="(default: all three)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench-long")
    ap.add_argument("--render", action="store_true", help="only rewrite --out/benchmark.md from the folders there")
    args = ap.parse_args(argv)
    from lmask.io import DataError, WriteError
    from lmask.params import ParamsError

    try:
        if not args.render:
            run(args, shlex.join(["python", "-m", "tools.bench_long", *(sys.argv[1:] if argv is None else argv)]))
        render(args.out)
    except ParamsError as err:
        fail(PROG, f"{err} (nothing was run)")
    except (DataError, WriteError) as err:
        fail(PROG, err)
    except subprocess.CalledProcessError as err:  # the stage printed why; the T folders finished before it are kept
        fail(PROG, f"{shlex.join(map(str, err.cmd))} failed with exit status {err.returncode}", err.returncode)


def run(args: argparse.Namespace, command: str) -> None:
    """Every T in turn, in a temporary copy of the project; ParamsError (before anything runs) for a bad T."""
    from lmask.io import atomic_dir
    from lmask.params import load_params
    from tools.preset import apply_preset
    from tools.replicate import copy_project

    with tempfile.TemporaryDirectory(prefix="lmask-bench-long-") as tmp:
        work = copy_project(ROOT, Path(tmp) / "repo")
        params = work / "params.yaml"
        for preset in ("progressions", "bench-long"):  # on this checkout's params.yaml as it is, as always
            apply_preset(preset, params, stack=True, record=False)  # (the per-T params.yaml as before)
        seq_lens = args.seq_lens or load_params(params).benchmark.fwd_bwd_seq_lens
        check = Path(tmp) / "check" / "params.yaml"
        check.parent.mkdir()
        for seq_len in seq_lens:  # validate every T's params first: a bad one fails before hours of timing
            shutil.copy2(params, check)
            apply_preset(_override(seq_len, args.repeats, Path(tmp) / "check.yaml"), check, stack=True, record=False)
        for seq_len in seq_lens:  # one T at a time, so each finished T is kept even if a later one fails
            extra = _override(seq_len, args.repeats, Path(tmp) / "override.yaml")
            apply_preset(extra, params, stack=True, record=False)  # replaces the previous T's keys
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


def render(out: Path) -> None:
    """out/benchmark.md from every out/T*/ folder: one table over all T, the commands that made each."""
    from lmask.bench_tables import benchmark_markdown
    from lmask.io import DataError, read_json, write_text

    folders = sorted((d for d in out.glob("T*") if d.is_dir() and d.name[1:].isdigit()), key=lambda d: int(d.name[1:]))
    if not folders:
        raise DataError(f"{out}: no T<seq_len>/ folders to render")
    files = {f"{d.name}/{name}": read_json(d / f"{name}.json") for d in folders for name in SCHEDULES}
    made_by = ", ".join(
        f"`{line}` ({d.name}/)" for d in folders for line in (d / "command.txt").read_text().splitlines() if line
    )
    write_text(out / "benchmark.md", benchmark_markdown(files, f"{made_by} from the JSON files there") + "\n")
    print(f"wrote {out / 'benchmark.md'}")


if __name__ == "__main__":
    main()
