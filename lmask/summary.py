"""The aggregation: every model's evaluation into one record per model, with intervals over runs and documents.

Reads what the per-model stages wrote (``metrics/eval/<model>.json`` and ``eval/<model>/<variant>.npz``) for the
models listed in params.yaml now, and returns ``{model: record}`` (``metrics/summary.json``). Every comparison is
paired (same baseline, fine-tuning seed and document) and its interval covers baselines, seeds and documents
(lmask.stats.run_estimate); the words come from Holm-corrected tests within each family (one table column).

Contract (tested): each windowed schedule's record has ``vs_full_pct``, ``vs_full_pct_ci95``,
``zero_shot_vs_baseline_pct``, ``zero_shot_vs_baseline_pct_ci95``, ``n_baselines`` and ``n_seeds``; the baseline's
has ``copy_loss_drop``: {distance: {"value", "ci95"}} and ``test_documents``: {domain: documents}.
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
from lmask.stats import Estimate, gap_array, holm, holm_adjusted, nll_gap_to_pct, run_estimate, verdict

BASELINE = "baseline"
# The texts evaluate scores every model on (an ``nll_<domain>`` array each): the held-out documents (lmask.data.HELDOUT)
# and the repeated text built from the test ones (lmask.synthetic.repeated_text_documents).
EVAL_DOMAINS = ("test", "code", "repeated")
# Where each evaluation domain stands relative to training (the report says it beside every per-domain gap).
DOMAIN_ROLE = {
    "test": "Wikipedia articles held out by title: in-domain",
    "code": "Python source files of a pinned package: never seen in training, out of domain",
    "repeated": "each test article's first half, then the same text again: copying from half a document back pays off",
}


@dataclass
class ModelFiles:
    """One evaluate stage's outputs: point metrics, and per variant its arrays and texts."""

    name: str
    metrics: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]  # variant ("b0", "b0-zs", "b0-s1", ...) -> arrays
    extras: dict[str, dict[str, Any]]  # variant -> texts, attention rows, heatmaps

    def runs(self, key: str) -> list[list[np.ndarray]]:
        """Array ``key`` per baseline (outer list) and fine-tuning seed (inner list), e.g. "nll_test", "copy_nll";
        "<key>@zs" reads the zero-shot variants (one per baseline)."""
        bases = self.metrics["baseline_seeds"]
        if self.name == BASELINE:
            return [[self.arrays[f"b{k}"][key]] for k in bases]
        if key.endswith("@zs"):
            return [[self.arrays[f"b{k}-zs"][key[:-3]]] for k in bases]
        # Seeds that scored ``key`` (the code/repeated domains and generation: the first seed; lmask.evaluate.Parts)
        seeds = [s for s in self.metrics["finetune_seeds"] if key in self.arrays[f"b{bases[0]}-s{s}"]]
        return [[self.arrays[f"b{k}-s{s}"][key] for s in seeds] for k in bases]


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


class Families:
    """Comparisons grouped into families; ``resolve`` applies Holm within each and writes the words."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.members: dict[str, list[tuple[dict, Estimate, bool]]] = {}

    def add(self, family: str, out: dict, est: Estimate, lower_is_better: bool = True) -> dict:
        self.members.setdefault(family, []).append((out, est, lower_is_better))
        return out

    def resolve(self) -> None:
        for members in self.members.values():
            pvalues = [est.p for _, est, _ in members]
            for (out, est, lower), rejected, adjusted in zip(
                members, holm(pvalues, self.alpha), holm_adjusted(pvalues), strict=True
            ):
                out["verdict"] = verdict(est, rejected, lower)
                out["p_holm"] = None if adjusted is None else round(adjusted, 4)


def pct_gap(est: Estimate) -> dict[str, Any]:
    """An NLL gap as a perplexity change in %, with its interval and per-baseline estimates."""
    e = est.map(nll_gap_to_pct)
    return {
        "pct": round(e.value, 3),
        "pct_ci95": None if e.lo is None else [round(e.lo, 3), round(e.hi, 3)],
        "pct_baselines": [round(x, 3) for x in e.per_run],
        "documents": e.units,
    }


def nats(est: Estimate, digits: int = 4) -> dict[str, Any]:
    return {
        "value": round(est.value, digits),
        "ci95": None if est.lo is None else [round(est.lo, digits), round(est.hi, digits)],
        "baselines": [round(x, digits) for x in est.per_run],
    }


def bucket_labels(edges: list[int], context: int) -> list[tuple[str, slice]]:
    """Query-position buckets (NLL column c is the query at position c) as (label, column slice)."""
    bounds = [0, *edges, context - 1]
    return [(f"{lo}-{hi - 1}", slice(lo, hi)) for lo, hi in zip(bounds, bounds[1:])]


def _columns(runs: list[list[np.ndarray]], cols: slice) -> list[list[np.ndarray]]:
    """The runs' NLL restricted to columns ``cols``, keeping documents with at least one scored token there."""
    keep = np.isfinite(runs[0][0][:, cols]).any(axis=1)
    return [[x[keep, cols] for x in per_seed] for per_seed in runs]


