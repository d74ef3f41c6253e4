"""A compact, resumable training loop (AdamW, warmup + cosine, clipping, accumulation, optional DDP).

Determinism: the global batch of step s (block indices and the synthetic copy sequences mixed in, lmask.synthetic)
is a function of (seed, step), and the checkpoint holds model, optimizer and RNG state, so a run killed and resumed
ends with exactly the weights of an uninterrupted run (on CPU). Under torchrun each rank takes a contiguous shard of
the global batch; rank 0 alone writes files. Curves and the final metrics are written through dvclive.
"""

from __future__ import annotations

import collections
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel

from lmask import attention, checkpoint
from lmask.data import load_blocks, require_hub
from lmask.determinism import host_cpu, require_pinned
from lmask.device import Distributed, autocast, pick_device
from lmask.io import DataError, atomic_dir, write_json
from lmask.model import next_token_nll
from lmask.params import MixParams, Params, TrainParams
from lmask.provenance import record_weights, stage_inputs, verify_weights
from lmask.synthetic import copy_rows, mix_batch, position_offsets

# Logged every eval_every steps (dvclive): the loss on natural rows and, apart, on the periodic rows after their first
# period (only copying lowers it below a uniform guess: the onset of copying shows there).
LOGGED = ("train_loss", "natural_loss", "copy_loss", "val_loss", "lr", "tokens_per_s")
TIMINGS = ("train_time_s", "tokens_per_s")  # in the run's metrics only, never in the model folder


