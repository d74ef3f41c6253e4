"""Every attention path equals the explicit-mask reference, outputs and gradients; the dispatcher picks the
sparse path only where it is exact."""

import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmask import band as band_module
from lmask import blocked as blocked_module
from lmask import flex as flex_module
from lmask.attention import PATH_COUNTS, select_path, windowed_attention
from lmask.band import band_attention, tiled_attention
from lmask.blocked import blocked_attention
from lmask.dense import masked_attention, window_mask
from lmask.flex import flex_windowed_attention
from lmask.flops import TILED_QUERY_TILE, tiled_pairs
from lmask.model import apply_windows, new_model, scratch_config


@pytest.fixture(autouse=True)
def restore_flex_state():
    """A failed flex call marks flex broken for the whole process; keep that from leaking between tests."""
    saved = list(flex_module._FLEX_BROKEN)
    yield
    flex_module._FLEX_BROKEN[:] = saved


def reference(q, k, v, window, sinks=0, mask=None):
    """Plain math over the dense score matrix (independent of SDPA)."""
    allowed = window_mask(q.shape[-2], k.shape[-2], window, sinks)
    if mask is not None:
        allowed = allowed & mask
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1).matmul(v).transpose(1, 2)


def qkv(B, H, T, D=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Like transformers: [B, H, T, D] transposes of [B, T, H, D] tensors.
    return [torch.randn(B, T, H, D, generator=g, dtype=dtype).transpose(1, 2).requires_grad_() for _ in range(3)]


def outputs_and_grads(fn, q, k, v):
    out = fn(q, k, v)
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(7))
    return [out, *torch.autograd.grad(out, (q, k, v), g)]


# T not a multiple of the block, w = 1, w >= T, sinks 0/1/4, batch > 1, several head counts.
CASES = [
    (1, 1, 1, 1, 0),
    (2, 3, 5, 1, 0),
    (2, 2, 37, 3, 1),
    (1, 2, 100, 16, 4),
    (2, 4, 130, 64, 0),
    (1, 2, 300, 65, 1),
    (1, 1, 200, 256, 4),
    (2, 3, 290, 100, 4),
    (1, 6, 257, 33, 2),
    (1, 2, 700, 512, 4),
]


@pytest.fixture(params=["cpu_flash", "generic"])
def middle_path(request, monkeypatch):
    """Run a test on both middle-block implementations: the CPU flash kernel on strided slabs, and the generic
    unfold + SDPA path (what CUDA uses when FlexAttention is unavailable)."""
    if request.param == "generic":
        monkeypatch.setattr(blocked_module, "_cpu_slabs_supported", lambda query: False)
    return request.param


