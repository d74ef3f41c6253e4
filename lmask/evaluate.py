"""Evaluation of the baseline and every schedule.

Perplexity (fine-tuned and zero-shot retrofit), loss by position, the long-range induction probe (lmask.probe),
generation with BLEU / distinct-n (lmask.generation), attention entropy and distance per layer and head
(lmask.analysis), and efficiency at the eval context (the benchmark team's lmask.benchmark / lmask.flops).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from lmask.analysis import AnalysisParams, analyse, analysis_params
from lmask.data import load_blocks, write_json
from lmask.generation import GenerationParams, generation_params, generation_report, prompts_from_blocks
from lmask.model import apply_windows, load_model
from lmask.probe import ProbeParams, model_logits_fn, probe_params, run_probe, token_pool
from lmask.schedule import layer_windows, pair_fraction, receptive_field, schedule_sinks
from lmask.train import autocast, pick_device


@dataclass
class EvalSections:
    """This stage's own params.yaml sections, validated before any model is loaded."""

    probe: ProbeParams
    generation: GenerationParams
    analysis: AnalysisParams


def eval_sections(params) -> EvalSections:
    context, extra = params.data.context_length, params.extra
    return EvalSections(
        probe=probe_params(extra.get("probe"), context),
        generation=generation_params(extra.get("generation"), context),
        analysis=analysis_params(extra.get("analysis"), params.model.n_layer),
    )


@torch.no_grad()
def position_losses(
    model: torch.nn.Module, blocks: np.ndarray, batch_size: int, device: torch.device, max_batches: int | None = None
) -> np.ndarray:
    """Mean next-token loss at each target position 1..T-1 over the first blocks: shape [T-1]."""
    model.eval()
    n = len(blocks) if max_batches is None else min(len(blocks), max_batches * batch_size)
    sums = torch.zeros(blocks.shape[1] - 1, dtype=torch.float64)
    for start in range(0, n, batch_size):
        x = torch.from_numpy(blocks[start : min(n, start + batch_size)]).to(device)
        with autocast(device):
            logits = model(x).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
        sums += loss.sum(0).double().cpu()
    return (sums / n).numpy()


def perplexity(per_position: np.ndarray) -> float:
    return float(math.exp(per_position.mean()))


def pct_change(value: float, reference: float) -> float:
    return round(100.0 * (value - reference) / reference, 2)


