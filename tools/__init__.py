"""Hand-run tools around the pipeline; nothing in dvc.yaml runs them, and nothing in lmask/ or stages/ imports them.

Each runs from the repository root as ``python -m tools.<name>`` and answers ``--help``:

    tools.preset         merge presets/<name>.yaml into params.yaml (--stack, --reset)
    tools.readme         refresh the generated blocks of README.md and docs/results.md
    tools.deps           check (--write: fix) dvc.yaml's code deps against each stage's import closure
    tools.replicate      rerun the experiment from other baseline seeds; compare two summaries' verdict words
    tools.remote         rehash every object on a DVC remote or in the local cache (--repair)
    tools.stage_times    run a DVC command and time each stage
    tools.bench_long     the long benchmark (T = 4096 and 8192)
    tools.profile_band   where the band kernel's time goes
    tools.profile_train  where a training step's time goes (torch.profiler, by part, against the matmul rate)
    tools.ab_band        a candidate band kernel source against the committed one, side by side
    tools.copy_onset     when a model of the experiment's shape starts to copy (the long preset's recipe probes)
    tools.copy_recipe    does a recipe (a preset, -S overrides) make one baseline copy? trained and scored, no DVC
    tools.prefix_switch  do prefixed copy rows break formed heads? shares of prefixed rows from a first-phase checkpoint
    tools.warmup_seeds   a copy warm-up with the weights' seed and the data's seed apart (late heads: init or data?)
    tools.gpu_smoke      GPU smoke run of the GPU preset (wrapper: bash tools/gpu_smoke.sh)
    tools.gpu_benchmark  the benchmark on a GPU, in one process (wrapper: bash tools/gpu_benchmark.sh)

Bad input ends a tool in one line on stderr, ``<tool>: error: ...``, with exit status 2 and no traceback (``fail``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from lmask.params import Params


def fail(prog: str, msg: object, code: int = 2) -> NoReturn:
    """Print ``prog: error: msg`` as one line on stderr and exit with ``code``."""
    text = " ".join(str(msg).split("\n")).strip()
    print(f"{prog}: error: {text}", file=sys.stderr)
    raise SystemExit(code)


def params_or_fail(prog: str, path: Path) -> Params:
    """The validated params file at ``path``, or ``prog: error: <the field's message>`` and exit 2."""
    from lmask.params import ParamsError, load_params

    try:
        return load_params(path)
    except ParamsError as err:
        fail(prog, err)