@pytest.mark.parametrize("B,H,T,window,sinks", CASES)
@pytest.mark.parametrize("block", [None, 4, 16])
def test_blocked_matches_reference_fp64(B, H, T, window, sinks, block, middle_path):
    q, k, v = qkv(B, H, T)
    got = outputs_and_grads(lambda *x: blocked_attention(*x, window, sinks, block=block), q, k, v)
    want = outputs_and_grads(lambda *x: reference(*x, window, sinks), q, k, v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("B,H,T,window,sinks", CASES)
def test_blocked_without_autograd_writes_the_same_output(B, H, T, window, sinks, middle_path):
    """Under no_grad the pieces go into one preallocated output instead of being concatenated: the same bits as the
    autograd path, and the reference's values."""
    q, k, v = qkv(B, H, T, seed=T + window)
    with torch.no_grad():
        got = blocked_attention(q, k, v, window, sinks, block=4)
        want = reference(q, k, v, window, sinks)
    tracked = blocked_attention(q, k, v, window, sinks, block=4)
    assert tracked.requires_grad and not got.requires_grad and got.is_contiguous()
    assert torch.equal(got, tracked.detach())
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("T,window,sinks", [(1000, 64, 0), (777, 256, 4), (1500, 1024, 1)])
def test_blocked_matches_masked_sdpa_fp32(T, window, sinks, middle_path):
    """The issue's tolerance: fp32 max abs diff <= 1e-5 against masked SDPA, outputs and grads of q, k, v."""
    q, k, v = qkv(1, 4, T, D=64, dtype=torch.float32)
    got = outputs_and_grads(lambda *x: blocked_attention(*x, window, sinks), q, k, v)
    want = outputs_and_grads(lambda *x: masked_attention(*x, window, sinks), q, k, v)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.filterwarnings("ignore:FlexAttention failed")
@pytest.mark.parametrize("backend", ["auto", "band", "blocked", "flex", "masked"])
@pytest.mark.parametrize("window", [None, 1, 7, 50])
def test_every_backend_matches_reference(backend, window):
    """fp64 with gradients: a forced flex call cannot run on CPU here (no fp64, no backward) and must fall back."""
    q, k, v = qkv(2, 3, 50, seed=3)
    before = PATH_COUNTS.copy()
    got = outputs_and_grads(lambda *x: windowed_attention(*x, window, 2, backend=backend), q, k, v)
    want = outputs_and_grads(lambda *x: reference(*x, window, 2), q, k, v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    ran = PATH_COUNTS - before
    if window is None or window >= 50:  # the window covers every key: full attention
        expected = {"masked": 1} if backend == "masked" else {"causal": 1}
    elif backend in ("masked", "band"):
        expected = {backend: 1}
    elif backend == "flex":
        expected = {"flex_fallback": 1}
    elif backend == "auto" and window <= band_module.BAND_MAX_WINDOW:
        expected = {"band": 1}  # auto on CPU, small windows: the band kernel
    else:
        expected = {"blocked": 1}  # auto on CPU, larger windows: the blocked path
    assert dict(ran) == expected


def test_padding_mask_and_decoding():
    q, k, v = qkv(2, 2, 20, seed=4)
    pad = torch.ones(2, 1, 20, 20, dtype=torch.bool)
    pad[0, ..., :5] = False  # first row left-padded
    causal = window_mask(20, 20, None)
    mask = pad & causal
    got = windowed_attention(q, k, v, 6, 1, attention_mask=mask)
    # Fully padded query rows are undefined (softmax over nothing); compare the real ones.
    want = reference(q, k, v, 6, 1, mask)
    torch.testing.assert_close(got[0, 5:], want[0, 5:], atol=1e-10, rtol=0)
    torch.testing.assert_close(got[1], want[1], atol=1e-10, rtol=0)
    # Decoding: the last 3 queries against all 20 keys.
    got = windowed_attention(q[:, :, -3:], k, v, 6, 1)
    torch.testing.assert_close(got, reference(q, k, v, 6, 1)[:, -3:], atol=1e-10, rtol=0)


def test_pruned_cache_mask_columns():
    """Keys = 2 sinks + last 4 positions of 12; a 12-column padding mask maps onto them."""
    q, k, v = qkv(1, 2, 12, seed=5)
    keep = [0, 1, 8, 9, 10, 11]
    pad = torch.ones(1, 1, 1, 12, dtype=torch.bool)
    pad[..., 1] = False
    got = windowed_attention(q[:, :, -1:], k[:, :, keep], v[:, :, keep], 4, 2, attention_mask=pad)
    want = reference(q, k, v, 4, 2, pad.expand(1, 1, 12, 12))[:, -1:]
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_dropout_runs_on_masked_path():
    q, k, v = qkv(1, 2, 30, seed=6)
    assert select_path(q, k, 8, dropout=0.1) == "masked"
    out = windowed_attention(q, k, v, 8, dropout=0.5)
    assert out.shape == (1, 30, 2, 8) and torch.isfinite(out).all()


def test_path_selection():
    q, k, _ = qkv(1, 2, 64)
    pad = torch.ones(1, 1, 64, 64, dtype=torch.bool)
    assert q.requires_grad and select_path(q, k, 16) == "band"  # training on CPU, small window
    assert select_path(q.detach(), k.detach(), 16) == "band"  # forward only (evaluation) too
    long_q, long_k, _ = qkv(1, 1, 2 * band_module.BAND_MAX_WINDOW + 8)
    assert select_path(long_q, long_k, band_module.BAND_MAX_WINDOW) == "band"  # the crossover is inclusive
    assert select_path(long_q, long_k, band_module.BAND_MAX_WINDOW + 1) == "blocked"  # above it: blocked
    assert select_path(q, k, 16, backend="band") == "band"
    assert select_path(q, k, None) == "causal"
    assert select_path(q, k, 64) == "causal"  # the window covers every key
    assert select_path(q, k, None, dropout=0.1) == "causal"  # SDPA applies dropout itself
    assert select_path(q, k, 16, attention_mask=pad) == "masked"
    assert select_path(q, k, None, attention_mask=pad) == "masked"
    assert select_path(q[:, :, -1:], k, 16) == "masked"  # decoding
    assert select_path(q, k, 16, dropout=0.1) == "masked"
    assert select_path(q, k, 16, backend="masked") == "masked"
    assert select_path(q, k, None, backend="masked") == "masked"
    assert select_path(q, k, 16, backend="blocked") == "blocked"
    assert select_path(q, k, 16, backend="flex") == "flex"  # forced: compiled flex runs on CPU too
    assert select_path(q, k, None, backend="flex") == "causal"  # full layers never need a mask
    assert select_path(q, k, 16, attention_mask=pad, backend="flex") == "masked"  # flex has no padding support here
    assert not flex_module.flex_available(q.device)  # auto picks flex on CUDA only
    with pytest.raises(ValueError, match="backend"):
        select_path(q, k, 16, backend="dense")


def test_blocked_never_builds_a_full_score_matrix(monkeypatch, middle_path):
    """Every attention call of the blocked path sees at most b queries × (sinks + P + b) keys per block, forward and
    backward, and the CPU path hands the kernel views of q/k/v (no copies) when there are no sinks."""
    seen = []

    def spy(real):
        def call(q, k, v, *args, **kw):
            seen.append((real.__name__, q.shape[-2], k.shape[-2]))
            return real(q, k, v, *args, **kw)

        call.__name__ = real.__name__
        return call

    def spy_backward(go, q, k, v, *args, **kw):
        seen.append(("backward", q.shape[-2], k.shape[-2], k.data_ptr()))
        return real_backward(go, q, k, v, *args, **kw)

    real_backward = blocked_module._CPU_FLASH_BACKWARD
    monkeypatch.setattr(blocked_module.F, "scaled_dot_product_attention", spy(F.scaled_dot_product_attention))
    monkeypatch.setattr(blocked_module, "_CPU_FLASH", spy(blocked_module._CPU_FLASH))
    monkeypatch.setattr(blocked_module, "_CPU_FLASH_BACKWARD", spy_backward)
    q, k, v = qkv(1, 2, 1000, dtype=torch.float32)
    out = blocked_attention(q, k, v, 64, sinks=4)
    middle = "scaled_dot_product_attention" if middle_path == "generic" else blocked_module._CPU_FLASH.__name__
    assert [s[:3] for s in seen] == [
        ("scaled_dot_product_attention", 64, 64),  # head: queries < P=64, plain causal
        (middle, 32, 4 + 96),  # middle blocks (b=32): sinks + P + b keys each
        ("scaled_dot_product_attention", 8, 4 + 72),  # tail
    ]
    seen.clear()
    out.sum().backward()
    if middle_path == "cpu_flash":
        assert [s[:3] for s in seen] == [("backward", 32, 4 + 96)]
        seen.clear()
        blocked_attention(q, k, v, 64, sinks=0).sum().backward()
        assert seen[-1][3] == k.data_ptr()  # the key slabs are views of k itself


@pytest.mark.parametrize("window,sinks", [(1, 0), (5, 0), (5, 3), (40, 1)])
def test_flex_mask_mod_equals_window_mask(window, sinks):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    mask = flex.create_mask(flex_module.flex_mask_mod(window, sinks), None, None, 48, 48, device="cpu")
    assert torch.equal(mask[0, 0], window_mask(48, 48, window, sinks))


def test_blocked_backward_takes_a_strided_gradient(middle_path):
    """The gradient reaching the kernel need not be contiguous (here it is a transpose)."""
    q, k, v = qkv(2, 3, 150, seed=8)
    w = torch.randn(2, 3, 150, 8, dtype=torch.float64)  # [B, H, T, D]: the loss sees the output transposed
    got = torch.autograd.grad((blocked_attention(q, k, v, 20, 1).transpose(1, 2) * w).sum(), (q, k, v))
    want = torch.autograd.grad((reference(q, k, v, 20, 1).transpose(1, 2) * w).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# FlexAttention, compiled, on CPU


def test_real_compiled_flex_forward_matches_masked_fp32():
    """The compiled FlexAttention kernel itself (not a fallback) on CPU, against masked SDPA, fp32 forward.

    Forward only: on CPU, torch 2.13 raises NotImplementedError('FlexAttention does not support backward on CPU.
    Please set the input requires_grad to False or use another device.') for inputs that require grad (see the
    next test for what lmask does then). One T per compile: window and sinks are tensors in the mask, so changing
    them does not recompile; T=100 is not a multiple of flex's 128-token blocks.
    """
    if not flex_module.flex_supported():
        pytest.skip("this torch has no FlexAttention")
    cases = [(256, 16, 0), (256, 64, 4), (256, 1, 3), (256, 200, 1), (100, 7, 2)]
    for T, window, sinks in cases:
        q, k, v = (x.detach() for x in qkv(2, 3, T, D=16, dtype=torch.float32, seed=T + window))
        before = PATH_COUNTS.copy()
        with torch.no_grad():
            got = flex_windowed_attention(q, k, v, window, sinks)
            want = masked_attention(q, k, v, window, sinks)
        assert dict(PATH_COUNTS - before) == {"flex": 1}, (T, window, sinks, flex_module._FLEX_BROKEN)
        assert got.shape == want.shape == (2, T, 3, 16)
        assert (got - want).abs().max().item() <= 1e-5, (T, window, sinks)
        # Not vacuous: a window one larger gives a visibly different output.
        assert (masked_attention(q, k, v, window + 1, sinks) - want).abs().max().item() > 1e-3
    assert not flex_module._FLEX_BROKEN


def test_flex_with_gradients_on_cpu_gives_correct_outputs_and_grads():
    """Whatever this torch does with flex backward on CPU (2.13: NotImplementedError, so lmask falls back to the
    blocked path), the result and the gradients are right and the call is counted once."""
    q, k, v = qkv(1, 2, 128, D=16, dtype=torch.float32, seed=11)
    before = PATH_COUNTS.copy()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FlexAttention failed")
        got = outputs_and_grads(lambda *x: flex_windowed_attention(*x, 16, 2), q, k, v)
    want = outputs_and_grads(lambda *x: masked_attention(*x, 16, 2), q, k, v)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() <= 1e-5
    ran = PATH_COUNTS - before
    assert sum(ran[p] for p in ("flex", "flex_fallback")) == 1 and set(ran) <= {"flex", "flex_fallback"}


def test_failed_flex_falls_back_to_blocked(monkeypatch):
    calls = []

    def broken_kernel(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("simulated flex failure")

    monkeypatch.setattr(flex_module, "_flex_kernel", lambda: broken_kernel)
    monkeypatch.setattr(flex_module, "_FLEX_BROKEN", [])
    q, k, v = (x.detach() for x in qkv(2, 2, 90, D=8, dtype=torch.float32, seed=12))
    before = PATH_COUNTS.copy()
    with pytest.warns(UserWarning, match="simulated flex failure"):
        got = flex_windowed_attention(q, k, v, 10, 1)
    assert calls == [1]
    assert torch.equal(got, blocked_attention(q, k, v, 10, 1))
    assert (got - reference(q.double(), k.double(), v.double(), 10, 1)).abs().max().item() < 1e-5
    assert dict(PATH_COUNTS - before) == {"flex_fallback": 1}
    assert flex_module._FLEX_BROKEN and "simulated flex failure" in flex_module._FLEX_BROKEN[0]
    assert not flex_module.flex_supported()
    # Once broken, later calls go straight to the blocked path without trying the kernel again.
    again = flex_windowed_attention(q, k, v, 10, 1)
    assert calls == [1] and torch.equal(again, got)
    assert dict(PATH_COUNTS - before) == {"flex_fallback": 2}


# ---------------------------------------------------------------------------------------------------------------
# bf16 on CPU


@pytest.mark.parametrize("T,window,sinks", [(300, 16, 0), (300, 64, 4), (1000, 100, 1)])
def test_blocked_bf16_matches_masked_in_fp32(T, window, sinks, middle_path):
    g = torch.Generator().manual_seed(T + window)
    q, k, v = (torch.randn(2, T, 4, 32, generator=g).transpose(1, 2).to(torch.bfloat16) for _ in range(3))
    try:
        got = blocked_attention(q, k, v, window, sinks)
    except RuntimeError as err:  # torch's bf16 flash kernel on an AVX-512 CPU whose dispatch is pinned to AVX2
        if "pack_vnni2" not in str(err):
            raise
        pytest.skip(f"this host's torch cannot run bf16 SDPA under the AVX2 pin: {err}")
    assert got.dtype == torch.bfloat16
    want = masked_attention(q.float(), k.float(), v.float(), window, sinks)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=1e-2)
    # The tolerance separates right from wrong: the neighbouring window is far outside it.
    wrong = masked_attention(q.float(), k.float(), v.float(), window + 1, sinks)
    assert (wrong - want).abs().max().item() > 0.2


def test_windowed_gpt2_under_cpu_bf16_autocast_matches_fp32():
    config = scratch_config(
        vocab_size=100, n_layer=2, n_embd=64, n_head=4, n_positions=256, dropout=0.0, bos_token_id=0, eos_token_id=0
    )
    model = new_model(config, seed=0).eval()
    x = torch.randint(1, 100, (2, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x).logits
        apply_windows(model, [16, 8], sinks=2)
        fp32 = model(x).logits
        before = PATH_COUNTS.copy()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x).logits
    assert dict(PATH_COUNTS - before) == {"band": 2}  # both layers windowed and small: the band kernel (in fp32)
    assert bf16.dtype == torch.bfloat16
    err = (bf16.float() - fp32).abs().max().item()
    assert err < 0.03
    assert (fp32 - full).abs().max().item() > 10 * err  # the windows matter far more than bf16 rounding


# ---------------------------------------------------------------------------------------------------------------
# Band kernel (small windows)


def dense_reference_fp64(q, k, v, window, sinks):
    """Independent of lmask's masks: the window rule written out with loops, masked softmax in float64."""
    T = q.shape[-2]
    allowed = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(i + 1):
            allowed[i, j] = i - j < window or j < sinks
    scores = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
    return (probs @ v.double()).transpose(1, 2)


@pytest.mark.parametrize("window", [1, 2, 4, 16, 64])
@pytest.mark.parametrize("sinks", [0, 4])
@pytest.mark.parametrize("B,H,T", [(2, 3, 77), (1, 2, 150)])
def test_band_matches_dense_fp64_reference(window, sinks, B, H, T):
    """Outputs and gradients of q, k, v (fp64: the kernel's plain C++ loop); batch and heads > 1."""
    q, k, v = qkv(B, H, T, seed=window + sinks)
    got = outputs_and_grads(lambda *x: band_attention(*x, window, sinks), q, k, v)
    want = outputs_and_grads(lambda *x: dense_reference_fp64(*x, window, sinks), q, k, v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # Not vacuous: the neighbouring window gives a different output.
    assert (dense_reference_fp64(q, k, v, window + 1, sinks) - want[0]).abs().max().item() > 1e-3


# fp32 takes the AVX2 code for D a multiple of 8 (D = 64 and 32 as compile-time sizes, 24 at run time) and the plain
# loop otherwise (D = 20); windows below 8 and sink keys exercise the groups of 8 keys that do not fill. The
# backward works in tiles of 32 queries: T = 300 ends in a part tile, and 37 sinks span more than one.
@pytest.mark.parametrize(
    "T,window,sinks,D",
    [
        (300, 16, 0, 64),
        (250, 32, 4, 64),
        (300, 2, 1, 64),
        (200, 13, 3, 32),
        (300, 64, 37, 32),
        (200, 9, 2, 24),
        (200, 9, 2, 20),
    ],
)
def test_band_matches_masked_sdpa_fp32(T, window, sinks, D):
    q, k, v = qkv(2, 3, T, D=D, dtype=torch.float32)
    got = outputs_and_grads(lambda *x: band_attention(*x, window, sinks), q, k, v)
    want = outputs_and_grads(lambda *x: dense_reference_fp64(*x, window, sinks).float(), q, k, v)
    for a, b in zip(got, want, strict=True):  # relative too: at w = 2 the gradients reach ~10 (fp32 rounding)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    wrong = dense_reference_fp64(q, k, v, window + 1, sinks)
    assert (wrong.float() - got[0]).abs().max().item() > 1e-3  # the tolerance separates right from wrong


def test_band_short_sequences_and_strided_gradient():
    """T below the window, sinks beyond T, and a transposed incoming gradient."""
    for T, window, sinks in [(1, 1, 0), (3, 16, 4), (5, 2, 9)]:
        q, k, v = qkv(2, 2, T, seed=T)
        got = outputs_and_grads(lambda *x, w=window, s=sinks: band_attention(*x, w, s), q, k, v)
        want = outputs_and_grads(lambda *x, w=window, s=sinks: dense_reference_fp64(*x, w, s), q, k, v)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    q, k, v = qkv(2, 3, 90, seed=9)
    w = torch.randn(2, 3, 90, 8, dtype=torch.float64)
    got = torch.autograd.grad((band_attention(q, k, v, 8, 2).transpose(1, 2) * w).sum(), (q, k, v))
    want = torch.autograd.grad((dense_reference_fp64(q, k, v, 8, 2).transpose(1, 2) * w).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_band_takes_any_input_layout():
    """[B, H, T, D] contiguous, the model's transposed views, and a head dimension that is not contiguous."""
    g = torch.Generator().manual_seed(11)
    base = [torch.randn(2, 64, 3, 40, generator=g) for _ in range(3)]
    views = [x.transpose(1, 2) for x in base]  # the model's layout
    contiguous = [x.contiguous() for x in views]
    strided_d = [x.transpose(1, 2)[..., ::2] for x in base]  # D stride 2
    want = dense_reference_fp64(*views, 8, 1).float()
    torch.testing.assert_close(band_attention(*views, 8, 1), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(band_attention(*contiguous, 8, 1), want, atol=1e-5, rtol=1e-5)
    halves = [x[..., ::2].transpose(1, 2) for x in base]
    torch.testing.assert_close(
        band_attention(*strided_d, 8, 1), dense_reference_fp64(*halves, 8, 1).float(), atol=1e-5, rtol=1e-5
    )


def test_band_bf16_matches_masked_in_fp32():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 300, 4, 32, generator=g).transpose(1, 2).to(torch.bfloat16) for _ in range(3))
    got = band_attention(q, k, v, 16, 4)
    assert got.dtype == torch.bfloat16
    want = masked_attention(q.float(), k.float(), v.float(), 16, 4)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=1e-2)


def at_one_and_two_threads(fn, q, k, v):
    """outputs_and_grads of ``fn`` with torch on 1 thread, then on 2 (the thread count restored after)."""
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(outputs_and_grads(fn, q, k, v))
    finally:
        torch.set_num_threads(threads)
    return results


def test_band_does_not_depend_on_the_thread_count():
    """Threads split (batch, head) and position ranges, never one row's sums: 1 and 2 threads agree to the bit."""
    q, k, v = qkv(2, 4, 700, D=64, dtype=torch.float32, seed=2)
    one, two = at_one_and_two_threads(lambda *x: band_attention(*x, 16, 2), q, k, v)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


# The tiled kernel (GEMM tiles of 64 queries, key blocks of 256): T not a multiple of the tile, windows below,
# between and above the tile and block sizes, full layers (window >= T), head sizes 32, 64 and 24, T below one tile.
@pytest.mark.parametrize(
    "T,window,D",
    [
        (300, 300, 32),
        (1100, 5000, 32),
        (300, 37, 32),
        (700, 130, 64),
        (700, 300, 64),
        (200, 64, 24),
        (40, 40, 32),
        (1, 1, 32),
    ],
)
def test_tiled_matches_fp64_reference(T, window, D):
    q, k, v = qkv(2, 3, T, D=D, dtype=torch.float32, seed=T + window)
    got = outputs_and_grads(lambda *x: tiled_attention(*x, window), q, k, v)
    want = outputs_and_grads(lambda *x: dense_reference_fp64(*x, min(window, T), 0).float(), q, k, v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    if window < T:  # the tolerance separates right from wrong
        assert (dense_reference_fp64(q, k, v, window + 1, 0).float() - got[0]).abs().max().item() > 1e-3


def test_tiled_does_not_depend_on_the_thread_count():
    """Each GEMM runs on one thread (MKL's local setting inside the parallel region): 1 and 2 threads agree to the
    bit."""
    q, k, v = qkv(2, 4, 700, D=32, dtype=torch.float32, seed=4)
    one, two = at_one_and_two_threads(lambda *x: tiled_attention(*x, 700), q, k, v)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


def test_tiled_pairs_counts_the_kernels_tiles():
    """lmask.flops.tiled_pairs (the benchmark's computed pairs) uses the C++ kernel's query tile; hand-counted cases:
    two tiles of 64 at T = 128 score 64 x 64 and 64 x 128 keys full, 64 x 64 and 64 x (128 - 49) at w = 16."""
    match = re.search(r"kQueryTile = (\d+)", band_module.SOURCE.read_text())
    assert match and int(match.group(1)) == TILED_QUERY_TILE == 64
    assert tiled_pairs(None, 128) == 64 * 64 + 64 * 128
    assert tiled_pairs(16, 128) == 64 * 64 + 64 * 79
    assert tiled_pairs(None, 30) == 30 * 30  # one part tile


def test_tiled_takes_full_layers_and_long_windows_on_the_cpu():
    """fp32 on the CPU: full layers and windows above the band kernel's take the tiled kernel; sinks, dropout, fp64
    and a forced path keep the others; forcing tiled where it cannot run raises."""
    q, k, _ = qkv(1, 2, 400, D=32, dtype=torch.float32)
    w = band_module.BAND_MAX_WINDOW
    assert select_path(q, k, None) == "tiled"
    assert select_path(q, k, 400) == "tiled"  # the window covers every key
    assert select_path(q, k, w + 1) == "tiled"
    assert select_path(q, k, w) == "band"
    assert select_path(q, k, w + 1, sinks=4) == "blocked"  # sink keys: not in the tiled kernel
    assert select_path(q, k, None, dropout=0.1) == "causal"  # SDPA applies dropout itself
    assert select_path(q, k, None, backend="blocked") == "causal"  # a forced path keeps SDPA for full layers
    assert select_path(q, k, 16, backend="tiled") == "tiled"
    assert select_path(q.double(), k.double(), None) == "causal"
    with pytest.raises(ValueError, match="tiled"):
        select_path(q, k, 16, backend="tiled", sinks=2)
    with pytest.raises(ValueError, match="tiled"):
        select_path(q.double(), k.double(), 16, backend="tiled")
    before = PATH_COUNTS.copy()
    x = qkv(1, 2, 400, D=32, dtype=torch.float32, seed=5)
    got = windowed_attention(*x, None)
    assert PATH_COUNTS - before == {"tiled": 1}
    torch.testing.assert_close(got, dense_reference_fp64(*x, 400, 0).float(), atol=1e-5, rtol=1e-5)


def test_a_kernel_that_does_not_build_leaves_the_blocked_path(monkeypatch):
    """No compiler (or a failed build): one warning naming the reason, auto takes blocked (and causal SDPA for full
    layers in fp32), a forced band raises."""

    def broken() -> None:
        raise RuntimeError("Ninja is required to load C++ extensions")

    band_module.band_available.cache_clear()
    band_module._tiled_built.cache_clear()
    monkeypatch.setattr(band_module, "_build", broken)
    try:
        q, k, _ = qkv(1, 2, 64)
        with pytest.warns(UserWarning, match="did not build .Ninja is required"):
            assert select_path(q, k, 16) == "blocked"
        assert select_path(q.float(), k.float(), None) == "causal"
        assert select_path(q.float(), k.float(), 16) == "blocked"
        with pytest.raises(RuntimeError, match="did not build"):
            band_attention(q, k, k, 16)
    finally:
        band_module.band_available.cache_clear()
        band_module._tiled_built.cache_clear()


def test_every_checkout_of_one_source_shares_one_build(monkeypatch, tmp_path):
    """The build is named by the source's content, not its path (a test's or an experiment's copy of the repo would
    rebuild for 20 s otherwise); another content gets another build."""
    import torch.utils.cpp_extension as cpp

    calls = []
    monkeypatch.setattr(cpp, "load", lambda **kw: calls.append(kw))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    text = band_module.SOURCE.read_text()
    for checkout, content in (("a", text), ("b", text), ("c", text + "\n// changed\n")):
        source = tmp_path / checkout / "band.cpp"
        source.parent.mkdir()
        source.write_text(content)
        monkeypatch.setattr(band_module, "SOURCE", source)
        band_module._build.cache_clear()
        band_module._build()
    band_module._build.cache_clear()
    a, b, c = calls
    assert a["build_directory"] == b["build_directory"] != c["build_directory"]
    assert a["name"] == b["name"] != c["name"]
    assert Path(a["sources"][0]).read_text() == text and Path(c["sources"][0]).read_text().endswith("// changed\n")
    assert Path(a["sources"][0]).parent == Path(a["build_directory"])
