"""The aggregation: every model's evaluation, training and benchmark files into one record per model, with intervals.

Reads what the per-model stages wrote (``metrics/eval/<model>.json`` and ``eval/<model>/<variant>.npz``,
``metrics/train/<run>/metrics.json``, ``metrics/benchmark/<schedule>.json``) for the models listed in params.yaml
now, and returns ``{model: record}`` (``metrics/summary.json``). Every gap carries a paired bootstrap 95 % interval
(lmask.stats) and the word it supports. Contract (tested): each windowed schedule's record has ``vs_full_pct``,
``vs_full_pct_ci95``, ``zero_shot_vs_baseline_pct``, ``zero_shot_vs_baseline_pct_ci95`` and ``n_seeds``; the
baseline's has ``copy_loss_drop``: {distance: {"value", "ci95"}}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmask.flops import flops_ceiling
from lmask.io import DataError, read_json
from lmask.params import Params, Schedule
from lmask.schedule import pair_fraction, receptive_field, windowed_layers
from lmask.stats import Estimate, bootstrap_mean, paired_gap, seed_gaps, verdict

BASELINE = "baseline"
DOMAINS = ("test", "code", "repeated")
# Where each evaluation domain stands relative to training (the report says it beside every per-domain gap).
DOMAIN_ROLE = {
    "test": "Wikipedia articles held out by title: in-domain",
    "code": "Python source (.py files of a pinned package): never seen in training, out of domain",
    "repeated": "test blocks whose second half repeats the first: copying from T/2 back pays off",
}


@dataclass
class ModelFiles:
    """One evaluate stage's outputs: point metrics, and per variant its arrays and texts."""

    name: str
    metrics: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]  # variant ("model", "zero_shot", "s0", ...) -> arrays
    extras: dict[str, dict[str, Any]]  # variant -> texts, attention rows, heatmaps


def load_model_files(name: str, metrics_dir: Path, arrays_dir: Path) -> ModelFiles:
    metrics = read_json(metrics_dir / f"{name}.json", f"run `dvc repro` for {name}'s evaluate stage")
    folder = arrays_dir / name
    arrays, extras = {}, {}
    for npz in sorted(folder.glob("*.npz")):
        try:
            with np.load(npz) as f:
                arrays[npz.stem] = {k: f[k] for k in f.files}
        except (OSError, ValueError) as err:
            raise DataError(f"{npz}: not a readable .npz archive ({err})") from None
        extras[npz.stem] = read_json(npz.with_suffix(".json"))
    if not arrays:
        raise DataError(f"{folder}: no evaluation arrays (run `dvc repro` for {name}'s evaluate stage)")
    return ModelFiles(name, metrics, arrays, extras)


def _est(e: Estimate, digits: int = 4) -> dict[str, Any]:
    r = e.rounded(digits)
    return {"value": r.value, "ci95": r.ci}


def copy_drop(copy_nll: np.ndarray, distances: list[int], name: str, samples: int, conf: float) -> dict[str, dict]:
    """Copy gain per distance with a bootstrap CI over the probe sequences (paired: same vs control per sequence)."""
    gains = copy_nll[:, :, 1] - copy_nll[:, :, 0]
    return {str(d): _est(bootstrap_mean(g, f"{name}/copy/{d}", samples, conf)) for d, g in zip(distances, gains)}


def _gap(a: list[np.ndarray], b: list[np.ndarray], chunk: int, name: str, samples: int, conf: float) -> dict:
    e = paired_gap(a, b, chunk, name, samples, conf)
    return {"pct": round(e.value, 3), "pct_ci95": [round(e.lo, 3), round(e.hi, 3)], "verdict": verdict(e)}


def schedule_record(
    s: Schedule, files: ModelFiles, base: ModelFiles, full: ModelFiles | None, params: Params
) -> dict[str, Any]:
    cfg, ctx = params.report, params.context
    samples, conf, chunk = cfg.bootstrap_samples, cfg.confidence, params.evaluate.chunk_blocks
    seeds = [f"s{k}" for k in files.metrics["seeds"]]
    tuned = {d: [files.arrays[v][f"nll_{d}"] for v in seeds] for d in DOMAINS}
    zero = {"test": [files.arrays["zero_shot"]["nll_test"]]}  # zero-shot is scored on the test text only
    baseline = {d: [base.arrays["model"][f"nll_{d}"]] for d in DOMAINS}
    rec: dict[str, Any] = {
        "windows": s.windows,
        "sinks": s.sinks,
        "windowed_layers": len(windowed_layers(s.windows, ctx)),
        "attention_pairs": round(pair_fraction(s.windows, ctx, s.sinks), 4),
        "receptive_field": receptive_field(s.windows, ctx),
        "n_seeds": len(seeds),
        "test_ppl": round(math.exp(float(np.mean([x.mean() for x in tuned["test"]]))), 3),
        "test_ppl_seeds": [files.metrics[v]["test_ppl"] for v in seeds],
        "zero_shot_test_ppl": files.metrics["zero_shot"]["test_ppl"],
    }
    z = _gap(zero["test"], baseline["test"], chunk, f"{s.name}/zero_shot/test", samples, conf)
    rec.update(
        zero_shot_vs_baseline_pct=z["pct"],
        zero_shot_vs_baseline_pct_ci95=z["pct_ci95"],
        zero_shot_vs_baseline=z["verdict"],
    )
    b = _gap(tuned["test"], baseline["test"], chunk, f"{s.name}/vs_baseline/test", samples, conf)
    rec.update(vs_baseline_pct=b["pct"], vs_baseline_pct_ci95=b["pct_ci95"], vs_baseline=b["verdict"])
    if full is not None and not s.is_full:
        full_seeds = [f"s{k}" for k in full.metrics["seeds"]]
        control = {d: [full.arrays[v][f"nll_{d}"] for v in full_seeds] for d in DOMAINS}
        f = _gap(tuned["test"], control["test"], chunk, f"{s.name}/vs_full/test", samples, conf)
        rec.update(
            vs_full_pct=f["pct"],
            vs_full_pct_ci95=f["pct_ci95"],
            vs_full=f["verdict"],
            vs_full_pct_seeds=[round(x, 3) for x in seed_gaps(tuned["test"], control["test"])],
        )
        rec["domains"] = {
            d: {"vs_full": _gap(tuned[d], control[d], chunk, f"{s.name}/vs_full/{d}", samples, conf)} for d in DOMAINS
        }
    distances = params.copy.distances
    rec["copy_gain"] = {
        "zero_shot": copy_drop(files.arrays["zero_shot"]["copy_nll"], distances, f"{s.name}/zs", samples, conf),
        "finetuned": copy_drop(
            np.mean([files.arrays[v]["copy_nll"] for v in seeds], axis=0), distances, f"{s.name}/ft", samples, conf
        ),
    }
    rec["generation"] = _generation(
        [files.arrays[v] for v in seeds], [files.metrics[v] for v in seeds], f"{s.name}/gen", samples, conf
    )
    rec["flops_ceiling_at_context"] = round(
        flops_ceiling(s.windows, ctx, params.model.n_embd, files.metrics.get("vocab_size", 4096), s.sinks), 4
    )
    return rec


