"""Perplexity of the baseline and every schedule: fine-tuned, zero-shot (retrofit), and loss by position."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lmask.data import load_blocks, write_json
from lmask.model import apply_windows, load_model
from lmask.schedule import layer_windows, pair_fraction, receptive_field, schedule_sinks
from lmask.train import autocast, pick_device


@torch.no_grad()
def position_losses(model: torch.nn.Module, blocks: np.ndarray, batch_size: int, device: torch.device,
                    max_batches: int | None = None) -> np.ndarray:
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


def evaluate(params, out_metrics: Path = Path("metrics/eval.json"),
             out_positions: Path = Path("plots/eval/loss_by_position.csv"),
             out_curves: Path = Path("plots/eval/train_curves.csv")) -> dict:
    """Evaluate models/baseline and models/masked/<name> for the schedules listed in params.yaml now."""
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
    for name, spec in params.schedules.items():
        windows = layer_windows(spec, n_layer, f"schedules.{name}")
        sinks = schedule_sinks(spec, f"schedules.{name}")
        path = Path("models/masked") / name
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro train_masked@{name}` first")
        curves[name], val_ppl = score(load_model(path))
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

    write_json(out_metrics, results)
    _write_long_csv(out_positions, [
        pd.DataFrame({"position": np.arange(1, len(c) + 1), "model": name, "loss": np.round(c, 5)})
        for name, c in curves.items()
    ])
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