def evaluate(
    params,
    out_metrics: Path = Path("metrics/eval.json"),
    out_positions: Path = Path("plots/eval/loss_by_position.csv"),
    out_curves: Path = Path("plots/eval/train_curves.csv"),
) -> dict:
    """Evaluate models/baseline and models/masked/<name> for the schedules listed in params.yaml now."""
    sections = eval_sections(params)  # fail on a typo before loading anything
    cfg = params.evaluate
    device = pick_device(params.train.device)
    test = load_blocks(Path("data/tokenized"), "test")
    val = load_blocks(Path("data/tokenized"), "validation")
    stats = json.loads(Path("data/tokenized/stats.json").read_text())
    context = test.shape[1]
    n_layer = params.model.n_layer

    def score(model) -> tuple[np.ndarray, float]:
        model.to(device)
        pos = position_losses(model, test, cfg.batch_size, device, cfg.max_batches)
        val_pos = position_losses(model, val, cfg.batch_size, device, cfg.max_batches)
        return pos, perplexity(val_pos)

    results: dict[str, dict] = {}
    curves: dict[str, np.ndarray] = {}
    baseline = load_model("models/baseline")
    curves["baseline"], val_ppl = score(baseline)
    results["baseline"] = {
        "test_ppl": round(perplexity(curves["baseline"]), 3),
        "val_ppl": round(val_ppl, 3),
        "test_tokens": int(min(len(test), (cfg.max_batches or len(test)) * cfg.batch_size) * (context - 1)),
        "test_unigram_ppl": round(stats["test_unigram_ppl"], 3),
        "attention_pairs": 1.0,
        "receptive_field": context,
    }
    extras = ExtraEvaluation(params, sections, test, device)
    extras.add("baseline", baseline, [None] * n_layer, 0)
    for name, spec in tqdm(params.schedules.items(), desc="evaluate", unit="model"):
        windows = layer_windows(spec, n_layer, f"schedules.{name}")
        sinks = schedule_sinks(spec, f"schedules.{name}")
        path = Path("models/masked") / name
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro train_masked@{name}` first")
        model = load_model(path)
        curves[name], val_ppl = score(model)
        extras.add(name, model, windows, sinks)
        zero_shot = apply_windows(load_model("models/baseline"), windows, sinks, params.attention.backend)
        zs_pos = position_losses(zero_shot.to(device), test, cfg.batch_size, device, cfg.max_batches)
        results[name] = {
            "test_ppl": round(perplexity(curves[name]), 3),
            "val_ppl": round(val_ppl, 3),
            "zero_shot_test_ppl": round(perplexity(zs_pos), 3),
            "attention_pairs": round(pair_fraction(windows, context, sinks), 4),
            "receptive_field": receptive_field(windows, context),
        }
    base = results["baseline"]["test_ppl"]
    control = results.get("full", {}).get("test_ppl")
    for name, row in results.items():
        if name == "baseline":
            continue
        row["test_ppl_change_vs_baseline_pct"] = pct_change(row["test_ppl"], base)
        row["zero_shot_change_vs_baseline_pct"] = pct_change(row["zero_shot_test_ppl"], base)
        if control is not None:
            row["test_ppl_change_vs_full_pct"] = pct_change(row["test_ppl"], control)

    extras.time_models()  # after every model is scored: one interleaved timing run for all schedules
    for name, row in results.items():
        row.update(extras.metrics[name])
    write_json(out_metrics, results)
    extras.write(out_positions.parent)
    print("evaluate extras, seconds:", {k: round(v, 1) for k, v in extras.seconds.items()})
    _write_long_csv(
        out_positions,
        [
            pd.DataFrame({"position": np.arange(1, len(c) + 1), "model": name, "loss": np.round(c, 5)})
            for name, c in curves.items()
        ],
    )
    _write_long_csv(out_curves, training_curves(list(results)))
    return results


def training_curves(models: list[str]) -> list:
    """Training CSVs of the listed models; masked runs continue the baseline's step axis (they start from it)."""
    baseline = pd.read_csv("plots/train/baseline.csv")
    frames = [baseline.assign(model="baseline")]
    for name in models:
        if name != "baseline":
            curve = pd.read_csv(Path("plots/train") / f"{name}.csv")
            frames.append(curve.assign(model=name, step=curve["step"] + int(baseline["step"].max())))
    return frames


def _write_long_csv(path: Path, frames: list) -> None:
    """Long format (x, model, value): one chart with a line per model, whatever the schedules."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pd.concat(frames).to_csv(tmp, index=False)
    tmp.replace(path)


class ExtraEvaluation:
    """Probe, generation, attention analysis and efficiency for each model, collected for metrics and plots."""

    def __init__(self, params, sections: EvalSections, test: np.ndarray, device: torch.device) -> None:
        self.params, self.sections, self.device = params, sections, device
        self.context = test.shape[1]
        self.tokenizer = AutoTokenizer.from_pretrained("models/baseline")
        self.pool = token_pool(len(self.tokenizer), list(self.tokenizer.all_special_ids))
        self.prompts, self.references = prompts_from_blocks(test, sections.generation)
        self.batch = test[: sections.analysis.batch_size]
        self.metrics: dict[str, dict] = {}
        self.probe_rows: list[dict] = []
        self.attention_rows: list[dict] = []
        self.heatmaps: dict[str, dict] = {}
        self.texts: dict[str, dict] = {}
        self.efficiency_rows: list[dict] = []
        self.windows: dict[str, tuple[list[int | None], int]] = {}
        self.config = None  # the evaluated models' GPT2Config (sizes for the timing run)
        self.seconds: dict[str, float] = {"probe": 0.0, "generation": 0.0, "analysis": 0.0, "timing": 0.0}

    def add(self, name: str, model: torch.nn.Module, windows: list[int | None], sinks: int) -> None:
        model.to(self.device)
        seed, rf = self.params.seed, receptive_field(windows, self.context)
        t0 = time.perf_counter()
        probe = run_probe(model_logits_fn(model, self.device), self.sections.probe, self.pool, seed, rf)
        self.probe_rows += [
            {"distance": int(d), "model": name, "accuracy": acc, "chance": probe["chance"]}
            for d, acc in probe["accuracy_by_distance"].items()
        ]
        t1 = time.perf_counter()
        gen_metrics, self.texts[name] = generation_report(
            model, self.tokenizer, self.prompts, self.references, self.sections.generation, seed
        )
        t2 = time.perf_counter()
        rows, self.heatmaps[name] = analyse(model, self.batch, self.sections.analysis)
        self.attention_rows += [{"model": name, **r} for r in rows]
        for part, seconds in zip(("probe", "generation", "analysis"), (t1 - t0, t2 - t1, time.perf_counter() - t2)):
            self.seconds[part] += seconds
        self.windows[name], self.config = (windows, sinks), model.config
        self.metrics[name] = {
            "probe": {k: v for k, v in probe.items() if k != "receptive_field"},
            "generation": gen_metrics,
            "attention": {
                "entropy_mean": round(float(np.mean([r["entropy"] for r in rows])), 4),
                "mean_distance": round(float(np.mean([r["mean_distance"] for r in rows])), 3),
                "sink_mass": round(float(np.mean([r["sink_mass"] for r in rows])), 4),
            },
        }

    def time_models(self) -> None:
        t0 = time.perf_counter()
        timing = efficiency_metrics(self.windows, self.context, self.config, self.sections.analysis, self.device)
        self.seconds["timing"] = time.perf_counter() - t0
        for name, row in timing.items():
            self.metrics[name]["efficiency"] = row
            self.efficiency_rows.append({"model": name, **row})

    def write(self, folder: Path) -> None:
        """CSV plots (long format, a `model` column) and JSON for the report (texts, heatmaps)."""
        _write_long_csv(folder / "probe_accuracy.csv", [pd.DataFrame(self.probe_rows)])
        heads = pd.DataFrame(self.attention_rows).round(5)
        _write_long_csv(folder / "attention_heads.csv", [heads])
        by_layer = heads.groupby(["model", "layer"], sort=False)[["entropy", "mean_distance", "sink_mass"]].mean()
        _write_long_csv(folder / "attention_by_layer.csv", [by_layer.round(5).reset_index()])
        _write_long_csv(folder / "efficiency.csv", [pd.DataFrame(self.efficiency_rows or [{"model": None}])])
        prompts = [self.tokenizer.decode(p) for p in self.prompts]
        references = [self.tokenizer.decode(r) for r in self.references]
        write_json(folder / "generations.json", {"prompts": prompts, "references": references, "models": self.texts})
        write_json(folder / "attention_heatmaps.json", self.heatmaps)


def efficiency_metrics(
    models: dict[str, tuple[list[int | None], int]], context: int, config, cfg: AnalysisParams, device: torch.device
) -> dict[str, dict]:
    """Throughput, latency, peak memory, FLOPs and KV-cache bytes of each model's windows at the eval context.

    The one place that calls the benchmark code (lmask.benchmark.bench_model: interleaved rounds of full
    attention and every schedule on one random-weight model of the evaluated size; lmask.flops for FLOPs), so
    timing code exists once. Models with full attention everywhere share the full-attention measurement.
    """
    from lmask.benchmark import BenchmarkParams, bench_model
    from lmask.flops import forward_flops_per_token

    bench = BenchmarkParams(
        seq_lens=[context],
        fwd_bwd_seq_lens=[],
        n_layer=config.n_layer,
        n_embd=config.n_embd,
        n_head=config.n_head,
        vocab_size=config.vocab_size,
        batch_size=cfg.timing_batch_size,
        warmup=1,
        repeats=cfg.timing_repeats,
        device=device.type,
    )
    # Prefixed keys: bench_model names its own reference run "full", which a schedule may also be called.
    windowed = {f"s:{n}": w for n, w in models.items() if any(x is not None for x in w[0])}
    with tqdm(total=1 + cfg.timing_repeats * (len(windowed) + 2), desc="timing", unit="call") as progress:
        records = {r["schedule"]: r for r in bench_model(bench, windowed, [context], device, progress)}
    full_flops = forward_flops_per_token([None] * config.n_layer, context, config.n_embd, config.vocab_size)
    out = {}
    for name, (windows, sinks) in models.items():
        r = records.get(f"s:{name}", records["full"])
        flops = forward_flops_per_token(windows, context, config.n_embd, config.vocab_size, sinks)
        out[name] = {
            "speedup": round(r["speedup"], 4),
            "flops_ceiling": round(full_flops / flops, 4),
            "throughput_tokens_per_s": round(r["tokens_per_s"], 1),
            "latency_ms_per_sequence": round(1000 * r["time_s"] / cfg.timing_batch_size, 3),
            "peak_memory_bytes": r["peak_mem_bytes"],
            "flops_per_token": int(flops),
            "flops_ratio_vs_full": round(flops / full_flops, 4),
            "kv_cache_bytes": int(r["kv_cache_bytes"]),
            "kv_cache_ratio_vs_full": round(r["kv_cache_bytes"] / r["full_kv_cache_bytes"], 4),
        }
    return out
