"""Run a DVC command and measure each stage's wall time from DVC's own "Running stage" lines.

    python -m tools.stage_times --markdown stage-times.md -- dvc repro
    python -m tools.stage_times --log run.log --markdown times.md -- dvc exp run -S 'schedules.half.end_window=32'

The command's output is streamed through unchanged (and copied to --log with a timestamp per line). A stage's time
runs from its "Running stage" line to the next stage's (or to the end), so it includes the stage's process start-up
and DVC's own bookkeeping for it (hashing outputs, writing dvc.lock). The markdown table lists every stage that ran,
grouped by family (``train_masked@half-0`` and ``train_masked@half-1`` in one row with their range), and the total.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from tools import fail

STAGE = re.compile(r"Running stage '([^']+)':")


def run(cmd: list[str], log: Path | None) -> tuple[int, list[tuple[float, str]], float, float]:
    start = time.time()
    events: list[tuple[float, str]] = []
    out = log.open("w", buffering=1) if log else None  # line-buffered: the log can be followed
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.time()
        sys.stdout.write(line)
        sys.stdout.flush()
        if out:
            out.write(f"{now - start:9.1f} {line}")
        match = STAGE.search(line)
        if match:
            events.append((now, match.group(1)))
    code = proc.wait()
    if out:
        out.close()
    return code, events, start, time.time()


def family(stage: str) -> str:
    """train_masked@half-0 -> train_masked@*, evaluate@half -> evaluate@*, benchmark@half -> benchmark@*."""
    return stage.split("@")[0] + "@*" if "@" in stage else stage


def table(events: list[tuple[float, str]], start: float, end: float, command: str) -> str:
    durations = [(name, (events[i + 1][0] if i + 1 < len(events) else end) - t) for i, (t, name) in enumerate(events)]
    groups: dict[str, list[float]] = {}
    for name, seconds in durations:
        groups.setdefault(family(name), []).append(seconds)
    lines = [
        f"Measured with `python -m tools.stage_times -- {command}`:",
        "",
        "| stage | runs | time |",
        "|---|---|---|",
    ]
    for name, times in groups.items():
        if len(times) == 1:
            lines.append(f"| `{name}` | 1 | {times[0]:.0f} s |")
        else:
            lines.append(
                f"| `{name}` | {len(times)} | {min(times):.0f}–{max(times):.0f} s each, {sum(times):.0f} s in all |"
            )
    bench = sum(t for n, t in durations if n.startswith("benchmark"))
    if bench:  # the budgets are stated for the experiment (everything but the benchmark) and the benchmark
        rest = end - start - bench
        lines.append(f"| experiment (all but `benchmark*`) | | {rest:.0f} s ({rest / 60:.1f} min) |")
        lines.append(f"| benchmark (`benchmark*`) | | {bench:.0f} s ({bench / 60:.1f} min) |")
    lines.append(f"| **total** | {len(durations)} | **{end - start:.0f} s ({(end - start) / 60:.1f} min)** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m tools.stage_times", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--log", type=Path, help="copy of the output with a timestamp per line")
    p.add_argument("--markdown", type=Path, help="write the table here (else print it at the end)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args()
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("give the command to run after --")
    try:
        code, events, start, end = run(cmd, args.log)
    except OSError as err:  # the command not found, or --log not writable
        fail("stage_times", f"{err.filename or cmd[0]}: {err.strerror or err}")
    text = table(events, start, end, " ".join(cmd))
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
