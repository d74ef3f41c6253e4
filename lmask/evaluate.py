"""Evaluate the baselines, or one schedule (zero-shot from every baseline and every fine-tuned run).

Variants are named by the runs they come from: ``b<k>`` (baseline k), ``b<k>-zs`` (baseline k under the schedule's
windows, no training) and ``b<k>-s<s>`` (fine-tuned from baseline k with fine-tuning seed s). For each, the raw
material of the report's intervals goes to ``<out_dir>/<variant>.npz``:

- ``nll_<domain>``: per-token NLL [documents, T-1] (float32, NaN past the document's end) on each held-out domain:
  ``test`` (Wikipedia articles held out by title), ``code`` (source files of a pinned package, never trained on) and
  ``repeated`` (each test document's first half, then the same text again: copying pays off). One row per
  document: documents are the units of every interval;
- ``copy_nll``: [distances, sequences, 2] mean NLL of a natural span's second occurrence with the same span (0) or
  a different natural span (1) d tokens before it (lmask.synthetic);
- ``gen_bleu`` / ``gen_bleu_null`` / ``gen_distinct2``: per prompt, of seeded samples continuing long prompts, and
  the BLEU an unrelated passage (another test document's text at the same place) scores against the same reference:
  the null a model must beat (lmask.generation).

What each variant is scored on (``Parts``): every model scores the test and repeated-text domains and the copy probe
(the instruments of Q1, paired across models sequence by sequence); baselines and fine-tuned runs add the code domain;
the baselines and the first fine-tuning seed add generation, one run the attention analysis.

Point estimates go to the metrics JSON (``dvc metrics`` shows them). No timings: the benchmark owns speed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lmask.analysis import analyse
from lmask.data import HELDOUT, load_blocks, load_documents, unigram_perplexity
from lmask.device import autocast, pick_device
from lmask.generation import generation_report, prompts_from_documents
from lmask.io import DataError, atomic_dir, write_json
from lmask.model import next_token_nll
from lmask.params import Params
from lmask.synthetic import CopyPairs, copy_pairs, repeated_text_documents


@torch.no_grad()
def token_nll(
    model: torch.nn.Module, blocks: np.ndarray, lengths: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    """Per-token next-token NLL [n, T-1] (float32), NaN at labels past each row's length.

    Rows are batched with rows of the same length, so no batch holds padding: causal attention would keep trailing
    padding out of a row's scores anyway, but it costs compute, and transformers warns about it."""
    model.eval()
    out = np.full((len(blocks), blocks.shape[1] - 1), np.nan, dtype=np.float32)
    for n in sorted(set(lengths.tolist()), reverse=True):
        rows = np.flatnonzero(lengths == n)
        for start in range(0, len(rows), batch_size):
            idx = rows[start : start + batch_size]
            x = torch.from_numpy(blocks[idx, :n]).to(device)
            with autocast(device):
                logits = model(x).logits.float()
            out[idx, : n - 1] = next_token_nll(logits, x).cpu().numpy()
    return out


@torch.no_grad()
def tail_nll(
    model: torch.nn.Module, seqs: np.ndarray, first_label: int, batch_size: int, device: torch.device
) -> np.ndarray:
    """Mean NLL [n] of each sequence's labels from position ``first_label`` to its end (sequences of equal length).
    The LM head runs only on the positions that predict them (``logits_to_keep``): on the copy probe, most of a
    sequence is context, and the head is a ninth of the forward's FLOPs at the experiment's vocabulary."""
    model.eval()
    keep = seqs.shape[1] - first_label + 1  # positions first_label - 1 .. end; the last one predicts nothing
    out = np.empty(len(seqs), dtype=np.float64)
    for start in range(0, len(seqs), batch_size):
        x = torch.from_numpy(seqs[start : start + batch_size]).to(device)
        with autocast(device):
            logits = model(x, logits_to_keep=keep).logits.float()
        out[start : start + len(x)] = next_token_nll(logits, x[:, -keep:]).mean(1).cpu().numpy()
    return out