def _generation(arrays: list[dict], metrics: list[dict], name: str, samples: int, conf: float) -> dict[str, Any]:
    bleu = np.mean([a["gen_bleu"] for a in arrays], axis=0)  # per prompt, averaged over seeds
    return {
        "bleu": _est(bootstrap_mean(bleu, name, samples, conf), 2),
        "continuation_nll": round(float(np.mean([m["generation"]["continuation_nll"] for m in metrics])), 4),
        "distinct_2": round(float(np.mean([m["generation"]["distinct_2_greedy"] for m in metrics])), 4),
        "degenerate_fraction": round(float(np.mean([m["generation"]["degenerate_fraction"] for m in metrics])), 4),
    }


def baseline_record(base: ModelFiles, params: Params) -> dict[str, Any]:
    cfg = params.report
    m = base.metrics["model"]
    return {
        **{f"{d}_ppl": m[f"{d}_ppl"] for d in DOMAINS},
        "test_unigram_ppl": base.metrics["test_unigram_ppl"],
        "copy_loss_drop": copy_drop(
            base.arrays["model"]["copy_nll"],
            params.copy.distances,
            "baseline/copy",
            cfg.bootstrap_samples,
            cfg.confidence,
        ),
        "generation": _generation([base.arrays["model"]], [m], "baseline/gen", cfg.bootstrap_samples, cfg.confidence),
        "attention_pairs": 1.0,
        "receptive_field": params.context,
    }


def copy_range(record: dict[str, Any]) -> int | None:
    """The longest probe distance at which the baseline's copy gain is above 0 with its interval; None if none."""
    above = [int(d) for d, e in record["copy_loss_drop"].items() if e["ci95"][0] > 0]
    return max(above) if above else None


def summarize(params: Params, metrics_dir: Path, arrays_dir: Path) -> dict[str, dict[str, Any]]:
    """``{model: record}`` for the baseline and every schedule in params.yaml (files of removed schedules ignored)."""
    base = load_model_files(BASELINE, metrics_dir, arrays_dir)
    files = {name: load_model_files(name, metrics_dir, arrays_dir) for name in params.schedules}
    full_name = next((n for n, s in params.schedules.items() if s.is_full), None)
    full = files.get(full_name) if full_name else None
    out = {BASELINE: baseline_record(base, params)}
    for name, s in params.schedules.items():
        out[name] = schedule_record(s, files[name], base, full, params)
    out[BASELINE]["copy_range"] = copy_range(out[BASELINE])
    equal_pairs(out, files, params)
    return out


def equal_pairs(records: dict[str, dict], files: dict[str, ModelFiles], params: Params, tol: float = 0.02) -> None:
    """Q2: windowed schedules whose attention pairs agree within ``tol``, compared directly (paired by seed)."""
    cfg, chunk = params.report, params.evaluate.chunk_blocks
    names = [n for n, s in params.schedules.items() if not s.is_full]
    for a in names:
        records[a]["vs_equal_pairs"] = {}
        for b in names:
            if a != b and abs(records[a]["attention_pairs"] - records[b]["attention_pairs"]) <= tol:
                nll = [[files[n].arrays[f"s{k}"]["nll_test"] for k in files[n].metrics["seeds"]] for n in (a, b)]
                name = f"{a}/vs/{b}"
                records[a]["vs_equal_pairs"][b] = _gap(
                    nll[0], nll[1], chunk, name, cfg.bootstrap_samples, cfg.confidence
                )


__all__ = ["BASELINE", "DOMAINS", "DOMAIN_ROLE", "ModelFiles", "copy_range", "load_model_files", "summarize"]


def run_meta(params: Params, metrics_dir: Path) -> dict[str, Any]:
    """The scale of the run, for the captions: from params and the baseline's evaluation."""
    base = read_json(metrics_dir / f"{BASELINE}.json")
    return {
        "n_layer": params.model.n_layer,
        "n_embd": params.model.n_embd,
        "vocab_size": base.get("vocab_size"),
        "context": params.context,
        "train_steps": params.train.steps,
        "masked_steps": params.masked.steps,
        "n_seeds": len(params.finetune_seeds),
        "mix_fraction": params.mix.fraction,
    }
