"""Evaluate one model (the baseline) or one schedule (zero-shot and every fine-tuning seed).

For every evaluated variant this keeps the raw material the report's intervals are computed from, in
``<out_dir>/<variant>.npz``:

- ``nll_<domain>``: per-token NLL [blocks, T-1] (float32) on each held-out domain: ``test`` (Wikipedia articles
  held out by title, in-domain), ``code`` (the .py files of a pinned package: never seen in training) and
  ``repeated`` (test blocks whose second half repeats the first: copying from T/2 back pays off); zero-shot
  variants are scored on ``test`` only;
- ``copy_nll``: [distances, sequences, 2] mean NLL of a random span's second occurrence with the same span (0) or a
  different one (1) at distance d before it (lmask.synthetic);
- ``gen_bleu`` / ``gen_distinct2``: per-prompt sentence BLEU and distinct-2 of greedy generations.

and writes point estimates to the metrics JSON (``dvc metrics`` shows them). No timings: the benchmark stage owns
speed, so ``dvc metrics diff`` shows only quality changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lmask.analysis import analyse
from lmask.data import DOMAINS, load_blocks, unigram_perplexity
from lmask.device import autocast, pick_device
from lmask.generation import generation_report, prompts_from_blocks
from lmask.io import DataError, atomic_dir, write_json
from lmask.params import Params
from lmask.synthetic import CopyPairs, copy_pairs, repeated_text_blocks, token_pool

ALL_DOMAINS = (*DOMAINS, "repeated")


@torch.no_grad()
def token_nll(model: torch.nn.Module, blocks: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Per-token next-token NLL [n, T-1] (float32), the loss transformers' ``labels=`` averages."""
    model.eval()
    out = np.empty((len(blocks), blocks.shape[1] - 1), dtype=np.float32)
    for start in range(0, len(blocks), batch_size):
        x = torch.from_numpy(blocks[start : start + batch_size]).to(device)
        with autocast(device):
            logits = model(x).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
        out[start : start + len(x)] = nll.cpu().numpy()
    return out


def copy_nll(model: torch.nn.Module, pairs: list[CopyPairs], batch_size: int, device: torch.device) -> np.ndarray:
    """[distances, sequences, 2]: mean NLL over the scored span tokens, for the same (0) and control (1) sequences."""
    out = np.empty((len(pairs), len(pairs[0].same), 2), dtype=np.float64)
    for i, p in enumerate(pairs):
        for j, seqs in enumerate((p.same, p.control)):
            nll = token_nll(model, seqs, batch_size, device)  # label of NLL column c is token c + 1
            out[i, :, j] = nll[:, p.scored.start - 1 : p.scored.stop - 1].mean(1)
    return out


@dataclass
class EvalData:
    """Everything a model is scored on, built once per stage from data/tokenized."""

    domains: dict[str, np.ndarray]
    pairs: list[CopyPairs]
    prompts: np.ndarray
    references: np.ndarray
    prompt_blocks: np.ndarray  # test block of each prompt


def eval_data(params: Params, data_dir: Path, vocab_size: int, special_ids: list[int]) -> EvalData:
    cfg = params.evaluate
    domains = {"test": load_blocks(data_dir, "test")[: cfg.max_blocks]}
    domains["code"] = load_blocks(data_dir, "code")[: cfg.max_domain_blocks]
    domains["repeated"] = repeated_text_blocks(domains["test"][: cfg.max_domain_blocks])
    pool = token_pool(vocab_size, special_ids)
    pairs = copy_pairs(domains["test"], params.copy, pool, params.seed)
    prompts, references, prompt_blocks = prompts_from_blocks(domains["test"], params.generation)
    return EvalData(domains, pairs, prompts, references, prompt_blocks)


