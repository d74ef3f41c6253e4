"""What every stage entry point shares: argument parsing, one-line errors, and the torchrun launch.

A stage reads params.yaml once (``lmask.params.load_params`` validates the whole file), takes its paths from the
command line (dvc.yaml declares them once), and hands plain values to lmask. A bad param or input file ends the
stage with one line naming the field or file and exit code 2, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from lmask.determinism import pin_cpu
from lmask.io import DataError, WriteError
from lmask.params import Params, ParamsError, load_params

# DVC deletes a stage's outputs before running it; after a failure the lock still names the previous ones.
RESTORE = (
    "DVC removed this stage's previous outputs before it ran: `dvc checkout && git checkout metrics/` restores them "
    "(models and arrays from the cache, the run's metrics from git)"
)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    return p


PARSE_ONLY = "LMASK_PARSE_ONLY"  # set: a stage parses its command line and exits 0 (tests/test_docs.py checks docs)


def params(args: argparse.Namespace) -> Params:
    """The validated params; also pins CPU numerics (threads, kernels) before any torch import, for reproducible
    results (lmask.determinism)."""
    if os.environ.get(PARSE_ONLY):
        raise SystemExit(0)
    p = load_params(args.params)
    if "torch" not in sys.modules:
        pin_cpu(p.cpu_threads)
    return p


def run(main: Callable[[], object]) -> None:
    """Run a stage's main; known input errors, a diverged training run and a failed write (disk full) become one
    line on stderr and exit code 2."""
    try:
        main()
    except ParamsError as err:
        print(f"error: params.yaml: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (FloatingPointError, WriteError) as err:  # a diverged run, a full disk: nothing half-written was kept
        print(f"error: {err}. {RESTORE}", file=sys.stderr)
        raise SystemExit(2) from None


def require_seed(seeds: list[int], seed: int, key: str) -> None:
    """A stage's --seed must be listed in params.yaml (a stale dvc.yaml matrix entry fails in one line)."""
    if seed not in seeds:
        raise ParamsError(f"{key}: {seed} is not listed (have {seeds})")


def is_main_rank() -> bool:
    return int(os.environ.get("RANK", 0)) == 0


def relaunch_under_torchrun(nproc: int, module: str) -> None:
    """With nproc > 1, replace this process by torchrun running the same stage on nproc ranks.

    Called after params.yaml is validated, so a bad value fails here in one line and no worker ever starts. With
    nproc 1 (or already under torchrun) it returns and the stage runs in this process: no launcher, no second
    torch import.
    """
    if nproc <= 1 or "LOCAL_RANK" in os.environ:
        return
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    os.execv(sys.executable, [*argv, "-m", module, *sys.argv[1:]])
