"""The training step's speed at the experiment's own dims, against the host's measured matmul rate.

One process, interleaved rounds (the order reversed every other round, as the schedule benchmark does), so host
noise hits both sides alike:

- ``pipeline``: the step the training stages run (lmask.train.accumulate_gradients on the model lmask builds, clip,
  fused AdamW);
- ``reference``: the step as it was before this benchmark existed (commit 7cd890a): GPT-2's ``gelu_new`` activation
  (seven elementwise kernels), transformers' own loss through ``labels=`` and full attention through causal SDPA
  (transformers' ``sdpa`` attention, which lmask's full layers ran then), same weights, batch and optimizer.

Each side's tokens/s and model FLOP/s, divided by the fp32 matmul rate measured in the same process
(``matmul_gflops``: the best of large square matmuls), give the fraction of the host's peak a step reaches. The two
sides compute nearly the same function (the pipeline's scratch models use the exact GELU, which ``gelu_new``
approximates to ~1e-3); ``max_abs_loss_diff`` says how far their first losses differ.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.activations import ACT2FN

from lmask.determinism import host_cpu
from lmask.device import Distributed, pick_device
from lmask.io import write_json
from lmask.params import TrainParams
from lmask.schedule import attention_pairs
from lmask.train import Batch, accumulate_gradients, make_optimizer

MATMUL_SIZES = (2048, 4096)


def matmul_gflops(device: torch.device, sizes: tuple[int, ...] = MATMUL_SIZES, repeats: int = 3) -> float:
    """The best fp32 GFLOP/s of square matmuls of these sizes: the host's practical peak for dense work."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def train_flops_per_token(n_layer: int, n_embd: int, vocab_size: int, seq_len: int) -> float:
    """fwd + bwd FLOPs per token of a causal GPT-2 step: 3x the forward's matmuls and attention pairs (lmask.flops's
    layout: 24·d² per layer, 4·d per attended pair, 2·d·V for the LM head)."""
    d = n_embd
    forward = n_layer * (24 * d * d + 4 * d * attention_pairs(None, seq_len) / seq_len) + 2 * d * vocab_size
    return 3 * forward


def _reference_step(model, optimizer, x: torch.Tensor, grad_clip: float) -> float:
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _pipeline_step(model, optimizer, rows: np.ndarray, world: Distributed, device, grad_clip: float) -> float:
    batch = Batch(rows, np.zeros(len(rows), dtype=np.int64))
    sums = accumulate_gradients(model, batch, len(rows), world, device)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(sums[0] / sums[1])


def bench_train(model: torch.nn.Module, rows: np.ndarray, grad_clip: float, rounds: int, warmup: int = 1) -> dict:
    """Time ``rounds`` interleaved steps of each side on ``model`` (its copy for the reference); returns the record."""
    device = next(model.parameters()).device
    world = Distributed(device)
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("sdpa")
    reference.config.activation_function = "gelu_new"
    for block in reference.transformer.h:  # transformers builds the activation at init: rebuild it
        block.mlp.act = ACT2FN["gelu_new"]
    cfg = TrainParams()
    opt = {"pipeline": make_optimizer(model, cfg, device), "reference": make_optimizer(reference, cfg, device)}
    x = torch.from_numpy(rows).to(device)
    steps = {
        "pipeline": lambda: _pipeline_step(model, opt["pipeline"], rows, world, device, grad_clip),
        "reference": lambda: _reference_step(reference, opt["reference"], x, grad_clip),
    }
    first = {name: fn() for name, fn in steps.items()}  # also the warm-up: same weights, so comparable losses
    for _ in range(max(0, warmup - 1)):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(steps)[::-1]
        for name in order:
            t0 = time.perf_counter()
            steps[name]()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {"times_s": times, "first_loss": first, "max_abs_loss_diff": abs(first["pipeline"] - first["reference"])}


def run(model: torch.nn.Module, rows: np.ndarray, grad_clip: float, rounds: int, out: Path) -> dict[str, Any]:
    """The benchmark_train stage: both steps, the matmul rate, tokens/s and fractions of it, into ``out``."""
    device = next(model.parameters()).device
    peak = matmul_gflops(device)
    rec = bench_train(model, rows, grad_clip, rounds)
    cfg = model.config
    flops = train_flops_per_token(cfg.n_layer, cfg.n_embd, cfg.vocab_size, rows.shape[1])
    tokens = rows.size
    sides = {}
    for name, t in rec["times_s"].items():
        best, median = min(t), float(np.median(t))
        sides[name] = {
            "step_s_median": round(median, 4),
            "step_s_best": round(best, 4),
            "tokens_per_s": round(tokens / median, 1),
            "gflops": round(flops * tokens / median / 1e9, 2),
            "fraction_of_matmul_peak": round(flops * tokens / median / 1e9 / peak, 3),
        }
    ratios = [r / p for p, r in zip(rec["times_s"]["pipeline"], rec["times_s"]["reference"], strict=True)]
    result = {
        "summary": {
            "pipeline_tokens_per_s": sides["pipeline"]["tokens_per_s"],
            "reference_tokens_per_s": sides["reference"]["tokens_per_s"],
            "speedup_vs_reference": round(float(np.median(ratios)), 3),
            "fraction_of_matmul_peak": sides["pipeline"]["fraction_of_matmul_peak"],
            "matmul_gflops": round(peak, 1),
        },
        "run": {
            "dims": {
                "n_layer": cfg.n_layer,
                "n_embd": cfg.n_embd,
                "n_head": cfg.n_head,
                "vocab_size": cfg.vocab_size,
                "batch": rows.shape[0],
                "seq_len": rows.shape[1],
            },
            "train_gflop_per_token": round(flops / 1e9, 5),
            "rounds": len(ratios),
            "round_speedups": [round(r, 3) for r in ratios],
            "max_abs_loss_diff": rec["max_abs_loss_diff"],
            "threads": torch.get_num_threads(),
            "host": host_cpu(),
            "device": device.type,
        },
        "records": [{"side": name, **v} for name, v in sides.items()],
    }
    write_json(out, result, indent=1)
    return result


def run_stage(params, out: Path) -> dict[str, Any]:
    """The experiment's model (params.model, random init) at its context and batch."""
    from lmask.model import new_model, scratch_config

    m = params.model
    vocab = params.tokenizer.vocab_size if params.tokenizer.kind == "bpe" else 50257
    config = scratch_config(vocab, m.n_layer, m.n_embd, m.n_head, m.n_positions, 0.0, 0, 0, m.initializer_range)
    device = pick_device(params.benchmark.device)
    model = new_model(config, params.seed, m.position_init).to(device).train()
    rng = np.random.default_rng(params.seed)
    rows = rng.integers(1, vocab, size=(params.train.micro_batch_size, params.context))
    return run(model, rows, params.train.grad_clip, params.benchmark.train_rounds, out)


__all__ = ["bench_train", "matmul_gflops", "run", "run_stage", "train_flops_per_token"]