def evaluate_variant(
    model, data: EvalData, params: Params, tokenizer, device: torch.device, full: bool = True
) -> tuple[dict, dict]:
    """(arrays for the .npz, metrics + texts) for one model. ``full=False`` (zero-shot variants) scores the test text
    and the copy probe only: generation, attention and the other domains are compared between fine-tuned models."""
    model.to(device)
    bs = params.evaluate.batch_size
    domains = data.domains if full else {"test": data.domains["test"]}
    arrays = {f"nll_{d}": token_nll(model, blocks, bs, device) for d, blocks in domains.items()}
    arrays["copy_nll"] = copy_nll(model, data.pairs, bs, device)
    gain = arrays["copy_nll"][:, :, 1] - arrays["copy_nll"][:, :, 0]
    metrics = {
        **{f"{d}_ppl": round(math.exp(float(arrays[f"nll_{d}"].mean())), 3) for d in domains},
        "copy_gain": {str(pr.distance): round(float(g.mean()), 4) for pr, g in zip(data.pairs, gain, strict=True)},
    }
    if not full:
        return arrays, {"metrics": metrics}
    gen, texts = generation_report(model, tokenizer, data.prompts, data.references, params.generation, params.seed)
    arrays["gen_bleu"], arrays["gen_distinct2"] = gen.pop("per_prompt_bleu"), gen.pop("per_prompt_distinct2")
    rows, heatmaps = analyse(model, data.domains["test"][: params.analysis.batch_size], params.analysis)
    # Loss of the true continuation after each prompt: the test NLL at those positions (prompts are block starts).
    p, n = params.generation.prompt_tokens, params.generation.new_tokens
    gen["continuation_nll"] = round(float(arrays["nll_test"][data.prompt_blocks, p - 1 : p - 1 + n].mean()), 4)
    metrics["generation"] = gen
    metrics["attention"] = {
        k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("entropy", "mean_distance", "sink_mass")
    }
    return arrays, {"metrics": metrics, "texts": texts, "attention_rows": rows, "heatmaps": heatmaps}


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


def evaluate_baseline(params: Params, data_dir: Path, baseline_dir: Path, out_metrics: Path, out_dir: Path) -> dict:
    """Score the full-attention baseline; also records the unigram floor it must beat, on the same scored tokens."""
    from transformers import AutoTokenizer

    device = pick_device(params.train.device)
    tokenizer = AutoTokenizer.from_pretrained(str(baseline_dir))
    data = eval_data(params, data_dir, len(tokenizer), tokenizer.all_special_ids)
    # The tokens test_ppl averages over: every scored block's labels (positions 1..T-1), not the whole split.
    unigram = unigram_perplexity(load_blocks(data_dir, "train"), data.domains["test"][:, 1:], len(tokenizer))
    results = {"model": evaluate_variant(_load(baseline_dir), data, params, tokenizer, device)}
    header = {"test_unigram_ppl": round(unigram, 3), "vocab_size": len(tokenizer)}
    return _write(out_dir, out_metrics, results, header)


def evaluate_schedule(
    params: Params,
    schedule: str,
    data_dir: Path,
    baseline_dir: Path,
    model_dirs: dict[int, Path],
    out_metrics: Path,
    out_dir: Path,
) -> dict:
    """Score one schedule: applied to the baseline with no training (``zero_shot``) and each fine-tuned seed."""
    from transformers import AutoTokenizer

    from lmask.model import apply_windows

    sched = params.schedule(schedule)
    device = pick_device(params.train.device)
    tokenizer = AutoTokenizer.from_pretrained(str(baseline_dir))
    data = eval_data(params, data_dir, len(tokenizer), tokenizer.all_special_ids)
    variants = {"zero_shot": lambda: apply_windows(_load(baseline_dir), sched.windows, sched.sinks)}
    for seed, path in model_dirs.items():
        variants[f"s{seed}"] = lambda path=path: _load(path)
    results = {}
    for name, make in tqdm(variants.items(), desc=f"evaluate {schedule}", unit="model"):
        results[name] = evaluate_variant(make(), data, params, tokenizer, device, full=name != "zero_shot")
    header = {"windows": sched.windows, "sinks": sched.sinks, "seeds": sorted(model_dirs), "vocab_size": len(tokenizer)}
    return _write(out_dir, out_metrics, results, header)


__all__ = ["ALL_DOMAINS", "EvalData", "copy_nll", "eval_data", "evaluate_baseline", "evaluate_schedule", "token_nll"]
