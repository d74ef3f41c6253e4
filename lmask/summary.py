"""The aggregation: every model's evaluation into one record per model, with intervals over runs and documents.

Reads what the per-model stages wrote (``metrics/eval/<model>.json`` and ``eval/<model>/<variant>.npz``) for the
models listed in params.yaml now, and returns ``{model: record}`` (``metrics/summary.json``). Every comparison is
paired (same baseline, fine-tuning seed and document) and its interval covers baselines, seeds and documents
(lmask.stats.run_estimate); the words come from Holm-corrected tests within each family (one table column).

Contract (tested): each windowed schedule's record has ``vs_full_pct``, ``vs_full_pct_ci95``,
``zero_shot_vs_baseline_pct``, ``zero_shot_vs_baseline_pct_ci95``, ``n_baselines`` and ``n_seeds``; the baseline's
has ``copy_loss_drop``: {distance: {"value", "ci95"}}, ``test_documents``: {domain: documents} and ``copy``:
{``repeated_drop_nats``, ``gate_passed_at``, ``repeated_drop_by_source``: {"lo-hi": {"value", "ci95", "documents"}}}.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmask.flops import flops_ceiling
from lmask.io import DataError, read_json
from lmask.params import Params, Schedule
from lmask.schedule import pair_fraction, receptive_field, windowed_layers
from lmask.stats import (
    Estimate,
    contrast_estimate,
    gap_array,
    holm,
    holm_adjusted,
    nll_gap_to_pct,
    run_estimate,
    verdict,
)

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
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
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


def _design(est: Estimate, mde80: float | None, digits: int) -> dict[str, Any]:
    """What every interval record carries besides its numbers: degrees of freedom and the 80 %-power minimum
    detectable effect (lmask.stats), or why there is no interval."""
    out: dict[str, Any] = {
        "df": None if est.df is None or not math.isfinite(est.df) else round(est.df, 2),
        "mde80": None if mde80 is None else round(mde80, digits),
    }
    if est.why:
        out["no_interval"] = est.why
    return out


def pct_gap(est: Estimate) -> dict[str, Any]:
    """An NLL gap as a perplexity change in %, with its interval, per-baseline estimates, df and mde80."""
    e = est.map(nll_gap_to_pct)
    return {
        "pct": round(e.value, 3),
        "pct_ci95": None if e.lo is None else [round(e.lo, 3), round(e.hi, 3)],
        "pct_baselines": [round(x, 3) for x in e.per_run],
        "documents": e.units,
        **_design(e, e.mde80, 3),
    }


def nats(est: Estimate, digits: int = 4) -> dict[str, Any]:
    return {
        "value": round(est.value, digits),
        "ci95": None if est.lo is None else [round(est.lo, digits), round(est.hi, digits)],
        "baselines": [round(x, digits) for x in est.per_run],
        **_design(est, est.mde80, digits),
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


def copy_gain_arrays(copy_runs: list[list[np.ndarray]]) -> np.ndarray:
    """Copy gain per (baseline, seed, distance, sequence) in nats: control NLL minus same-span NLL."""
    return np.asarray([[c[:, :, 1] - c[:, :, 0] for c in per_seed] for per_seed in copy_runs])


def copy_gains(copy_runs: list[list[np.ndarray]], confidence: float, threshold: float | None = None) -> list[Estimate]:
    """Copy gain per distance (nats), over baselines, seeds and probe sequences."""
    g = copy_gain_arrays(copy_runs)  # [B, S, dist, seq]
    return [run_estimate(g[:, :, i, :], None, confidence, threshold) for i in range(g.shape[2])]


def _paired(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b over [B, S, ...], a reference with one seed (a baseline, a zero-shot model) paired with every seed."""
    return a - (b if b.shape[1] == a.shape[1] else np.repeat(b, a.shape[1], axis=1))


def repeated_drop(nll: np.ndarray) -> np.ndarray:
    """Per repeated-text document: mean NLL over its first half minus over its second half (labels 1..h-1 against
    h+1..2h-1: the first token of each half cannot be copied). The second half is the first again, so only using
    context h tokens back lowers it: the positive control of Q1. repeated_drop_by_source over one bucket: all of it."""
    width = np.shape(nll)[1]
    return repeated_drop_by_source(nll, [("all", 1, width)])[:, 0]