def copy_nll(model: torch.nn.Module, pairs: list[CopyPairs], batch_size: int, device: torch.device) -> np.ndarray:
    """[distances, sequences, 2]: mean NLL over the scored span tokens, for the same (0) and control (1) sequences."""
    out = np.empty((len(pairs), len(pairs[0].same), 2), dtype=np.float64)
    for i, p in enumerate(pairs):
        for j, seqs in enumerate((p.same, p.control)):
            out[i, :, j] = tail_nll(model, seqs, p.scored.start, batch_size, device)
    return out


@dataclass
class EvalData:
    """Everything a model is scored on, built once per stage from data/tokenized."""

    domains: dict[str, tuple[np.ndarray, np.ndarray]]  # domain -> (documents [n, T] padded, lengths [n])
    pairs: list[CopyPairs]
    prompts: np.ndarray
    references: np.ndarray
    nulls: np.ndarray  # per prompt, an unrelated passage in the reference's place: BLEU's null


def eval_data(params: Params, data_dir: Path) -> EvalData:
    cap = params.evaluate.max_documents
    domains = {d: tuple(a[:cap] for a in load_documents(data_dir, d)) for d in HELDOUT}
    domains["repeated"] = repeated_text_documents(*domains["test"])
    pairs = copy_pairs(*domains["test"], params.copy, params.seed)
    prompts, references, nulls = prompts_from_documents(*domains["test"], params.generation)
    return EvalData(domains, pairs, prompts, references, nulls)


@dataclass(frozen=True)
class Parts:
    """What a variant is scored on besides the test and repeated-text domains and the copy probe (every model)."""

    code: bool = False  # the out-of-domain code files
    generation: bool = False
    analysis: bool = False  # attention entropy / distance / sink mass and heatmaps
    copy: bool = True

    @property
    def domain_names(self) -> tuple[str, ...]:
        return ("test", "code", "repeated") if self.code else ("test", "repeated")


EVERYTHING = Parts(True, True, True)


def evaluate_variant(
    model, data: EvalData, params: Params, tokenizer, device: torch.device, parts: Parts = EVERYTHING
) -> tuple[dict, dict]:
    """(arrays for the .npz, metrics + texts) for one model: the test domain and the ``parts`` asked for."""
    model.to(device)
    bs = params.evaluate.batch_size
    domains = data.domains
    domains = {d: domains[d] for d in domains if d in parts.domain_names}
    arrays = {f"nll_{d}": token_nll(model, blocks, lengths, bs, device) for d, (blocks, lengths) in domains.items()}
    metrics: dict = {f"{d}_ppl": round(math.exp(float(np.nanmean(arrays[f"nll_{d}"]))), 3) for d in domains}
    if parts.copy:
        arrays["copy_nll"] = copy_nll(model, data.pairs, params.copy.batch_size, device)
        gain = arrays["copy_nll"][:, :, 1] - arrays["copy_nll"][:, :, 0]
        metrics["copy_gain"] = {str(p.distance): round(float(g.mean()), 4) for p, g in zip(data.pairs, gain)}
    extra: dict = {}
    if parts.generation:
        gen, extra["texts"] = generation_report(
            model, tokenizer, data.prompts, data.references, data.nulls, params.generation, params.seed
        )
        arrays["gen_bleu"], arrays["gen_distinct2"] = gen.pop("per_prompt_bleu"), gen.pop("per_prompt_distinct2")
        arrays["gen_bleu_null"] = gen.pop("per_prompt_bleu_null")
        metrics["generation"] = gen
    if parts.analysis:
        rows, extra["heatmaps"] = analyse(model, data.domains["test"][0][: params.analysis.batch_size], params.analysis)
        extra["attention_rows"] = rows
        metrics["attention"] = {
            k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("entropy", "mean_distance", "sink_mass")
        }
    return arrays, {"metrics": metrics, **extra}


