"""Attention analysis: per-layer, per-head entropy, mean attention distance and sink mass, plus heatmaps.

The fast paths never materialise attention weights, so this analysis swaps in an explicit path for one forward on a
fixed test batch: softmax(Q K^T * scale) under the same ``lmask.dense.window_mask`` (window and sinks from the
model config), then weights @ V. Its output equals the fast path's to rounding, so what we measure is the model
the other metrics score.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from lmask.dense import window_mask
from lmask.model import ATTN_NAME
from lmask.params import AnalysisParams
from lmask.schedule import config_windows

EXPLICIT_NAME = "lmask_explicit"
SINK_POSITIONS = 4  # attention mass on the first 4 tokens: StreamingLLM's "attention sink" measure
HEATMAP_MAX = 256  # largest heatmap side kept per layer


def explicit_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """AttentionInterface entry that materialises the weights (analysis only).

    Per-head statistics and the head-averaged top-left corner of the first sequence's weights are kept on the
    module, not the full [B, H, T, T] weights (gigabytes at GPT-2 scale across 12 layers).
    """
    windows, sinks = config_windows(module.config)
    mask = window_mask(query.shape[-2], key.shape[-2], windows[module.layer_idx], sinks, query.device)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = (query @ key.transpose(-1, -2)).float() * scale
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    module.lmask_stats = weight_stats(weights)
    module.lmask_corner = weights[0, :, :HEATMAP_MAX, :HEATMAP_MAX].mean(0).cpu()
    return (weights.to(value.dtype) @ value).transpose(1, 2), None


AttentionInterface.register(EXPLICIT_NAME, explicit_attention)
AttentionMaskInterface.register(EXPLICIT_NAME, sdpa_mask)


@contextlib.contextmanager
def explicit_weights(model: torch.nn.Module):
    """Run the model with the explicit attention path inside the block, restoring lmask attention after."""
    model.set_attn_implementation(EXPLICIT_NAME)
    try:
        yield model
    finally:
        for block in model.transformer.h:
            block.attn.__dict__.pop("lmask_stats", None)
            block.attn.__dict__.pop("lmask_corner", None)
        model.set_attn_implementation(ATTN_NAME)


def weight_stats(weights: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-head means over batch and queries of one layer's weights [B, H, T, T]: entropy, distance, sink mass."""
    t, dev = weights.shape[-1], weights.device
    w = weights.float()
    entropy = -(w * torch.log(w.clamp_min(1e-30))).sum(-1)  # [B, H, T]; 0 * log 0 counts as 0
    distance = (torch.arange(t, device=dev)[:, None] - torch.arange(t, device=dev)[None, :]).clamp_min(0)
    mean_distance = (w * distance.float()).sum(-1)  # query - key, weighted
    sink_mass = w[..., : min(SINK_POSITIONS, t)].sum(-1)
    return {
        "entropy": entropy.double().mean((0, 2)).cpu().numpy(),
        "mean_distance": mean_distance.double().mean((0, 2)).cpu().numpy(),
        "sink_mass": sink_mass.double().mean((0, 2)).cpu().numpy(),
    }


@torch.no_grad()
def analyse(model: torch.nn.Module, batch: np.ndarray, cfg: AnalysisParams) -> tuple[list[dict], dict]:
    """(rows of per-layer/head stats, {layer: heatmap [N, N] averaged over heads}) for one model."""
    model.eval()
    device = next(model.parameters()).device
    n_layer = model.config.n_layer
    rows: list[dict] = []
    heatmaps: dict[str, list] = {}
    with explicit_weights(model):
        model(torch.from_numpy(batch).to(device))
        for layer, block in enumerate(model.transformer.h):
            stats = block.attn.lmask_stats
            for head in range(len(stats["entropy"])):
                rows.append({"layer": layer, "head": head, **{k: float(v[head]) for k, v in stats.items()}})
            if layer in cfg.layers(n_layer):
                n = min(cfg.heatmap_tokens, HEATMAP_MAX)
                heatmaps[str(layer)] = block.attn.lmask_corner[:n, :n].numpy().round(4).tolist()
    return rows, heatmaps


__all__ = ["analyse", "explicit_weights", "weight_stats"]