def source_buckets(edges: list[int], context: int) -> list[tuple[str, int, int]]:
    """Source-position buckets of the repeated text's first half, (label, lo, hi) over token positions lo..hi-1: the
    report's position edges below half the context, from position 1 (token 0 has no label in either half)."""
    half = context // 2
    bounds = [1, *(e for e in edges if 1 < e < half), half]
    return [(f"{lo}-{hi - 1}", lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def repeated_drop_by_source(nll: np.ndarray, buckets: list[tuple[str, int, int]]) -> np.ndarray:
    """[documents, buckets]: repeated_drop restricted to the tokens at first-half positions lo..hi-1, each against
    its own copy h positions later (the same token, predicted without and then with its earlier occurrence in
    context). Where copying reaches: a copy circuit that works only from early positions shows a drop in the first
    bucket alone. NaN where a document's half ends before the bucket starts."""
    out = np.full((len(nll), len(buckets)), np.nan)
    for i, row in enumerate(np.asarray(nll, dtype=np.float64)):
        h = (int(np.isfinite(row).sum()) + 1) // 2  # 2h - 1 scored labels
        for j, (_, lo, hi) in enumerate(buckets):
            pos = np.arange(lo, min(hi, h))  # label t predicts token t + 1: token p's labels are p - 1 and h + p - 1
            if len(pos):
                out[i, j] = row[pos - 1].mean() - row[h + pos - 1].mean()
    return out


def drop_array(runs: list[list[np.ndarray]]) -> np.ndarray:
    """repeated_drop per (baseline, seed, document)."""
    return np.asarray([[repeated_drop(x) for x in per_seed] for per_seed in runs])


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
    # What the windows remove (Q1): the copy gain by distance and the repeated-text drop, zero-shot against the
    # baselines (the same weights), fine-tuned against the full control fine-tuned the same way.
    gains_zs = copy_gain_arrays(files.runs("copy_nll@zs"))
    rec["copy_gain_zero_shot"] = {
        str(d): nats(e) for d, e in zip(params.copy.distances, copy_gains(files.runs("copy_nll@zs"), conf))
    }
    rec["copy_gain_zero_shot_vs_baseline"] = _by_distance(
        _paired(gains_zs, copy_gain_arrays(base.runs("copy_nll"))), params, fam, "copy_gain_zero_shot_vs_baseline"
    )
    drop_zs = _paired(drop_array(files.runs("nll_repeated@zs")), drop_array(base.runs("nll_repeated")))
    e = run_estimate(drop_zs, None, conf)
    rec["repeated_drop_zero_shot_vs_baseline"] = fam.add(
        "repeated_drop_zero_shot_vs_baseline", _word(e), e, lower_is_better=False
    )
    if full is not None and not s.is_full:
        control = {d: full.runs(f"nll_{d}") for d in EVAL_DOMAINS}
        rec["domains"] = {}
        gaps = {}
        for d in EVAL_DOMAINS:
            gaps[d] = gap_array(tuned[d], control[d])
            e = run_estimate(*gaps[d], conf)
            rec["domains"][d] = {"vs_full": fam.add(f"vs_full/{d}", pct_gap(e), e)}
        rec["gaps"]["vs_full"] = rec["domains"]["test"]["vs_full"]
        # Q4: does a domain lose more than test under the windows? Its gap minus test's (different documents).
        rec["domain_contrasts"] = {}
        for d in EVAL_DOMAINS:
            if d != "test":
                e = contrast_estimate(gaps[d], gaps["test"], conf)
                rec["domain_contrasts"][f"{d}-test"] = fam.add("domain_contrasts", pct_points(e), e)
        rec["by_position"] = {}
        for label, cols in bucket_labels(params.report.position_buckets, ctx):
            e = compare(_columns(tuned["test"], cols), _columns(control["test"], cols), conf)
            rec["by_position"][label] = fam.add("vs_full/by_position", pct_gap(e), e)
        gains = copy_gain_arrays(files.runs("copy_nll"))
        rec["copy_gain"] = {
            str(d): nats(e) for d, e in zip(params.copy.distances, copy_gains(files.runs("copy_nll"), conf))
        }
        rec["copy_gain_vs_full"] = _by_distance(
            _paired(gains, copy_gain_arrays(full.runs("copy_nll"))), params, fam, "copy_gain_vs_full"
        )
        drop = _paired(drop_array(tuned["repeated"]), drop_array(control["repeated"]))
        e = run_estimate(drop, None, conf)
        rec["repeated_drop_vs_full"] = fam.add("repeated_drop_vs_full", _word(e), e, lower_is_better=False)
    elif s.is_full:
        rec["copy_gain"] = {
            str(d): nats(e) for d, e in zip(params.copy.distances, copy_gains(files.runs("copy_nll"), conf))
        }
        rec["repeated_drop"] = nats(run_estimate(drop_array(tuned["repeated"]), None, conf))
    rec["generation"] = generation(files, conf)
    rec["flops_ceiling_at_context"] = round(
        flops_ceiling(s.windows, ctx, params.model.n_embd, files.metrics.get("vocab_size", 4096), s.sinks), 4
    )
    return rec


def _word(est: Estimate, digits: int = 4) -> dict[str, Any]:
    """A nats record in the contract's form: estimate and interval (the verdict is added by Families.resolve)."""
    rec = nats(est, digits)
    return {"estimate": rec.pop("value"), **rec}


def _by_distance(gains: np.ndarray, params: Params, fam: Families, family: str) -> dict[str, Any]:
    """{distance: estimate, ci95, verdict, ...} of a copy-gain difference [B, S, distance, sequence]; one Holm family
    across schedules and distances (lower gain = worse: "worse" means the windows removed copying)."""
    out = {}
    for i, d in enumerate(params.copy.distances):
        e = run_estimate(gains[:, :, i, :], None, params.report.confidence)
        out[str(d)] = fam.add(family, _word(e), e, lower_is_better=False)
    return out


def pct_points(est: Estimate) -> dict[str, Any]:
    """A difference of two perplexity gaps, in percentage points of exp(NLL gap) - 1 (first order: 100 · nats)."""
    e = est.map(lambda x: 100.0 * x)
    return {
        "pct_points": round(e.value, 3),
        "pct_points_ci95": None if e.lo is None else [round(e.lo, 3), round(e.hi, 3)],
        "pct_points_baselines": [round(x, 3) for x in e.per_run],
        **_design(e, e.mde80, 3),
    }


def generation(files: ModelFiles, confidence: float) -> dict[str, Any]:
    """BLEU per prompt over baselines, seeds and prompts, beside the null: the BLEU of an unrelated passage against
    the same references (lmask.generation). ``beats_null`` only where the paired difference's interval is above 0;
    no other word is drawn from generation. Distinct-2 and the share of looping samples."""
    first = files.runs("gen_bleu")[0][0]
    if not len(first):
        return {"prompts": 0}
    out: dict[str, Any] = {"prompts": len(first)}
    bleu = np.asarray(files.runs("gen_bleu"), dtype=np.float64)  # [B, S, prompts]
    null = np.asarray(files.runs("gen_bleu_null"), dtype=np.float64)
    out["bleu"] = nats(run_estimate(bleu, None, confidence), 2)
    out["bleu_null"] = nats(run_estimate(null, None, confidence), 2)
    above = run_estimate(bleu - null, None, confidence)
    out["bleu_above_null"] = nats(above, 2)
    out["beats_null"] = above.lo is not None and above.lo > 0
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
    # The Q1 gate: a gain above report.copy_min_gain nats, one-sided, Holm-corrected across distances.
    gains = copy_gains(base.runs("copy_nll"), conf, params.report.copy_min_gain)
    rec["copy_loss_drop"] = {}
    for d, e in zip(params.copy.distances, gains, strict=True):
        rec["copy_loss_drop"][str(d)] = fam.add("copy_gate", {**nats(e), "sequences": e.units}, e, False)
    # The positive control: the repeated half of each test document is easier than its first half.
    drop = run_estimate(drop_array(base.runs("nll_repeated")), None, conf)
    rec["copy"] = {"repeated_drop": nats(drop), "repeated_drop_by_source": {}}
    buckets = source_buckets(params.report.position_buckets, params.context)
    by_source = np.asarray([[repeated_drop_by_source(x, buckets) for x in s] for s in base.runs("nll_repeated")])
    for j, (label, _, _) in enumerate(buckets):
        docs = np.isfinite(by_source[0, 0, :, j])  # the same documents in every run: those whose half reaches here
        e = run_estimate(by_source[:, :, docs, j], None, conf)
        rec["copy"]["repeated_drop_by_source"][label] = {**nats(e), "documents": int(docs.sum())}
    rec["generation"] = generation(base, conf)
    rec["attention_pairs"] = 1.0
    rec["receptive_field"] = params.context
    return rec


def copy_range(record: dict[str, Any]) -> int | None:
    """The longest probe distance at which the baselines' copy gain passes the gate (above report.copy_min_gain,
    Holm)."""
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
    copy = out[BASELINE]["copy"]
    drop = copy["repeated_drop"]
    copy["repeated_drop_nats"] = [drop["value"], *(drop["ci95"] or [None, None])]
    copy["gate_passed_at"] = [int(d) for d, e in out[BASELINE]["copy_loss_drop"].items() if e["verdict"] == "better"]
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


def run_tokens_of(params: Params) -> int:
    """Tokens a baseline trains on: the copy warm-up's short rows, then natural-text blocks (lmask.train.run_tokens,
    without importing torch)."""
    t, m = params.train, params.mix
    per_step = t.batch_size * params.context + m.copy_rows * m.copy_context
    return t.copy_warmup.tokens() + (t.steps - t.copy_warmup.steps) * per_step


def random_id_tokens_of(params: Params) -> float:
    """Of run_tokens_of, the tokens of distinct random ids (only copying predicts them): the copy warm-up, the short
    copy rows beside every natural step, and with ``mix.kind: random`` the expected share of periodic long rows."""
    t, m = params.train, params.mix
    later = t.steps - t.copy_warmup.steps
    long_rows = later * t.batch_size * params.context * m.fraction if m.kind == "random" else 0.0
    return t.copy_warmup.tokens() + later * m.copy_rows * m.copy_context + long_rows


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
        "min_gain": params.report.copy_min_gain,
        "copy_warmup_tokens": params.train.copy_warmup.tokens(),
        "train_tokens": run_tokens_of(params),
        "mix_kind": params.mix.kind,
        "copy_rows": params.mix.copy_rows,
        "copy_context": params.mix.copy_context,
        "random_id_tokens": round(random_id_tokens_of(params)),
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
