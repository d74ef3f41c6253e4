"""Does a training recipe make a baseline copy? One baseline, one process, no DVC, nothing in the repo changed.

    python -m tools.copy_recipe --preset long -S model.initializer_range=0.1
    python -m tools.copy_recipe -S train.steps=300 -S mix.fraction=0.5 --json /tmp/recipe.json

Takes params.yaml, merges ``--preset`` (a name under presets/ or a file) and each ``-S key=value`` (a dotted key, a
YAML value, as in ``dvc exp run -S``), validates the result (one line naming the field), trains baseline
``--baseline`` exactly as ``train_baseline@<b>`` would (lmask.train.train_baseline) into ``--out`` (a temporary
folder unless given), then scores it as ``evaluate_baseline`` does on the test and repeated-text domains and the copy
probe. It prints the two copy measures of Q1's positive control for this one baseline, each with a 95 % t interval
over documents or probe sequences: the repeated-text drop (first half's NLL minus the repeated second half's) and the
copy gain at every ``copy.distances`` entry. A recipe that passes here is worth a full ``dvc repro``; the
pipeline's own intervals also cover baselines. Needs ``dvc repro tokenize`` first (data/tokenized, data/tokenizer).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tools import fail

PROG = "copy_recipe"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m tools.{PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--preset", default=None, help="a preset name (presets/<name>.yaml) or file merged first")
    p.add_argument("-S", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override, repeatable")
    p.add_argument("--baseline", type=int, default=0, help="baseline seed (its init, data order and mix)")
    p.add_argument("--data", type=Path, default=Path("data/tokenized"))
    p.add_argument("--tokenizer", type=Path, default=Path("data/tokenizer"))
    p.add_argument("--out", type=Path, default=None, help="keep the model, dvclive folder and checkpoints here")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    return p.parse_args(argv)


def recipe_params(params_path: Path, preset: str | None, sets: list[str]):
    """params.yaml with the preset and the overrides merged in, validated (``lmask.params.ParamsError`` names the
    field)."""
    import yaml
    from ruamel.yaml import YAML

    from lmask.params import ParamsError, params_from_dict
    from tools.preset import load_yaml, merge_into, preset_path

    def load(path: Path):
        try:
            return load_yaml(YAML(typ="safe"), path, path.read_text())
        except FileNotFoundError:
            raise ParamsError(f"{path}: no such file") from None

    raw = load(params_path)
    if preset is not None:
        merge_into(raw, load(preset_path(preset, params_path)) or {})
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"-S {item}: expected KEY=VALUE (a dotted key such as model.initializer_range=0.1)")
        *path, last = key.split(".")
        node = raw
        for i, part in enumerate(path):
            if not isinstance(node.get(part), dict):
                raise ParamsError(f"-S {item}: {'.'.join(path[: i + 1])} is not a params section")
            node = node[part]
        node[last] = yaml.safe_load(value)
    return params_from_dict(raw)


def recipe_or_fail(prog: str, params_path: Path, preset: str | None, sets: list[str]):
    """``recipe_params``, or ``prog: error: <the field's message>`` and exit 2."""
    from lmask.params import ParamsError

    try:
        return recipe_params(params_path, preset, sets)
    except ParamsError as err:
        fail(prog, err)


def interval(x) -> list[float]:
    """[mean, low, high]: a 95 % t interval over the entries of ``x``."""
    import numpy as np
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return [round(float(x.mean()), 4), round(float(x.mean()) - half, 4), round(float(x.mean()) + half, 4)]


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    params = recipe_or_fail(PROG, a.params, a.preset, a.sets)
    if a.baseline not in params.baseline_seeds:
        fail(PROG, f"--baseline {a.baseline}: not in baseline_seeds {params.baseline_seeds}")
    for path in (a.data / "train.npy", a.data / "test.npy", a.tokenizer):
        if not path.exists():
            fail(PROG, f"{path}: not found (run `dvc repro tokenize` first)")
    from lmask.determinism import pin_cpu

    pin_cpu(params.cpu_threads)
    import torch

    from lmask.evaluate import Parts, eval_data, evaluate_variant
    from lmask.model import load_model
    from lmask.summary import repeated_drop
    from lmask.train import train_baseline

    with tempfile.TemporaryDirectory(prefix="copy_recipe-") as tmp:
        out = a.out or Path(tmp)
        start = time.perf_counter()
        train_baseline(params, a.baseline, a.data, a.tokenizer, out / "model", out / "live", out / "checkpoints")
        seconds = time.perf_counter() - start
        model = load_model(out / "model")
        arrays, scored = evaluate_variant(model, eval_data(params, a.data), params, None, torch.device("cpu"), Parts())
    gain = arrays["copy_nll"][:, :, 1] - arrays["copy_nll"][:, :, 0]
    result = {
        "baseline": a.baseline,
        "preset": a.preset,
        "overrides": a.sets,
        "train_seconds": round(seconds),
        "test_ppl": scored["metrics"]["test_ppl"],
        "repeated_drop_nats": interval(repeated_drop(arrays["nll_repeated"])),
        "copy_gain_nats": {str(d): interval(g) for d, g in zip(params.copy.distances, gain)},
    }
    drop = result["repeated_drop_nats"]
    print(f"baseline {a.baseline}: trained in {result['train_seconds']} s, test ppl {result['test_ppl']}")
    print(f"repeated-text drop {drop[0]:+.3f} nats [{drop[1]:+.3f}, {drop[2]:+.3f}] (the positive control needs 1)")
    for d, (m, lo, hi) in result["copy_gain_nats"].items():
        print(f"copy gain at d = {d}: {m:+.3f} nats [{lo:+.3f}, {hi:+.3f}]")
    if a.json is not None:
        from lmask.io import write_json

        write_json(a.json, result, indent=1)


if __name__ == "__main__":
    main()