def _write(out_dir: Path, out_metrics: Path, results: dict[str, tuple[dict, dict]], header: dict) -> dict:
    """Arrays and texts into ``out_dir`` (one atomic folder), point estimates into ``out_metrics``."""
    with atomic_dir(out_dir) as tmp:
        for variant, (arrays, extra) in results.items():
            np.savez_compressed(tmp / f"{variant}.npz", **arrays)
            write_json(tmp / f"{variant}.json", {k: v for k, v in extra.items() if k != "metrics"}, indent=None)
    metrics = {**header, **{variant: extra["metrics"] for variant, (_, extra) in results.items()}}
    write_json(out_metrics, metrics)
    return metrics


def _load(path: Path):
    from lmask.model import load_model

    if not (path / "model.safetensors").is_file():
        raise DataError(f"{path / 'model.safetensors'}: file not found (run its training stage first)")
    return load_model(path)


def _evaluate(
    params: Params,
    data_dir: Path,
    tokenizer_dir: Path,
    variants: dict[str, tuple[Callable[[], torch.nn.Module], Parts]],
    desc: str,
) -> tuple[dict[str, tuple[dict, dict]], EvalData, object]:
    """Score every variant (name -> (model loader, parts))."""
    from transformers import AutoTokenizer

    device = pick_device(params.train.device)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    data = eval_data(params, data_dir)
    results = {}
    for name, (make, parts) in tqdm(variants.items(), desc=desc, unit="model"):
        results[name] = evaluate_variant(make(), data, params, tokenizer, device, parts)
    return results, data, tokenizer


def evaluate_baselines(
    params: Params, data_dir: Path, model_dirs: dict[int, Path], out_metrics: Path, out_dir: Path
) -> dict:
    """Score every baseline seed; also records the unigram floor they must beat, on the same scored tokens."""
    first_run = min(model_dirs)
    variants = {
        f"b{k}": (lambda p=path: _load(p), EVERYTHING if k == first_run else Parts(code=True, generation=True))
        for k, path in model_dirs.items()
    }
    first = next(iter(model_dirs.values()))
    results, data, tokenizer = _evaluate(params, data_dir, first, variants, "evaluate baselines")
    blocks, lengths = data.domains["test"]
    scored = np.concatenate([row[1:n] for row, n in zip(blocks, lengths, strict=True)])  # labels test_ppl averages
    unigram = unigram_perplexity(load_blocks(data_dir, "train"), scored, len(tokenizer))
    header = {
        "test_unigram_ppl": round(unigram, 3),
        "vocab_size": len(tokenizer),
        "baseline_seeds": sorted(model_dirs),
        "documents": {d: len(lengths) for d, (_, lengths) in data.domains.items()},
        "prompts": len(data.prompts),
    }
    return _write(out_dir, out_metrics, results, header)


def evaluate_schedule(
    params: Params,
    schedule: str,
    data_dir: Path,
    baseline_dirs: dict[int, Path],
    model_dirs: dict[tuple[int, int], Path],
    out_metrics: Path,
    out_dir: Path,
) -> dict:
    """Score one schedule: applied to each baseline with no training (``b<k>-zs``) and each fine-tuned run."""
    from lmask.model import apply_windows

    sched = params.schedule(schedule)
    variants = {}
    for k, path in baseline_dirs.items():
        variants[f"b{k}-zs"] = (lambda p=path: apply_windows(_load(p), sched.windows, sched.sinks), Parts())
    first_seed, first_run = min(s for _, s in model_dirs), min(model_dirs)
    for (k, s), path in model_dirs.items():
        parts = Parts(code=True, generation=s == first_seed, analysis=(k, s) == first_run)
        variants[f"b{k}-s{s}"] = (lambda p=path: _load(p), parts)
    first = next(iter(baseline_dirs.values()))
    results, _, tokenizer = _evaluate(params, data_dir, first, variants, f"evaluate {schedule}")
    header = {
        "windows": sched.windows,
        "sinks": sched.sinks,
        "baseline_seeds": sorted(baseline_dirs),
        "finetune_seeds": sorted({s for _, s in model_dirs}),
        "vocab_size": len(tokenizer),
    }
    return _write(out_dir, out_metrics, results, header)


__all__ = [
    "EVERYTHING",
    "EvalData",
    "Parts",
    "copy_nll",
    "eval_data",
    "evaluate_baselines",
    "evaluate_schedule",
    "tail_nll",
    "token_nll",
]