def lr_at(step: int, cfg: TrainParams) -> float:
    """The copy warm-up's own warmup to its constant lr (cfg.copy_warmup), then linear warmup to cfg.lr and cosine
    decay to cfg.min_lr over the remaining steps."""
    cw = cfg.copy_warmup
    if step < cw.steps:
        return cw.lr * min(1.0, (step + 1) / max(1, cw.warmup_steps))
    step -= cw.steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cw.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(step: int, n_blocks: int, batch_size: int, seed: int) -> np.ndarray:
    """The global batch of a step: a function of (seed, step) alone, so resume needs no sampler state."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_blocks, size=batch_size)


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    blocks: np.ndarray,
    batch_size: int,
    device: torch.device,
    max_batches: int | None = None,
    world: Distributed | None = None,
) -> float:
    """Mean next-token loss over the first max_batches batches of blocks (all tokens weighted equally).

    Under DDP the batches are dealt round-robin to the ranks and the sums all-reduced, so every rank returns the
    same value (equal to the single-process one up to summation order) in 1/world_size of the time.
    """
    was_training = model.training
    model.eval()
    rank, size = (world.rank, world.world_size) if world is not None and world.enabled else (0, 1)
    # Summed on the device: no host sync per batch. mps has no float64.
    sums = torch.zeros(2, dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    n = len(blocks) if max_batches is None else min(len(blocks), max_batches * batch_size)
    for start in list(range(0, n, batch_size))[rank::size]:
        x = torch.from_numpy(blocks[start : min(n, start + batch_size)]).to(device)
        with autocast(device):
            logits = model(x).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum"
        )
        sums[0] += loss
        sums[1] += x[:, 1:].numel()
    if world is not None:
        sums = world.all_sum(sums)
    model.train(was_training)
    total, count = sums.tolist()
    return total / count


@dataclass
class Run:
    """One training run: its name, seed and where it writes (paths come from dvc.yaml through the stage)."""

    name: str  # "baseline-b0", "half-b0-s0", ...
    seed: int  # batch order, synthetic sequences and dropout
    model_dir: Path
    live_dir: Path  # dvclive folder: metrics.json and plots/metrics/*.tsv
    checkpoint_dir: Path
    inputs: dict[str, str]  # everything the run depends on (lmask.provenance): a checkpoint from other inputs is stale
    info: dict = field(default_factory=dict)  # saved beside the weights (windows, sinks, ...)


@dataclass
class Batch:
    """One step's global batch: token rows and each row's copy start (the first position copying predicts: the
    period, after any prefix; 0 = natural text), and optionally a second group of shorter rows (the short copy rows of
    ``mix.copy_rows``) trained in the same step."""

    rows: np.ndarray
    copy_start: np.ndarray
    short_rows: np.ndarray | None = None
    short_copy_start: np.ndarray | None = None
    # Each row's first position id (None: every row starts at position 0), for rows and short_rows.
    first_position: np.ndarray | None = None
    short_first_position: np.ndarray | None = None

    @property
    def labels(self) -> int:
        short = 0 if self.short_rows is None else self.short_rows.shape[0] * (self.short_rows.shape[1] - 1)
        return self.rows.shape[0] * (self.rows.shape[1] - 1) + short

    @property
    def tokens(self) -> int:
        return self.rows.size + (0 if self.short_rows is None else self.short_rows.size)


def step_batch(step: int, blocks: np.ndarray, cfg: TrainParams, mix: MixParams, seed: int, vocab_size: int) -> Batch:
    """The global batch of a step, a function of (seed, step) alone: copy warm-up rows first, then natural blocks with
    ``mix`` periodic rows among them (and ``mix.copy_rows`` short copy rows beside them)."""
    phase = cfg.copy_warmup.phase_at(step)
    min_period = cfg.copy_warmup.min_period
    context = blocks.shape[1]  # the positions natural rows use

    def first_positions(rows: np.ndarray, shifted: bool) -> np.ndarray | None:
        return position_offsets(len(rows), rows.shape[1], context, seed, step) if shifted else None

    if phase is not None:
        rows, starts = copy_rows(
            phase.batch_size, phase.context, min_period, phase.max_period, vocab_size, seed, step, phase.prefix
        )
        return Batch(rows, starts, first_position=first_positions(rows, phase.position_offsets))
    rows, starts = mix_batch(
        blocks[batch_indices(step, len(blocks), cfg.batch_size, seed)], mix, seed, step, vocab_size
    )
    if not mix.copy_rows:
        return Batch(rows, starts)
    short, short_starts = copy_rows(
        mix.copy_rows, mix.copy_context, min_period, mix.copy_max_period, vocab_size, seed, step, mix.copy_prefix
    )
    return Batch(
        rows, starts, short, short_starts, short_first_position=first_positions(short, mix.copy_position_offsets)
    )


def row_losses(logits: torch.Tensor, x: torch.Tensor, copy_start: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(summed next-token loss over all labels, and the sums [loss, labels] over all labels, natural rows, and
    periodic rows from their copy start on). The first is what trains (divided by the step's labels); the parts are
    logged apart so that copying's onset shows."""
    nll = next_token_nll(logits, x)
    label_pos = torch.arange(1, x.shape[1], device=x.device)[None, :]
    natural = (copy_start == 0)[:, None].expand_as(nll)
    copied = (copy_start[:, None] > 0) & (label_pos >= copy_start[:, None])
    parts = [nll.sum(), nll.numel(), (nll * natural).sum(), natural.sum(), (nll * copied).sum(), copied.sum()]
    return nll.sum(), torch.stack([torch.as_tensor(p, dtype=nll.dtype, device=nll.device) for p in parts]).detach()


