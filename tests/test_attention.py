"""Every attention path equals the explicit-mask reference, outputs and gradients; the dispatcher picks the
sparse path only where it is exact."""

import pytest
import torch
import torch.nn.functional as F

from lmask import attention as A
from lmask.attention import (
    blocked_attention,
    masked_attention,
    select_path,
    window_mask,
    windowed_attention,
)


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
        monkeypatch.setattr(A, "_cpu_slabs_supported", lambda query: False)
    return request.param


@pytest.mark.parametrize("B,H,T,window,sinks", CASES)
@pytest.mark.parametrize("block", [None, 4, 16])
def test_blocked_matches_reference_fp64(B, H, T, window, sinks, block, middle_path):
    q, k, v = qkv(B, H, T)
    got = outputs_and_grads(lambda *x: blocked_attention(*x, window, sinks, block=block), q, k, v)
    want = outputs_and_grads(lambda *x: reference(*x, window, sinks), q, k, v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("T,window,sinks", [(1000, 64, 0), (777, 256, 4), (1500, 1024, 1)])
def test_blocked_matches_masked_sdpa_fp32(T, window, sinks, middle_path):
    """The issue's tolerance: fp32 max abs diff <= 1e-5 against masked SDPA, outputs and grads of q, k, v."""
    q, k, v = qkv(1, 4, T, D=64, dtype=torch.float32)
    got = outputs_and_grads(lambda *x: blocked_attention(*x, window, sinks), q, k, v)
    want = outputs_and_grads(lambda *x: masked_attention(*x, window, sinks), q, k, v)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() <= 1e-5


@pytest.mark.parametrize("backend", ["auto", "blocked", "flex", "masked"])
@pytest.mark.parametrize("window", [None, 1, 7, 50])
def test_every_backend_matches_reference(backend, window):
    q, k, v = qkv(2, 3, 50, seed=3)
    got = outputs_and_grads(lambda *x: windowed_attention(*x, window, 2, backend=backend), q, k, v)
    want = outputs_and_grads(lambda *x: reference(*x, window, 2), q, k, v)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


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
    assert select_path(q, k, 16) == "blocked"  # windowed prefill on CPU
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
    assert select_path(q, k, 16, backend="flex") == "flex"  # runs flex_windowed_attention -> blocked on CPU
    assert not A.flex_available(q.device)
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

    real_backward = A._CPU_FLASH_BACKWARD
    monkeypatch.setattr(A.F, "scaled_dot_product_attention", spy(F.scaled_dot_product_attention))
    monkeypatch.setattr(A, "_CPU_FLASH", spy(A._CPU_FLASH))
    monkeypatch.setattr(A, "_CPU_FLASH_BACKWARD", spy_backward)
    q, k, v = qkv(1, 2, 1000, dtype=torch.float32)
    out = blocked_attention(q, k, v, 64, sinks=4)
    middle = "scaled_dot_product_attention" if middle_path == "generic" else A._CPU_FLASH.__name__
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
    mask = flex.create_mask(A.flex_mask_mod(window, sinks), None, None, 48, 48, device="cpu")
    assert torch.equal(mask[0, 0], window_mask(48, 48, window, sinks))


def test_blocked_backward_takes_a_strided_gradient(middle_path):
    """The gradient reaching the kernel need not be contiguous (here it is a transpose)."""
    q, k, v = qkv(2, 3, 150, seed=8)
    w = torch.randn(2, 3, 150, 8, dtype=torch.float64)  # [B, H, T, D]: the loss sees the output transposed
    got = torch.autograd.grad((blocked_attention(q, k, v, 20, 1).transpose(1, 2) * w).sum(), (q, k, v))
    want = torch.autograd.grad((reference(q, k, v, 20, 1).transpose(1, 2) * w).sum(), (q, k, v))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
