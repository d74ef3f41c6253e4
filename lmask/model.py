"""The masked GPT-2: a stock ``transformers`` GPT2LMHeadModel whose attention is registered, not forked.

Per-layer windows live in the model config (``layer_windows``, ``attention_sinks``, ``attention_backend``), so
``save_pretrained`` / ``from_pretrained`` keep them. Importing lmask registers the attention function
``"lmask"`` with AttentionInterface and a mask function with AttentionMaskInterface (without the latter,
``create_causal_mask`` would drop padding masks).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AttentionInterface, GPT2Config, GPT2LMHeadModel
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from lmask.attention import windowed_attention
from lmask.band import band_available
from lmask.param_sections import GPT2_INITIALIZER_RANGE
from lmask.provenance import verify_weights
from lmask.schedule import check_windows, config_windows

ATTN_NAME = "lmask"


def lmask_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """AttentionInterface entry: look up this layer's window in the config and run windowed attention."""
    config = module.config
    windows, sinks = config_windows(config)
    out = windowed_attention(
        query,
        key,
        value,
        window=windows[module.layer_idx],
        sinks=sinks,
        attention_mask=attention_mask,
        scaling=scaling,
        dropout=dropout,
        backend=getattr(config, "attention_backend", "auto"),
    )
    return out, None


AttentionInterface.register(ATTN_NAME, lmask_attention)
AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


def apply_windows(
    model: GPT2LMHeadModel, windows: list[int | None], sinks: int = 0, backend: str | None = None
) -> GPT2LMHeadModel:
    """Mask ``model`` in place with one window per layer (``None`` = full) and return it."""
    n_layer = model.config.n_layer
    if len(windows) != n_layer:
        raise ValueError(f"windows has {len(windows)} entries but the model has n_layer={n_layer}")
    check_windows(windows, "windows", none="None")
    if isinstance(sinks, bool) or not isinstance(sinks, int) or sinks < 0:
        raise ValueError(f"sinks must be an integer >= 0, got {sinks!r}")
    model.config.layer_windows = list(windows)
    model.config.attention_sinks = sinks
    if backend is not None:
        model.config.attention_backend = backend
    elif not hasattr(model.config, "attention_backend"):
        model.config.attention_backend = "auto"
    model.set_attn_implementation(ATTN_NAME)
    if model.device.type == "cpu":  # every layer may take a C++ kernel (full ones the tiled one): build it now, once
        band_available()  # per machine, not inside a timed loop
    return model


def scratch_config(
    vocab_size: int,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_positions: int,
    dropout: float,
    bos_token_id: int,
    eos_token_id: int,
    initializer_range: float = GPT2_INITIALIZER_RANGE,
) -> GPT2Config:
    """A GPT-2 config for training from scratch (token ids passed explicitly: the vocab need not be GPT-2's).
    ``initializer_range``: the std of the initial weights (GPT-2's 0.02)."""
    return GPT2Config(
        initializer_range=initializer_range,
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=eos_token_id,
        # The exact (erf) GELU, which GPT-2's "gelu_new" approximates to within ~1e-3: under the AVX2 pin ATen's erf
        # kernel takes 0.3 + 0.5 ms (forward + backward) on the MLP's [2048, 512] where the fused tanh kernel
        # ("gelu_pytorch_tanh") takes 1.5 + 1.6 and gelu_new's seven elementwise ops more; 6 % of a training step.
        # Scratch models only: pretrained GPT-2 keeps its config's activation.
        activation_function="gelu",
    )


def sinusoidal_positions(n_positions: int, n_embd: int, scale: float = GPT2_INITIALIZER_RANGE * 2**0.5) -> torch.Tensor:
    """The Transformer's sin/cos position table [n_positions, n_embd], times ``scale``: at the default, each entry has
    GPT-2's init RMS (0.02), like the token embeddings it is added to (``new_model`` passes the config's std x √2).

    Used as the *initial* value of GPT-2's learned position embeddings (they train unless model.train_positions is
    false): position i - 1 is a fixed rotation of position i in every frequency pair, so a previous-token head, the
    first half of an induction (copying) circuit, is one linear map away instead of something to learn for every
    position separately. Kept fixed, that map holds at positions training never reached.
    """
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, n_embd, 2, dtype=torch.float64) / n_embd)
    table = torch.zeros(n_positions, n_embd, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: n_embd // 2])
    return (scale * table).float()


def new_model(config: GPT2Config, seed: int, position_init: str = "default") -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 (seeded), with full-attention windows registered.

    ``position_init``: ``default`` keeps GPT-2's random init of the position embeddings, ``sinusoidal`` starts them
    from ``sinusoidal_positions``.
    """
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    if position_init == "sinusoidal":
        with torch.no_grad():
            scale = config.initializer_range * 2**0.5  # the table's RMS equals the token embeddings' init std
            model.transformer.wpe.weight.copy_(sinusoidal_positions(config.n_positions, config.n_embd, scale))
    elif position_init != "default":
        raise ValueError(f"position_init must be 'default' or 'sinusoidal', got {position_init!r}")
    return apply_windows(model, [None] * config.n_layer)


def load_model(path: str | Path, **kwargs) -> GPT2LMHeadModel:
    """Load a model folder saved by lmask (or any GPT-2) with its windows, using the lmask attention. An lmask folder's
    weights must match the hashes recorded when it was written (``lmask.provenance.verify_weights``)."""
    verify_weights(Path(path))
    model = GPT2LMHeadModel.from_pretrained(path, attn_implementation=ATTN_NAME, **kwargs)
    return apply_windows(model, *config_windows(model.config))


class _TokenNLL(torch.autograd.Function):
    """Per-row NLL of ``labels`` under ``logits`` [N, V] (0 where the label is -100), with cross-entropy's backward
    fused: softmax times the row's gradient, minus it at the label, in one pass over the logits. ATen's backward
    zero-fills a [N, V] gradient, scatters into it and runs log-softmax's backward over it: two more passes over
    32 MB at the experiment's batch, 3 % of a training step. The forward's floats are cross-entropy's; the gradient
    equals ATen's up to rounding."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(logits, dim=-1)
        valid = labels != -100
        index = torch.where(valid, labels, 0)[:, None]
        nll = torch.where(valid, -log_probs.gather(1, index).squeeze(1), 0.0)
        ctx.save_for_backward(log_probs, index, valid)
        return nll

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        log_probs, index, valid = ctx.saved_tensors
        weight = torch.where(valid, grad, 0.0)[:, None]
        grad_logits = log_probs.exp().mul_(weight)
        return grad_logits.scatter_add_(1, index, -weight), None


def next_token_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-label NLL [B, T-1] of ``x[:, 1:]`` under ``logits`` [B, T, V]. Cross-entropy over the contiguous [B·T, V]
    logits with the last position's label ignored: slicing or transposing the logits first would copy them (32 MB
    at the experiment's batch) and run log-softmax over a strided dimension."""
    labels = torch.nn.functional.pad(x[:, 1:], (0, 1), value=-100)
    nll = _TokenNLL.apply(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
    return nll.view(x.shape)[:, :-1]