def train(
    model: GPT2LMHeadModel,
    train_blocks: np.ndarray,
    val_blocks: np.ndarray,
    cfg: TrainParams,
    mix: MixParams,
    run: Run,
    tokenizer=None,
    stop_after: int | None = None,
) -> dict:
    """Train ``model`` for cfg.steps optimizer steps; save the model and its dvclive metrics and curves.

    Run as plain ``python`` or under ``torchrun`` (DDP): each rank gets the same arguments, takes its shard of every
    global batch, and returns the same metrics. ``stop_after`` ends the run early after that many steps (checkpoint
    written, returns ``{"stopped_at": step}``), to test resume.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))  # a multi-node world (nnodes × nproc) is only known here
    if cfg.batch_size % (cfg.micro_batch_size * world_size) or any(
        p.batch_size % world_size for p in cfg.copy_warmup.plan
    ):
        raise ValueError(
            f"{run.name}: batch_size {cfg.batch_size} is not divisible by micro_batch_size {cfg.micro_batch_size} × "
            f"{world_size} processes (or a copy_warmup phase's batch_size by {world_size}); the global batch must stay "
            "batch_size"
        )
    device = pick_device(cfg.device)
    if device.type == "cpu":
        require_pinned(run.name)  # every entry point (stage, torchrun worker, script) pins the same way
    world = Distributed(device)
    try:
        progress = _train(model, train_blocks, val_blocks, cfg, mix, run, device, world, stop_after)
    except FloatingPointError:
        # The run cannot resume past the step that diverged (same inputs, same bits): its checkpoint is stale.
        if world.is_main:
            shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
        raise
    if progress.step < cfg.steps:
        result = {"stopped_at": progress.step}
    else:
        result = _finish(model, val_blocks, cfg, mix, run, device, world, tokenizer, progress)
    # Not in a `finally`: tearing down a group while peers wait in a collective can hang; on errors torchrun
    # stops the other ranks.
    world.close()
    return result


def make_optimizer(model: torch.nn.Module, cfg: TrainParams, device: torch.device) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type in ("cpu", "cuda"),  # one kernel for the whole update: 8 % faster steps on the 2-core CPU
    )


@dataclass
class _Loop:
    """What the optimizer loop works on, built once by ``_train``."""

    model: GPT2LMHeadModel
    ddp_model: torch.nn.Module  # the model itself, or its DDP wrapper under torchrun
    optimizer: torch.optim.Optimizer
    train_blocks: np.ndarray
    val_blocks: np.ndarray
    cfg: TrainParams
    mix: MixParams
    run: Run
    device: torch.device
    world: Distributed
    progress: checkpoint.Progress
    bar: tqdm


def _train(
    model,
    train_blocks,
    val_blocks,
    cfg: TrainParams,
    mix: MixParams,
    run: Run,
    device,
    world: Distributed,
    stop_after: int | None,
) -> checkpoint.Progress:
    """The optimizer steps; returns where the run stands (cfg.steps when done, earlier when stopped)."""
    torch.manual_seed(run.seed + world.rank)  # distinct dropout per rank; rank 0 matches a single-process run
    model.to(device).train()
    optimizer = make_optimizer(model, cfg, device)
    # Every rank restores the same model and optimizer state before DDP wraps (and broadcasts) the model.
    progress = checkpoint.load(run.checkpoint_dir, model, optimizer, run.inputs, run.name, world)
    ddp_model = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if world.enabled
        else model
    )
    bar = tqdm(total=cfg.steps, initial=progress.step, desc=run.name, unit="step", disable=not world.is_main)
    loop = _Loop(model, ddp_model, optimizer, train_blocks, val_blocks, cfg, mix, run, device, world, progress, bar)
    try:
        _steps(loop, stop_after)
    finally:
        bar.close()  # ends the progress line before any error message, so the message is a line of its own
    world.barrier()  # the checkpoint is on disk before any rank returns
    return progress


def _steps(loop: _Loop, stop_after: int | None) -> None:
    model, optimizer, cfg, run, progress = loop.model, loop.optimizer, loop.cfg, loop.run, loop.progress
    vocab_size = model.config.vocab_size
    calls_before = attention.PATH_COUNTS.copy()
    log = progress.log_window or _new_window(progress.step)
    while progress.step < cfg.steps:
        step = progress.step
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = step_batch(step, loop.train_blocks, cfg, loop.mix, run.seed, vocab_size)
        # Warm-up rows are short: one pass for the rank's share
        micro = cfg.micro_batch_size if step >= cfg.copy_warmup.steps else len(batch.rows)
        sums = accumulate_gradients(loop.ddp_model, batch, micro, loop.world, loop.device)
        step_loss = float(sums[0] / sums[1])
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            # Raised before optimizer.step(), so the last checkpoint holds finite weights.
            what = "loss" if not math.isfinite(step_loss) else "gradient norm"
            raise FloatingPointError(
                f"{run.name}: training {what} became {step_loss if what == 'loss' else grad_norm} at step {step} "
                f"(lr {lr:.3g}); lower the learning rate (lr={cfg.lr}) or check the data"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        progress.step = step = step + 1
        dt = time.perf_counter() - t0
        progress.elapsed += dt
        _accumulate(log, step_loss, sums.tolist(), batch.tokens, dt)
        loop.bar.update(1)
        loop.bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{log['tokens'] / log['time']:.0f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = mean_loss(model, loop.val_blocks, cfg.micro_batch_size, loop.device, cfg.eval_batches, loop.world)
            progress.rows.append(_log_row(log, step, val, lr))
            log = _new_window(step)
        progress.log_window = log
        progress.attention_calls = dict(
            attention.PATH_COUNTS - calls_before + collections.Counter(progress.attention_calls)
        )
        calls_before = attention.PATH_COUNTS.copy()
        stopping = stop_after is not None and step >= stop_after and step < cfg.steps
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
            checkpoint.save(run.checkpoint_dir, model, optimizer, progress, run.inputs, loop.world)
        if stopping:
            break


def accumulate_gradients(
    ddp_model: torch.nn.Module, batch: Batch, micro: int, world: Distributed, device
) -> torch.Tensor:
    """Forward and backward of this rank's shard of ``batch`` in micro-batches (gradients summed, DDP synchronised on
    the last pass); the loss is the mean over every label of the global batch, long and short rows alike. Returns the
    loss sums over the global batch (lmask.train.row_losses' six)."""
    groups = [(batch.rows, batch.copy_start, batch.first_position, micro)]
    if batch.short_rows is not None:
        groups.append((batch.short_rows, batch.short_copy_start, batch.short_first_position, len(batch.short_rows)))
    passes = [
        ([a if a is None else a[world.rank * shard : (world.rank + 1) * shard] for a in arrays], m)
        for *arrays, m in groups
        for shard in [len(arrays[0]) // world.world_size]
    ]
    chunks = [
        [a if a is None else a[k : k + m] for a in arrays]
        for arrays, m in passes
        for k in range(0, len(arrays[0]), min(m, len(arrays[0])))
    ]
    labels = batch.labels / world.world_size  # this rank's share: DDP averages the ranks' gradients
    sums = torch.zeros(6, device=device)
    for i, (rows, starts, first) in enumerate(chunks):
        x = torch.from_numpy(rows).to(device)
        copy_start = torch.from_numpy(starts).to(device)
        positions = None if first is None else torch.from_numpy(first[:, None] + np.arange(x.shape[1])).to(device)
        sync = i == len(chunks) - 1 or not world.enabled
        with nullcontext() if sync else ddp_model.no_sync(), autocast(device):
            loss, part = row_losses(ddp_model(input_ids=x, position_ids=positions).logits, x, copy_start)
        (loss / labels).backward()
        sums += part
    # Summed over ranks: the value logged, and the one every rank checks, so a NaN on any rank stops all of them
    # together instead of leaving the others hanging in the next all-reduce.
    return world.all_sum(sums)


def _new_window(step: int) -> dict:
    return {"loss": 0.0, "sums": [0.0] * 6, "tokens": 0, "time": 0.0, "start": step}


def _accumulate(log: dict, loss: float, sums: list[float], tokens: int, dt: float) -> None:
    log["loss"] += loss
    log["sums"] = [a + b for a, b in zip(log["sums"], sums, strict=True)]
    log["tokens"] += tokens
    log["time"] += dt


def _log_row(log: dict, step: int, val: float, lr: float) -> dict:
    _, _, nat_sum, nat_n, copy_sum, copy_n = log["sums"]
    return {
        "step": step,
        "train_loss": round(log["loss"] / (step - log["start"]), 5),
        "natural_loss": round(nat_sum / nat_n, 5) if nat_n else None,
        "copy_loss": round(copy_sum / copy_n, 5) if copy_n else None,
        "val_loss": round(val, 5),
        "lr": lr,
        "tokens_per_s": round(log["tokens"] / log["time"], 1),
    }


def run_tokens(cfg: TrainParams, mix: MixParams, context: int) -> int:  # lmask.summary.run_tokens_of: the same
    """Tokens a run trains on: the copy warm-up's short rows, then full blocks (and short copy rows beside them)."""
    cw = cfg.copy_warmup
    return cw.tokens() + (cfg.steps - cw.steps) * (cfg.batch_size * context + mix.copy_rows * mix.copy_context)


def _finish(
    model,
    val_blocks,
    cfg: TrainParams,
    mix: MixParams,
    run: Run,
    device,
    world: Distributed,
    tokenizer,
    progress: checkpoint.Progress,
) -> dict:
    """Save the model folder (only what the weights determine) and the run's metrics (timings, host, attention
    paths); delete the checkpoint. All ranks return identical metrics; rank 0 writes."""
    # The last logged row already holds this validation loss (same batches); the evaluate stage scores fully.
    last = progress.rows[-1]
    val_loss = (
        last["val_loss"]
        if last["step"] == cfg.steps
        else mean_loss(model, val_blocks, cfg.micro_batch_size, device, cfg.eval_batches, world)
    )
    tokens = run_tokens(cfg, mix, val_blocks.shape[1])
    metrics = {
        "steps": cfg.steps,
        "train_loss": last["train_loss"],
        "val_loss": round(val_loss, 5),
        "val_ppl": round(math.exp(val_loss), 3),
        "copy_loss": last["copy_loss"],
        "train_time_s": round(progress.elapsed, 1),
        "tokens_per_s": round(tokens / max(progress.elapsed, 1e-9), 1),
    }
    info = {
        "name": run.name,
        "seed": run.seed,
        "tokens": tokens,
        "device": device.type,
        "world_size": world.world_size,
        "train": asdict(cfg),
        "mix": asdict(mix),
        **run.info,
    }
    # The model folder is DVC-cached and hashed: only what the weights determine goes in it. Wall-clock time,
    # throughput, the host and the attention calls of this process live in the uncached dvclive metrics, so a resumed
    # run's folder is byte-identical to an uninterrupted one's.
    timeless = {k: v for k, v in metrics.items() if k not in TIMINGS}
    process = {
        **metrics,
        "host": host_cpu(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "attention_paths": sorted(progress.attention_calls),  # the paths that ran (a flex fallback shows)
        "attention_calls": dict(sorted(progress.attention_calls.items())),
    }
    # Every rank has finished every step before rank 0 deletes the checkpoint: a rank crashing late can still resume.
    world.barrier()
    if world.is_main:
        with atomic_dir(run.model_dir) as tmp:
            model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            write_json(tmp / "train_info.json", {**info, "metrics": timeless, "weights_sha256": record_weights(tmp)})
        write_live(run.live_dir, progress.rows, process)
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    world.barrier()  # outputs exist before any rank returns
    return {**metrics, "attention_paths": process["attention_paths"]}


def write_live(live_dir: Path, rows: list[dict], summary: dict) -> None:
    """The run's curves and summary in dvclive's layout (``metrics.json``, ``plots/metrics/<name>.tsv``), which
    ``dvc metrics`` / ``dvc plots`` / ``dvc exp show`` read. Replayed from the checkpointed rows at the end, so a
    resumed run logs exactly what an uninterrupted one does, and the folder appears complete or not at all."""
    from dvclive import Live

    with atomic_dir(live_dir) as tmp:
        live = Live(str(tmp), resume=False, report=None, save_dvc_exp=False, dvcyaml=None)
        for row in rows:
            live.step = row["step"]
            for name in LOGGED:
                if row.get(name) is not None:  # copy_loss only where periodic rows were trained on
                    live.log_metric(name, row[name])
        live.summary = {"step": rows[-1]["step"], **summary}
        live.make_summary()


# --------------------------------------------------------------------------------------------- stage runners
def initial_model(params: Params, tokenizer, seed: int) -> GPT2LMHeadModel:
    """Scratch GPT-2 from params.model (initialised from ``seed``), or pretrained weights (hub) for model.init:
    pretrained; its position embeddings train unless model.train_positions is false."""
    m = params.model
    model = _scratch_model(m, tokenizer, seed) if m.init == "scratch" else _pretrained_model(m, tokenizer)
    model.transformer.wpe.weight.requires_grad_(m.train_positions)
    return model


def _scratch_model(m, tokenizer, seed: int) -> GPT2LMHeadModel:
    from lmask.model import new_model, scratch_config

    eos = tokenizer.eos_token_id
    config = scratch_config(
        len(tokenizer), m.n_layer, m.n_embd, m.n_head, m.n_positions, m.dropout, eos, eos, m.initializer_range
    )
    return new_model(config, seed, m.position_init)


def _pretrained_model(m, tokenizer) -> GPT2LMHeadModel:
    from lmask.model import apply_windows

    require_hub("model.init", "pretrained", "Use `model.init: scratch` to train from scratch offline.")
    model = GPT2LMHeadModel.from_pretrained(m.pretrained_name, attn_implementation="lmask")
    for key in ("n_layer", "n_embd", "n_head"):
        if getattr(model.config, key) != getattr(m, key):
            raise ValueError(f"model.{key}={getattr(m, key)} but {m.pretrained_name} has {getattr(model.config, key)}")
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than {m.pretrained_name}'s vocabulary")
    return apply_windows(model, [None] * m.n_layer)


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    if not (folder / "tokenizer.json").is_file() and not (folder / "vocab.json").is_file():
        raise DataError(f"{folder}: no tokenizer here (run `dvc repro tokenize`)")
    return AutoTokenizer.from_pretrained(str(folder))


def process_facts() -> dict[str, str]:
    """What the bits depend on beyond the stage's declared inputs: torch's build and the threads that run."""
    return {"torch": torch.__version__, "threads": str(torch.get_num_threads())}


def baseline_seed(params: Params, baseline: int) -> int:
    """The RNG seed (initialisation, data order, mix) of baseline ``baseline``; baseline 0 keeps ``params.seed``."""
    return params.seed + 1000 * baseline


def finetune_seed(params: Params, baseline: int, seed: int) -> int:
    """The RNG seed (data order, mix) of fine-tuning seed ``seed`` from baseline ``baseline``: distinct from every
    baseline's and every other run's, and the same for every schedule, so full and windowed runs see the same
    batches (paired)."""
    return baseline_seed(params, baseline) + 1 + seed


def train_baseline(
    params: Params,
    baseline: int,
    data_dir: Path,
    tokenizer_dir: Path,
    model_dir: Path,
    live_dir: Path,
    checkpoint_dir: Path,
    stop_after: int | None = None,
) -> dict:
    """Train full-attention baseline ``baseline`` (an entry of baseline_seeds; from scratch or pretrained) per
    params.train and params.model."""
    tokenizer = _tokenizer(tokenizer_dir)
    train_blocks, val_blocks = load_blocks(data_dir, "train"), load_blocks(data_dir, "validation")
    seed = baseline_seed(params, baseline)
    model = initial_model(params, tokenizer, seed)
    inputs = stage_inputs("train_baseline", {"baseline": baseline}, params.raw, extra=process_facts())
    run = Run(f"baseline-b{baseline}", seed, model_dir, live_dir, checkpoint_dir, inputs, info={"baseline": baseline})
    return train(model, train_blocks, val_blocks, params.train, params.mix, run, tokenizer, stop_after)


def train_masked(
    params: Params,
    schedule: str,
    baseline: int,
    seed: int,
    baseline_dir: Path,
    data_dir: Path,
    model_dir: Path,
    live_dir: Path,
    checkpoint_dir: Path,
    stop_after: int | None = None,
) -> dict:
    """Fine-tune baseline ``baseline`` under one schedule for masked.steps steps, with fine-tuning seed ``seed``."""
    from lmask.model import apply_windows, load_model

    sched = params.schedule(schedule)
    if not (baseline_dir / "model.safetensors").is_file():
        raise DataError(f"{baseline_dir / 'model.safetensors'}: file not found (run `dvc repro train_baseline`)")
    verify_weights(baseline_dir)
    tokenizer = _tokenizer(baseline_dir)
    train_blocks, val_blocks = load_blocks(data_dir, "train"), load_blocks(data_dir, "validation")
    model = apply_windows(load_model(baseline_dir), sched.windows, sched.sinks, params.attention.backend)
    model.transformer.wpe.weight.requires_grad_(params.model.train_positions)  # fixed in fine-tuning too
    item = {"schedule": schedule, "baseline": baseline, "seed": seed}
    run = Run(
        f"{schedule}-b{baseline}-s{seed}",
        finetune_seed(params, baseline, seed),
        model_dir,
        live_dir,
        checkpoint_dir,
        stage_inputs("train_masked", item, params.raw, extra=process_facts()),
        info={
            "schedule": schedule,
            "windows": sched.windows,
            "sinks": sched.sinks,
            "backend": params.attention.backend,
            "baseline": baseline,
            "finetune_seed": seed,
        },
    )
    return train(model, train_blocks, val_blocks, params.masked, params.mix, run, tokenizer, stop_after)
