"""Where the band kernel's time goes: per window, forward and backward, the time beside the memory floor and the
cost per visible pair in core-cycles (at an assumed clock), one layer at GPT-2-small dims.

    python -m tools.profile_band [--seq-len 3072] [--windows 1 8 16 64 256] [--threads 1 2] [--ghz 3.0]

The w = 1 row is (almost) all memory: the kernel reads q, k, v and writes the output once. Time above it, divided
by the extra pairs, is what each pair costs. The floor is one op that reads q, k, v and writes an output of the same
shape (as in the kernel benchmark). Minimum of --rounds calls after one warm-up.
"""

from __future__ import annotations

import argparse
import time

from tools import fail


def best(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m tools.profile_band", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seq-len", type=int, default=3072)
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 8, 16, 64, 256])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ghz", type=float, default=3.0, help="clock assumed for cycles per pair")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    bad = [f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if min(v if isinstance(v, list) else [v]) <= 0]
    if bad:
        fail("profile_band", f"{', '.join(bad)}: every value must be > 0")
    import torch  # after the argument checks: --help and a bad value answer at once

    from lmask.band import _build
    from lmask.schedule import attention_pairs

    ops = _build()
    T, H, D = args.seq_len, args.heads, args.head_dim
    q, k, v = (torch.randn(1, T, H, D).transpose(1, 2) for _ in range(3))
    grad = torch.randn(1, T, H, D)
    out = torch.empty_like(q)
    print(f"T = {T}, {H} heads x {D}; cycles per pair at {args.ghz} GHz x threads")
    print("threads  window  fwd ms  bwd ms  floor ms  fwd cyc/pair  bwd cyc/pair  (above w = 1)")
    for n in args.threads:
        torch.set_num_threads(n)
        floor = best(lambda: torch.addcmul(q, k, v, out=out), args.rounds)
        base = None
        for w in args.windows:
            o, lse = ops.band_forward(q, k, v, w, 0, D**-0.5)
            fwd = best(lambda w=w: ops.band_forward(q, k, v, w, 0, D**-0.5), args.rounds)
            bwd = best(lambda w=w, o=o, lse=lse: ops.band_backward(grad, q, k, v, o, lse, w, 0, D**-0.5), args.rounds)
            pairs = H * attention_pairs(w, T)
            if base is None:
                base = (fwd, bwd, pairs)
            extra = pairs - base[2]
            cyc = [(t - t1) * args.ghz * 1e9 * n / extra if extra else float("nan") for t, t1 in zip((fwd, bwd), base)]
            times = f"{fwd * 1e3:6.2f}  {bwd * 1e3:6.2f}  {floor * 1e3:8.2f}"
            print(f"{n:7d}  {w:6d}  {times}  {cyc[0]:12.1f}  {cyc[1]:12.1f}")


if __name__ == "__main__":
    main()
