"""A compact, resumable training loop (AdamW, warmup + cosine, clipping, accumulation, optional DDP).

Determinism: the global batch of step s is drawn from a generator seeded with (seed, s), and the checkpoint holds
model, optimizer and RNG state, so a run killed and resumed ends with exactly the weights of an uninterrupted run
(on CPU). Under torchrun each rank takes a contiguous shard of the global batch; rank 0 alone writes files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm
from transformers import GPT2LMHeadModel

from lmask.data import atomic_dir, commit_dir, write_json
from lmask.params import TrainParams

CSV_FIELDS = ("step", "train_loss", "val_loss", "lr", "tokens_per_s")


def pick_device(name: str = "auto") -> torch.device:
    """cuda > mps > cpu for 'auto'; under torchrun each rank takes its LOCAL_RANK GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 is slow and changes the numbers)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def lr_at(step: int, cfg: TrainParams) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.min_lr at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def batch_indices(step: int, n_blocks: int, batch_size: int, seed: int) -> np.ndarray:
    """The global batch of a step: a function of (seed, step) alone, so resume needs no sampler state."""
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, n_blocks, size=batch_size)


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Distributed:
    """World info from torchrun's environment; a no-op for plain `python` and for torchrun with one process.

    NCCL on CUDA (one GPU per rank, cuda:LOCAL_RANK), gloo on CPU. Collectives below are no-ops when disabled, so
    the training loop has a single code path.
    """

    def __init__(self, device: torch.device) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self.local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        self.enabled = self.world_size > 1
        self.device = device
        self._owns_group = False
        if not self.enabled:
            return
        if device.type == "mps":
            raise RuntimeError("DDP needs CUDA (NCCL) or CPU (gloo); run mps with nproc: 1")
        if device.type == "cuda":
            # Without this every rank's NCCL barrier/collective defaults to cuda:0.
            torch.cuda.set_device(device)
        else:
            # torchrun exports OMP_NUM_THREADS=1 for nproc > 1; share the cores instead, never oversubscribe them.
            torch.set_num_threads(max(1, _usable_cpus() // self.local_world_size))
        if not dist.is_initialized():
            if device.type == "cuda":
                dist.init_process_group(backend="nccl", device_id=device)
            else:
                dist.init_process_group(backend="gloo")
            self._owns_group = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over ranks (the input itself when not distributed)."""
        if self.enabled:
            values = values.to(self.device)  # NCCL reduces GPU tensors only
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather(self, obj: object) -> list:
        """Every rank's ``obj``, in rank order (used for per-rank RNG states)."""
        if not self.enabled:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Tear down the process group we created (avoids torch's exit warning)."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


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


def fingerprint(*parts: object) -> str:
    """Hash of everything a checkpoint depends on; a mismatch means the checkpoint is stale."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save_checkpoint(
    path: Path, model, optimizer, step: int, rows: list, fp: str, elapsed: float, window: dict, world: Distributed
) -> None:
    """Rank 0 writes; every rank must call it (it gathers each rank's RNG state)."""
    rng = world.gather(
        {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
    )
    if not world.is_main:
        return
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rows": rows,
        "fingerprint": fp,
        "elapsed": elapsed,
        "window": window,  # the open logging window, so the next CSV row averages the same steps as without a stop
        "rng": rng,  # one entry per rank
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(
    path: Path, model, optimizer, fp: str, name: str, world: Distributed
) -> tuple[int, list, float, dict | None]:
    """Resume state (step, rows, elapsed, window) from ``path`` if it matches ``fp``; every rank reads the file.

    Ranks must agree on the step: a checkpoint visible to some ranks only (multi-node without a shared filesystem)
    would silently desynchronise the optimizers, so that is an error.
    """
    step, rows, elapsed, window = 0, [], 0.0, None
    if path.is_file():
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves weights/moments to the device.
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fp and "window" in state:  # (older checkpoints lack window and rng)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step, rows, elapsed, window = state["step"], state["rows"], state["elapsed"], state["window"]
            rng = state["rng"][world.rank if len(state["rng"]) == world.world_size else 0]
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            if world.is_main:
                print(f"{name}: resuming from {path} at step {step}")
        elif world.is_main:
            print(f"{name}: ignoring stale checkpoint {path} (params, inputs or format changed)")
    steps = world.gather(step)
    if len(set(steps)) > 1:
        raise RuntimeError(
            f"{name}: ranks found different checkpoints in {path.parent} (resume steps {steps}); the checkpoint "
            "folder must be on a filesystem shared by all nodes"
        )
    return step, rows, elapsed, window


def train(
    model: GPT2LMHeadModel,
    train_blocks: np.ndarray,
    val_blocks: np.ndarray,
    cfg: TrainParams,
    *,
    seed: int,
    name: str,
    model_dir: Path,
    metrics_path: Path,
    plot_path: Path,
    checkpoint_dir: Path,
    run_fingerprint: str,
    tokenizer=None,
    extra_metrics: dict | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train ``model`` for cfg.steps optimizer steps; save model, metrics JSON and a CSV curve.

    Run as plain ``python`` or under ``torchrun`` (DDP): each rank gets the same arguments, takes its shard of every
    global batch, and returns the same metrics; rank 0 alone writes files. ``stop_after`` ends the run early after
    that many steps (checkpoint written, returns ``{"stopped_at": step}``), to test resume.
    """
    # params.check() validates with nproc; a multi-node world (nnodes × nproc) is only known here. Checked before
    # the process group starts, so every rank fails at once.
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if cfg.batch_size % (cfg.micro_batch_size * world_size):
        raise ValueError(
            f"{name}: batch_size {cfg.batch_size} is not divisible by micro_batch_size {cfg.micro_batch_size} × "
            f"{world_size} processes; the global batch must stay batch_size"
        )
    device = pick_device(cfg.device)
    world = Distributed(device)
    result = _train(
        model,
        train_blocks,
        val_blocks,
        cfg,
        device,
        world,
        seed=seed,
        name=name,
        model_dir=model_dir,
        metrics_path=metrics_path,
        plot_path=plot_path,
        checkpoint_dir=checkpoint_dir,
        run_fingerprint=run_fingerprint,
        tokenizer=tokenizer,
        extra_metrics=extra_metrics,
        stop_after=stop_after,
    )
    # Not in a `finally`: tearing down a group while peers wait in a collective can hang; on errors torchrun
    # stops the other ranks.
    world.close()
    return result


def _train(
    model,
    train_blocks,
    val_blocks,
    cfg: TrainParams,
    device: torch.device,
    world: Distributed,
    *,
    seed: int,
    name: str,
    model_dir: Path,
    metrics_path: Path,
    plot_path: Path,
    checkpoint_dir: Path,
    run_fingerprint: str,
    tokenizer,
    extra_metrics: dict | None,
    stop_after: int | None,
) -> dict:
    micro = cfg.micro_batch_size
    accumulation = cfg.batch_size // (micro * world.world_size)
    shard = cfg.batch_size // world.world_size
    context = train_blocks.shape[1]

    torch.manual_seed(seed + world.rank)  # distinct dropout per rank; rank 0 matches a single-process run
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    ckpt_path = checkpoint_dir / "state.pt"
    # Every rank restores the same model and optimizer state before DDP wraps (and broadcasts) the model.
    step, rows, elapsed, window = _load_checkpoint(ckpt_path, model, optimizer, run_fingerprint, name, world)
    ddp_model = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if world.enabled
        else model
    )

    bar = tqdm(total=cfg.steps, initial=step, desc=name, unit="step", disable=not world.is_main)
    window = window or {"loss": 0.0, "tokens": 0, "time": 0.0, "start": step}
    while step < cfg.steps:
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = batch_indices(step, len(train_blocks), cfg.batch_size, seed)
        idx = idx[world.rank * shard : (world.rank + 1) * shard]
        local_loss = torch.zeros((), device=device)
        for k in range(accumulation):
            x = torch.from_numpy(train_blocks[idx[k * micro : (k + 1) * micro]]).to(device)
            sync = k == accumulation - 1 or not world.enabled
            with nullcontext() if sync else ddp_model.no_sync(), autocast(device):
                loss = ddp_model(input_ids=x, labels=x).loss / accumulation
            loss.backward()
            local_loss += loss.detach().float()
        # The global batch's loss (mean over ranks): the value logged, and the one every rank checks, so a NaN on
        # any rank stops all of them together instead of leaving the others hanging in the next all-reduce.
        step_loss = world.all_sum(local_loss).item() / world.world_size
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            # Raised before optimizer.step(), so the last checkpoint holds finite weights.
            what = "loss" if not math.isfinite(step_loss) else "gradient norm"
            raise FloatingPointError(
                f"{name}: training {what} became {step_loss if what == 'loss' else grad_norm} at step {step}; "
                f"lower the learning rate ({'masked' if 'masked' in str(model_dir) else 'train'}.lr={cfg.lr}) "
                "or check the data"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        dt = time.perf_counter() - t0
        elapsed += dt
        window["loss"] += step_loss
        window["tokens"] += cfg.batch_size * context
        window["time"] += dt
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{window['tokens'] / window['time']:.0f}")

        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = mean_loss(model, val_blocks, micro, device, cfg.eval_batches, world)
            rows.append(
                {
                    "step": step,
                    "train_loss": round(window["loss"] / (step - window["start"]), 5),
                    "val_loss": round(val, 5),
                    "lr": lr,
                    "tokens_per_s": round(window["tokens"] / window["time"], 1),
                }
            )
            window = {"loss": 0.0, "tokens": 0, "time": 0.0, "start": step}
        stopping = stop_after is not None and step >= stop_after and step < cfg.steps
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
            _save_checkpoint(ckpt_path, model, optimizer, step, rows, run_fingerprint, elapsed, window, world)
        if stopping:
            bar.close()
            world.barrier()  # the checkpoint is on disk before any rank returns
            return {"stopped_at": step}
    bar.close()

    # All ranks evaluate (sharded) and so return identical metrics; only rank 0 writes them.
    val_loss = mean_loss(model, val_blocks, micro, device, world=world)
    total_tokens = cfg.steps * cfg.batch_size * context
    metrics = {
        "steps": cfg.steps,
        "tokens": total_tokens,
        "train_loss": rows[-1]["train_loss"],
        "val_loss": round(val_loss, 5),
        "val_ppl": round(math.exp(val_loss), 3),
        "train_time_s": round(elapsed, 1),
        "tokens_per_s": round(total_tokens / max(elapsed, 1e-9), 1),
        "device": str(device.type),
        "world_size": world.world_size,
        **(extra_metrics or {}),
    }
    # Every rank has finished every step before rank 0 deletes the checkpoint: a rank crashing late can still resume.
    world.barrier()
    if world.is_main:
        tmp = atomic_dir(model_dir)
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_json(tmp / "train_config.json", {"name": name, **asdict(cfg), "seed": seed})
        commit_dir(tmp, model_dir)
        write_json(metrics_path, metrics)
        _write_csv(plot_path, rows)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    world.barrier()  # outputs exist before any rank returns
    return metrics


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


# --------------------------------------------------------------------------------------------- stage runners
def _data(params):
    from transformers import AutoTokenizer

    from lmask.data import load_blocks

    tokenizer = AutoTokenizer.from_pretrained("data/tokenizer")
    return tokenizer, load_blocks(Path("data/tokenized"), "train"), load_blocks(Path("data/tokenized"), "validation")


def initial_model(params, tokenizer) -> GPT2LMHeadModel:
    """Scratch GPT-2 from params.model, or pretrained weights (hub) for model.init: pretrained."""
    from lmask.model import apply_windows, new_model, scratch_config

    m = params.model
    if m.init == "scratch":
        eos = tokenizer.eos_token_id
        config = scratch_config(len(tokenizer), m.n_layer, m.n_embd, m.n_head, m.n_positions, m.dropout, eos, eos)
        return new_model(config, params.seed)
    from lmask.data import require_hub

    require_hub("model.init", "pretrained", "Use `model.init: scratch` to train from scratch offline.")
    model = GPT2LMHeadModel.from_pretrained(m.pretrained_name, attn_implementation="lmask")
    for key in ("n_layer", "n_embd", "n_head"):
        if getattr(model.config, key) != getattr(m, key):
            raise ValueError(f"model.{key}={getattr(m, key)} but {m.pretrained_name} has {getattr(model.config, key)}")
    if len(tokenizer) != model.config.vocab_size and len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than {m.pretrained_name}'s vocabulary")
    return apply_windows(model, [None] * m.n_layer)


def train_baseline(params, stop_after: int | None = None) -> dict:
    tokenizer, train_blocks, val_blocks = _data(params)
    model = initial_model(params, tokenizer)
    stats = json.loads(Path("data/tokenized/stats.json").read_text())
    fp = fingerprint("baseline", asdict(params.train), asdict(params.model), params.seed, stats)
    return train(
        model,
        train_blocks,
        val_blocks,
        params.train,
        seed=params.seed,
        name="baseline",
        model_dir=Path("models/baseline"),
        metrics_path=Path("metrics/train/baseline.json"),
        plot_path=Path("plots/train/baseline.csv"),
        checkpoint_dir=Path("checkpoints/baseline"),
        run_fingerprint=fp,
        tokenizer=tokenizer,
        stop_after=stop_after,
    )


def train_masked(params, name: str, stop_after: int | None = None) -> dict:
    """Fine-tune models/baseline under schedule ``name`` for masked.steps steps."""
    from lmask.model import apply_windows, load_model
    from lmask.schedule import layer_windows, schedule_sinks

    if name not in params.schedules:
        raise ValueError(f"schedules.{name}: no such schedule in params.yaml (have {sorted(params.schedules)})")
    spec = params.schedules[name]
    windows = layer_windows(spec, params.model.n_layer, f"schedules.{name}")
    sinks = schedule_sinks(spec, f"schedules.{name}")
    tokenizer, train_blocks, val_blocks = _data(params)
    baseline = Path("models/baseline")
    if not (baseline / "model.safetensors").is_file():
        raise FileNotFoundError(f"{baseline}/model.safetensors is missing: run `dvc repro train_baseline` first")
    model = apply_windows(load_model(baseline), windows, sinks, params.attention.backend)
    fp = fingerprint(
        name,
        spec,
        asdict(params.masked),
        params.attention.backend,
        params.seed,
        file_sha256(baseline / "model.safetensors"),
    )
    return train(
        model,
        train_blocks,
        val_blocks,
        params.masked,
        seed=params.seed + 1,
        name=f"masked@{name}",
        model_dir=Path("models/masked") / name,
        metrics_path=Path("metrics/train") / f"{name}.json",
        plot_path=Path("plots/train") / f"{name}.csv",
        checkpoint_dir=Path("checkpoints/masked") / name,
        run_fingerprint=fp,
        tokenizer=tokenizer,
        extra_metrics={"windows": windows, "sinks": sinks, "backend": params.attention.backend},
        stop_after=stop_after,
    )