def compare(a: list[list[np.ndarray]], b: list[list[np.ndarray]], confidence: float) -> Estimate:
    """Paired comparison of per-token NLL runs a[b][s] against b[b][s] (or one reference per baseline)."""
    gaps, weights = gap_array(a, b)
    return run_estimate(gaps, weights, confidence)


def copy_gains(copy_runs: list[list[np.ndarray]], confidence: float, threshold: float | None = None) -> list[Estimate]:
    """Copy gain per distance (nats), over baselines, seeds and probe sequences."""
    g = np.asarray([[c[:, :, 1] - c[:, :, 0] for c in per_seed] for per_seed in copy_runs])  # [B, S, dist, seq]
    return [run_estimate(g[:, :, i, :], None, confidence, threshold) for i in range(g.shape[2])]


def schedule_record(
    s: Schedule, files: ModelFiles, base: ModelFiles, full: ModelFiles | None, params: Params, fam: Families
) -> dict[str, Any]:
    ctx, conf = params.context, params.report.confidence
    tuned = {d: files.runs(f"nll_{d}") for d in EVAL_DOMAINS}
    rec: dict[str, Any] = {
        "windows": s.windows,
        "sinks": s.sinks,
        "windowed_layers": len(windowed_layers(s.windows, ctx)),
        "attention_pairs": round(pair_fraction(s.windows, ctx, s.sinks), 4),
        "receptive_field": receptive_field(s.windows, ctx),
        "n_baselines": len(files.metrics["baseline_seeds"]),
        "n_seeds": len(files.metrics["finetune_seeds"]),
        "test_ppl": round(math.exp(float(np.nanmean(tuned["test"]))), 3),
        "test_ppl_baselines": [round(math.exp(float(np.nanmean(r))), 3) for r in tuned["test"]],
        "zero_shot_test_ppl": round(math.exp(float(np.nanmean(files.runs("nll_test@zs")))), 3),
    }
    baseline_test = base.runs("nll_test")
    zero = compare(files.runs("nll_test@zs"), baseline_test, conf)
    tuned_vs_base = compare(tuned["test"], baseline_test, conf)
    rec["gaps"] = {
        "zero_shot_vs_baseline": fam.add("zero_shot_vs_baseline", pct_gap(zero), zero),
        "vs_baseline": fam.add("vs_baseline", pct_gap(tuned_vs_base), tuned_vs_base),
    }
    if full is not None and not s.is_full:
        control = {d: full.runs(f"nll_{d}") for d in EVAL_DOMAINS}
        rec["domains"] = {}
        for d in EVAL_DOMAINS:
            e = compare(tuned[d], control[d], conf)
            rec["domains"][d] = {"vs_full": fam.add(f"vs_full/{d}", pct_gap(e), e)}
        rec["gaps"]["vs_full"] = rec["domains"]["test"]["vs_full"]
        rec["by_position"] = {}
        for label, cols in bucket_labels(params.evaluate.position_buckets, ctx):
            e = compare(_columns(tuned["test"], cols), _columns(control["test"], cols), conf)
            rec["by_position"][label] = fam.add("vs_full/by_position", pct_gap(e), e)
    gains = copy_gains(files.runs("copy_nll@zs"), conf)  # the probe runs on zero-shot variants (lmask.evaluate)
    rec["copy_gain"] = {"zero_shot": {str(d): nats(e) for d, e in zip(params.copy.distances, gains, strict=True)}}
    rec["generation"] = generation(files, conf)
    rec["flops_ceiling_at_context"] = round(
        flops_ceiling(s.windows, ctx, params.model.n_embd, files.metrics.get("vocab_size", 4096), s.sinks), 4
    )
    return rec


def generation(files: ModelFiles, confidence: float) -> dict[str, Any]:
    """BLEU and the true continuation's NLL per prompt, over baselines, seeds and prompts; distinct-2 and loops."""
    first = files.runs("gen_bleu")[0][0]
    if not len(first):
        return {"prompts": 0}
    out: dict[str, Any] = {"prompts": len(first)}
    for key, name, digits in (("gen_bleu", "bleu", 2), ("gen_continuation_nll", "continuation_nll", 4)):
        runs = np.asarray(files.runs(key), dtype=np.float64)  # [B, S, prompts]
        out[name] = nats(run_estimate(runs, None, confidence), digits)
    variants = [v for v in files.metrics if isinstance(files.metrics[v], dict) and "generation" in files.metrics[v]]
    for key in ("distinct_2", "degenerate_fraction"):
        out[key] = round(float(np.mean([files.metrics[v]["generation"][key] for v in variants])), 4)
    return out


