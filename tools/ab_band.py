"""A candidate band kernel against the committed one, side by side in one process.

    git show <rev>:lmask/csrc/band.cpp > /tmp/candidate.cpp
    python -m tools.ab_band --candidate /tmp/candidate.cpp [--seq-len 3072] [--windows 4 16 64 128] [--head-major]

Builds the candidate source under another op namespace (``torch.ops.lmask_candidate``, so both load at once), checks
that its outputs and gradients match the committed kernel's, then times forward and backward of each, interleaved
(the order alternates every call, so a drift in the host's speed hits both alike), and prints the medians and the
committed / candidate ratio (above 1: the candidate is faster). Inputs are one layer's q, k, v at GPT-2-small heads
as the model hands them (views of [B, T, H, D]); ``--head-major`` makes them contiguous [B, H, T, D] instead, for
both kernels: with the committed source as the candidate, a run with and one without it compare the layouts.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from tools import fail

NAMESPACE = "lmask_candidate"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.ab_band", description=__doc__.split("\n\n")[0])
    p.add_argument("--candidate", type=Path, required=True, help="a band.cpp to compare with lmask/csrc/band.cpp")
    p.add_argument("--seq-len", type=int, default=3072)
    p.add_argument("--windows", type=int, nargs="+", default=[4, 16, 64, 128])
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=15, help="timed calls of each kernel per window")
    p.add_argument("--head-major", action="store_true", help="q, k, v contiguous [B, H, T, D] (default: [B, T, H, D])")
    a = p.parse_args(argv)
    for name in ("seq_len", "heads", "head_dim", "threads", "calls"):
        if getattr(a, name) < 1:
            fail("ab_band", f"--{name.replace('_', '-')} must be >= 1")
    if min(a.windows) < 1:
        fail("ab_band", "--windows must all be >= 1")
    if not a.candidate.is_file():
        fail("ab_band", f"{a.candidate}: file not found")
    text = a.candidate.read_text()
    if "TORCH_LIBRARY(lmask, m)" not in text:
        fail("ab_band", f"{a.candidate}: no `TORCH_LIBRARY(lmask, m)` block; not a band kernel source")
    a.source = re.sub(r"TORCH_LIBRARY\(lmask, m\)", f"TORCH_LIBRARY({NAMESPACE}, m)", text)
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    from lmask.determinism import pin_cpu

    pin_cpu(a.threads)
    import torch
    from torch.utils.cpp_extension import load

    from lmask.band import _build, compile_flags

    committed = _build()
    # A fresh build each run, removed afterwards (the loaded library stays mapped), with the committed kernel's flags.
    with tempfile.TemporaryDirectory(prefix="lmask_ab_band_") as build:
        source = Path(build) / "candidate.cpp"
        source.write_text(a.source)
        load(
            name="lmask_band_candidate",
            sources=[str(source)],
            extra_cflags=compile_flags(),
            extra_ldflags=["-fopenmp"],
            build_directory=build,
            is_python_module=False,
        )
    candidate = getattr(torch.ops, NAMESPACE)
    T, H, D = a.seq_len, a.heads, a.head_dim
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, T, H, D).transpose(1, 2) for _ in range(3))
    if a.head_major:
        q, k, v = (x.contiguous() for x in (q, k, v))
    grad = torch.randn(1, T, H, D)
    scale = D**-0.5
    layout = "[B, H, T, D] contiguous" if a.head_major else "views of [B, T, H, D]"
    print(f"T = {T}, {H} heads x {D}, {a.threads} threads, q/k/v {layout}; median of {a.calls} calls, ms")
    print("window  fwd committed  candidate  ratio   bwd committed  candidate  ratio   max |diff|")
    kernels = {"committed": committed, "candidate": candidate}
    for w in a.windows:
        ref = committed.band_forward(q, k, v, w, 0, scale)
        got = candidate.band_forward(q, k, v, w, 0, scale)
        diffs = [(x - y).abs().max().item() for x, y in zip(ref, got)]
        grads = [ops.band_backward(grad, q, k, v, *r, w, 0, scale) for ops, r in ((committed, ref), (candidate, got))]
        diffs += [(x - y).abs().max().item() for x, y in zip(*grads)]
        if max(diffs) > 1e-4:
            fail("ab_band", f"w = {w}: the candidate differs from the committed kernel by {max(diffs):.2e}")
        times: dict[str, dict[str, list[float]]] = {n: {"fwd": [], "bwd": []} for n in kernels}
        for call in range(a.calls):
            for name in list(kernels) if call % 2 == 0 else list(kernels)[::-1]:
                ops = kernels[name]
                t0 = time.perf_counter()
                out, lse = ops.band_forward(q, k, v, w, 0, scale)
                t1 = time.perf_counter()
                ops.band_backward(grad, q, k, v, out, lse, w, 0, scale)
                t2 = time.perf_counter()
                times[name]["fwd"].append(t1 - t0)
                times[name]["bwd"].append(t2 - t1)
        m = {n: {d: statistics.median(x) * 1e3 for d, x in t.items()} for n, t in times.items()}
        cells = []
        for d in ("fwd", "bwd"):
            c, n = m["committed"][d], m["candidate"][d]
            cells.append(f"{c:13.2f}  {n:9.2f}  {c / n:5.2f}x")
        print(f"{w:6d}  {cells[0]}  {cells[1]}   {max(diffs):.1e}", flush=True)


if __name__ == "__main__":
    main()
