"""Where a training step's time goes, at the experiment's dims: torch.profiler over the step benchmark_train times.

    python -m tools.profile_train                 # params.yaml's model, micro-batch and context
    python -m tools.profile_train --steps 5 --rows 30

Builds params.model at random init (as ``benchmark_train`` does), runs ``--warmup`` steps of the pipeline's own
step (lmask.train_bench: accumulate_gradients, clip, fused AdamW), then profiles ``--steps`` more. Prints the
profiler's table (self CPU time) and the step by part: attention (lmask's C++ kernels or SDPA's flash kernels,
forward and backward), dense matmuls (mm, addmm, bmm) and everything else, each in ms per step and share of the
profiled time; for the first two also the model FLOPs they carry per second (lmask.train_bench.train_flops_per_token,
split by lmask.flops.attention_share: 4·d per attended pair against 24·d² per layer and 2·d·V for the LM head)
against the fp32 matmul rate measured in the same process. The profiler adds a little time per op, so shares are what
to compare; the step time without the profiler is printed beside them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tools import fail, params_or_fail

PROG = "profile_train"
# Attention's kernels, forward and backward: SDPA's CPU flash kernels and lmask's C++ ones (lmask/csrc/band.cpp)
ATTENTION_OPS = ("scaled_dot_product", "lmask::")
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm"}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m tools.{PROG}", description=__doc__.split("\n\n")[0])
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--warmup", type=int, default=3, help="steps before, also timed without the profiler")
    p.add_argument("--rows", type=int, default=25, help="rows of the profiler's table")
    a = p.parse_args(argv)
    for name in ("steps", "warmup", "rows"):
        if getattr(a, name) < 1:
            fail(PROG, f"--{name} must be >= 1")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    params = params_or_fail(PROG, a.params)
    from lmask.determinism import pin_cpu

    pin_cpu(params.cpu_threads)
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from lmask.device import Distributed
    from lmask.flops import attention_share
    from lmask.model import new_model, scratch_config
    from lmask.train import make_optimizer
    from lmask.train_bench import _pipeline_step, matmul_gflops, train_flops_per_token

    m = params.model
    vocab = params.tokenizer.vocab_size if params.tokenizer.kind == "bpe" else 50257
    config = scratch_config(vocab, m.n_layer, m.n_embd, m.n_head, m.n_positions, 0.0, 0, 0, m.initializer_range)
    device = torch.device("cpu")
    model = new_model(config, params.seed, m.position_init).train()
    optimizer = make_optimizer(model, params.train, device)
    rows = np.random.default_rng(params.seed).integers(1, vocab, size=(params.train.micro_batch_size, params.context))
    world = Distributed(device)

    def step() -> None:
        _pipeline_step(model, optimizer, rows, world, device, params.train.grad_clip)

    step()
    t0 = time.perf_counter()
    for _ in range(a.warmup):
        step()
    step_s = (time.perf_counter() - t0) / a.warmup
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows))

    ms = {"attention": 0.0, "matmul": 0.0, "total": 0.0}
    for e in events:
        t = e.self_cpu_time_total / 1e3 / a.steps
        ms["total"] += t
        if any(op in e.key for op in ATTENTION_OPS):
            ms["attention"] += t
        elif e.key in MATMUL_OPS:
            ms["matmul"] += t
    tokens = rows.size
    total_gflop = train_flops_per_token(m.n_layer, m.n_embd, vocab, params.context) * tokens / 1e9
    # Backward is 2x forward for every term, so the forward's attention share holds for the step
    attention_gflop = total_gflop * attention_share(m.n_layer, params.context, m.n_embd, vocab)
    gflop = {"attention": attention_gflop, "matmul": total_gflop - attention_gflop}  # per step, fwd + bwd
    peak = matmul_gflops(device)
    print(
        f"step without the profiler {step_s * 1e3:.0f} ms ({tokens / step_s:.0f} tokens/s, {total_gflop:.1f} GFLOP: "
        f"{total_gflop / step_s:.0f} GFLOP/s = {total_gflop / step_s / peak:.2f} of the {peak:.0f} GFLOP/s fp32 "
        f"matmul rate); profiled {ms['total']:.0f} ms per step"
    )
    for part in ("attention", "matmul"):
        rate = gflop[part] / (ms[part] / 1e3)
        print(
            f"  {part:9s} {ms[part]:6.0f} ms  {ms[part] / ms['total']:5.1%}  {gflop[part]:5.1f} GFLOP  "
            f"{rate:4.0f} GFLOP/s = {rate / peak:.2f} of the matmul rate"
        )
    rest = ms["total"] - ms["attention"] - ms["matmul"]
    print(f"  {'rest':9s} {rest:6.0f} ms  {rest / ms['total']:5.1%}")


if __name__ == "__main__":
    main()