def baseline_record(base: ModelFiles, params: Params, fam: Families) -> dict[str, Any]:
    conf, bases = params.report.confidence, base.metrics["baseline_seeds"]
    rec: dict[str, Any] = {}
    for d in EVAL_DOMAINS:
        rec[f"{d}_ppl"] = round(math.exp(float(np.nanmean(base.runs(f"nll_{d}")))), 3)
        rec[f"{d}_ppl_baselines"] = [base.metrics[f"b{k}"][f"{d}_ppl"] for k in bases]
    rec["test_unigram_ppl"] = base.metrics["test_unigram_ppl"]
    rec["n_baselines"] = len(bases)
    rec["baseline_seeds"] = bases
    rec["test_documents"] = base.metrics["documents"]
    # The Q1 gate: a gain above copy.min_gain nats, one-sided, Holm-corrected across distances.
    gains = copy_gains(base.runs("copy_nll"), conf, params.copy.min_gain)
    rec["copy_loss_drop"] = {}
    for d, e in zip(params.copy.distances, gains, strict=True):
        rec["copy_loss_drop"][str(d)] = fam.add("copy_gate", {**nats(e), "sequences": e.units}, e, False)
    rec["generation"] = generation(base, conf)
    rec["attention_pairs"] = 1.0
    rec["receptive_field"] = params.context
    return rec


def copy_range(record: dict[str, Any]) -> int | None:
    """The longest probe distance at which the baselines' copy gain passes the gate (above copy.min_gain, Holm)."""
    passed = [int(d) for d, e in record["copy_loss_drop"].items() if e["verdict"] == "better"]
    return max(passed) if passed else None


def summarize(params: Params, metrics_dir: Path, arrays_dir: Path) -> dict[str, dict[str, Any]]:
    """``{model: record}`` for the baselines and every schedule in params.yaml (files of removed schedules ignored)."""
    fam = Families(1 - params.report.confidence)
    base = load_model_files(BASELINE, metrics_dir, arrays_dir)
    files = {name: load_model_files(name, metrics_dir, arrays_dir) for name in params.schedules}
    full_name = next((n for n, s in params.schedules.items() if s.is_full), None)
    full = files.get(full_name) if full_name else None
    out = {BASELINE: baseline_record(base, params, fam)}
    for name, s in params.schedules.items():
        out[name] = schedule_record(s, files[name], base, full, params, fam)
    equal_pairs(out, files, params, fam)
    fam.resolve()
    out[BASELINE]["copy_range"] = copy_range(out[BASELINE])
    for rec in out.values():
        for key, g in rec.get("gaps", {}).items():  # the headline comparisons, flat (the summary contract)
            rec.update({f"{key}_pct": g["pct"], f"{key}_pct_ci95": g["pct_ci95"], key: g["verdict"]})
            rec[f"{key}_pct_baselines"] = g["pct_baselines"]
    return out


def equal_pairs(
    records: dict[str, dict], files: dict[str, ModelFiles], params: Params, fam: Families, tol: float = 0.02
) -> None:
    """Q2: windowed schedules whose attention pairs agree within ``tol``, compared directly (paired by run)."""
    names = [n for n, s in params.schedules.items() if not s.is_full]
    for a in names:
        records[a]["vs_equal_pairs"] = {}
        for b in names:
            if a < b and abs(records[a]["attention_pairs"] - records[b]["attention_pairs"]) <= tol:
                e = compare(files[a].runs("nll_test"), files[b].runs("nll_test"), params.report.confidence)
                records[a]["vs_equal_pairs"][b] = fam.add("equal_pairs", pct_gap(e), e)


def run_meta(params: Params, metrics_dir: Path) -> dict[str, Any]:
    """The scale of the run, for the captions: from params and the baselines' evaluation."""
    base = read_json(metrics_dir / f"{BASELINE}.json")
    return {
        "n_layer": params.model.n_layer,
        "n_embd": params.model.n_embd,
        "vocab_size": base.get("vocab_size"),
        "context": params.context,
        "train_steps": params.train.steps,
        "masked_steps": params.masked.steps,
        "n_baselines": len(params.baseline_seeds),
        "n_seeds": len(params.finetune_seeds),
        "mix_fraction": params.mix.fraction,
        "documents": base.get("documents", {}),
        "copy_sequences": params.copy.n_sequences,
        "schedule_copy_sequences": params.copy.schedule_sequences,
        "min_gain": params.copy.min_gain,
        "confidence": params.report.confidence,
    }


__all__ = [
    "BASELINE",
    "EVAL_DOMAINS",
    "DOMAIN_ROLE",
    "Families",
    "ModelFiles",
    "bucket_labels",
    "copy_range",
    "load_model_files",
    "run_meta",
    "summarize",
]
