"""Evaluate-stage pieces: BLEU / distinct-n, windowed generation, the explicit attention path and its statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmask.analysis import analyse, explicit_weights, weight_stats
from lmask.evaluate import tail_nll, token_nll
from lmask.generation import (
    DEGENERATE_DISTINCT2,
    bleu,
    distinct_n,
    generate_ids,
    generation_report,
    prompts_from_documents,
)
from lmask.model import apply_windows, load_model, new_model, next_token_nll, scratch_config
from lmask.params import AnalysisParams, GenerationParams, ParamsError

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]

WINDOWS = [None, 4, 2, None]


def tiny_gpt2(windows: list[int | None], sinks: int = 0) -> torch.nn.Module:
    config = scratch_config(200, len(windows), 32, 2, 64, 0.0, 0, 0)
    return apply_windows(new_model(config, seed=0), windows, sinks).eval()


def test_bleu_and_distinct_on_known_strings():
    assert bleu(["the cat sat on the mat today"], ["the cat sat on the mat today"]) == pytest.approx(100.0)
    assert bleu(["alpha beta gamma delta"], ["one two three four"]) == pytest.approx(0.0)
    assert 0 < bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) < 100
    assert distinct_n([[1, 2, 1, 2]], 1) == 0.5
    assert distinct_n([[1, 2, 1, 2]], 2) == pytest.approx(2 / 3)
    assert distinct_n([[1, 2, 3], [4, 5, 6]], 2) == 1.0
    assert distinct_n([[1]], 2) == 0.0


def test_prompts_and_references_come_from_long_enough_documents():
    blocks = np.arange(10 * 20).reshape(10, 20)
    lengths = np.array([20, 8, 9, 20, 20, 5, 20, 20, 20, 20])  # documents 1, 2 and 5 are too short for 5 + 4
    cfg = GenerationParams(n_prompts=3, prompt_tokens=5, new_tokens=4)
    prompts, refs, nulls = prompts_from_documents(blocks, lengths, cfg)
    assert prompts.shape == (3, 5) and refs.shape == (3, 4) and nulls.shape == (3, 4)
    idx = [0, 2, 3]  # the first three that hold a prompt and its reference (9 tokens)
    assert np.array_equal(prompts, blocks[idx, :5]) and np.array_equal(refs, blocks[idx, 5:9])
    assert np.array_equal(refs[:, 0], prompts[:, -1] + 1)  # the reference continues the prompt
    # The null: the next chosen document's text in the reference's place (real text that did not follow the prompt)
    assert np.array_equal(nulls, blocks[[2, 3, 0], 5:9])
    with pytest.raises(ParamsError, match=r"generation\.prompt_tokens \+ generation\.new_tokens"):
        GenerationParams(prompt_tokens=60, new_tokens=10).check(64)


@torch.no_grad()
def test_windowed_greedy_generation_matches_full_recompute():
    """Greedy decoding with the windowed KV cache equals argmax of a full forward over the growing sequence."""
    model = tiny_gpt2(WINDOWS, sinks=1)
    prompts = np.random.default_rng(0).integers(1, 200, size=(2, 10))
    got = generate_ids(model, prompts, 6, greedy=True, seed=0)
    x = torch.from_numpy(prompts)
    for _ in range(6):
        x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert np.array_equal(got, x[:, 10:].numpy())
    a = generate_ids(model, prompts, 6, greedy=False, seed=5)
    b = generate_ids(model, prompts, 6, greedy=False, seed=5)
    assert np.array_equal(a, b), "sampling must be reproducible from the seed"


@torch.no_grad()
def test_explicit_path_matches_fast_path_and_respects_windows():
    model = tiny_gpt2(WINDOWS, sinks=1)
    x = torch.randint(1, 200, (2, 24))
    fast = model(x).logits
    with explicit_weights(model):
        slow = model(x[:1]).logits
        corners = [block.attn.lmask_corner for block in model.transformer.h]
    torch.testing.assert_close(slow, fast[:1], atol=1e-4, rtol=1e-4)
    assert model.config._attn_implementation == "lmask"  # restored
    w = corners[2]  # head average of block 0; window 2, one sink: query i sees i-1, i and position 0
    torch.testing.assert_close(w.sum(-1), torch.ones(24))
    i = torch.arange(24)[:, None]
    j = torch.arange(24)[None, :]
    allowed = (j <= i) & ((i - j < 2) | (j < 1))
    assert (w[~allowed] == 0).all()


def test_weight_stats_on_uniform_causal_attention():
    t = 8
    causal = torch.tril(torch.ones(t, t))
    weights = (causal / causal.sum(-1, keepdim=True))[None, None]  # [1, 1, T, T]
    stats = weight_stats(weights)
    expected_entropy = np.mean([math.log(i + 1) for i in range(t)])
    expected_distance = np.mean([i / 2 for i in range(t)])  # mean of 0..i
    assert stats["entropy"][0] == pytest.approx(expected_entropy)
    assert stats["mean_distance"][0] == pytest.approx(expected_distance)
    assert stats["sink_mass"][0] == pytest.approx(np.mean([min(4, i + 1) / (i + 1) for i in range(t)]))


def test_analyse_rows_and_heatmaps():
    model = tiny_gpt2(WINDOWS)
    batch = np.random.default_rng(1).integers(1, 200, size=(2, 20))
    rows, heatmaps = analyse(model, batch, AnalysisParams(batch_size=2, heatmap_tokens=8))
    assert len(rows) == 4 * 2  # layers x heads
    assert sorted(heatmaps) == ["0", "2", "3"]  # first, middle, last
    assert np.array(heatmaps["0"]).shape == (8, 8)
    windowed = [r for r in rows if r["layer"] == 2]
    assert all(r["mean_distance"] <= 1.0 + 1e-6 for r in windowed)  # window 2: distance 0 or 1
    with pytest.raises(ParamsError, match=r"analysis\.heatmap_layers"):
        AnalysisParams(heatmap_layers=[9]).check(n_layer=4)


def test_token_nll_averages_to_the_transformers_loss():
    model = tiny_gpt2(WINDOWS, sinks=1)
    blocks = np.random.default_rng(2).integers(0, 200, size=(5, 33))
    full = np.full(5, 33)
    nll = token_nll(model, blocks, full, batch_size=2, device=CPU)  # batches of 2, 2 and 1
    assert nll.shape == (5, 32) and nll.dtype == np.float32
    with torch.no_grad():
        x = torch.from_numpy(blocks)
        loss = model(x, labels=x).loss.item()
        per_block = [model(x[i : i + 1], labels=x[i : i + 1]).loss.item() for i in range(5)]
    assert float(nll.mean()) == pytest.approx(loss, abs=1e-5)
    np.testing.assert_allclose(nll.mean(1), per_block, atol=1e-5)


def test_next_token_nll_and_its_gradient_equal_cross_entropy():
    """The fused loss (lmask.model._TokenNLL) against torch's cross-entropy on the shifted labels: the same per-label
    values to the bit, the same gradient up to rounding, at ordinary and saturated logits."""
    g = torch.Generator().manual_seed(0)
    for vocab, scale in ((4096, 1.0), (50, 40.0)):
        logits = (torch.randn(2, 33, vocab, generator=g) * scale).requires_grad_()
        x = torch.randint(0, vocab, (2, 33), generator=g)
        weights = torch.randn(2, 32, generator=g)
        got = next_token_nll(logits, x)
        (got_grad,) = torch.autograd.grad((got * weights).sum(), logits)
        want = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, vocab), x[:, 1:].reshape(-1), reduction="none"
        ).view(2, 32)
        (want_grad,) = torch.autograd.grad((want * weights).sum(), logits)
        assert torch.equal(got, want)
        assert torch.equal(got_grad[:, -1], torch.zeros(2, vocab))  # the last position has no label
        torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=1e-5)


def test_tail_nll_equals_the_loss_on_the_tail_labels_alone():
    """The copy probe's score with the LM head on the scored positions only equals transformers' loss with every
    other label ignored (-100), per sequence."""
    model = tiny_gpt2(WINDOWS, sinks=1)
    seqs = np.random.default_rng(4).integers(0, 200, size=(5, 30))
    first_label = 23
    nll = tail_nll(model, seqs, first_label, batch_size=2, device=CPU)  # batches of 2, 2 and 1
    with torch.no_grad():
        for i in range(5):
            x = torch.from_numpy(seqs[i : i + 1])
            labels = x.clone()
            labels[:, :first_label] = -100  # transformers shifts: label t is scored from position t - 1
            assert nll[i] == pytest.approx(model(x, labels=labels).loss.item(), abs=1e-5)


def test_token_nll_scores_each_document_alone_and_pads_with_nan():
    """Rows shorter than the block: the NLL of each document equals the model run on that document alone, and
    positions past it are NaN (never averaged in)."""
    model = tiny_gpt2(WINDOWS, sinks=1)
    blocks = np.random.default_rng(5).integers(1, 200, size=(3, 24))
    lengths = np.array([24, 10, 17])
    blocks[1, 10:] = 0  # padding
    blocks[2, 17:] = 0
    nll = token_nll(model, blocks, lengths, batch_size=3, device=CPU)
    for row, n in zip(nll, lengths, strict=True):
        assert np.isfinite(row[: n - 1]).all() and np.isnan(row[n - 1 :]).all()
    with torch.no_grad():
        for i, n in enumerate(lengths):
            x = torch.from_numpy(blocks[i : i + 1, :n])
            assert float(np.nanmean(nll[i])) == pytest.approx(model(x, labels=x).loss.item(), abs=1e-5)


def test_zero_shot_full_schedule_is_exactly_the_baseline(tmp_path):
    model = tiny_gpt2([None] * 4)
    model.save_pretrained(tmp_path)
    blocks = np.random.default_rng(3).integers(0, 200, size=(3, 40))
    lengths = np.full(3, 40)
    baseline = token_nll(load_model(tmp_path), blocks, lengths, 2, CPU)
    zero_shot = token_nll(apply_windows(load_model(tmp_path), [None] * 4), blocks, lengths, 2, CPU)
    assert np.array_equal(zero_shot, baseline)
    windowed = token_nll(apply_windows(load_model(tmp_path), [2] * 4), blocks, lengths, 2, CPU)
    assert not np.array_equal(windowed, baseline)  # the comparison can tell schedules apart


class IdTokenizer:
    """Decodes token ids to words w<id> (enough for BLEU and the texts)."""

    def decode(self, ids):
        return " ".join(f"w{int(i)}" for i in ids)


def one_hot_gpt2(vocab: int, successor: bool) -> torch.nn.Module:
    """A 1-layer GPT-2 whose residual stream is the current token's one-hot (attention and MLP write nothing).

    successor=True (untied head): greedy continues t, t+1, t+2, ... ; False: ln_f outputs a constant, so greedy
    repeats one token forever.
    """
    config = scratch_config(vocab, 1, vocab, 1, 64, 0.0, 0, 0)
    config.tie_word_embeddings = not successor
    model = new_model(config, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in (model.transformer.h[0].ln_1, model.transformer.h[0].ln_2, model.transformer.ln_f):
            ln.weight.fill_(1.0)
        model.transformer.wte.weight.copy_(torch.eye(vocab))
        if successor:
            model.lm_head.weight.copy_(torch.diag(torch.ones(vocab - 1), -1))  # logit of j reads coordinate j-1
        else:
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias[7] = 1.0  # every position's logits are wte @ e_7: token 7 wins
    return apply_windows(model, [3]).eval()


def test_generation_report_flags_looping_output():
    blocks = np.stack([np.arange(40) + 10 * r for r in range(6)])  # each block counts up by one
    # A near-zero temperature: sampling is (all but) argmax, so what the models would continue is known.
    cfg = GenerationParams(n_prompts=3, prompt_tokens=8, new_tokens=10, temperature=1e-3, top_k=5)
    prompts, refs, nulls = prompts_from_documents(blocks, np.full(6, 40), cfg)

    counting, texts = generation_report(one_hot_gpt2(100, True), IdTokenizer(), prompts, refs, nulls, cfg, seed=0)
    assert texts["sampled"] == texts["references"]  # the successor model continues the count exactly
    assert texts["degenerate"] == [False, False, False] and counting["degenerate_fraction"] == 0.0
    np.testing.assert_allclose(counting["per_prompt_distinct2"], 1.0)
    np.testing.assert_allclose(counting["per_prompt_bleu"], 100.0)
    np.testing.assert_allclose(counting["per_prompt_bleu_null"], 0.0)  # another block's count shares no 4-gram

    looping, texts = generation_report(one_hot_gpt2(100, False), IdTokenizer(), prompts, refs, nulls, cfg, seed=0)
    assert texts["sampled"] == [" ".join(["w7"] * 10)] * 3
    assert texts["degenerate"] == [True, True, True] and looping["degenerate_fraction"] == 1.0
    # One distinct bigram out of nine, below the threshold.
    np.testing.assert_allclose(looping["per_prompt_distinct2"], 1 / 9)
    assert DEGENERATE_DISTINCT2 > 1 / 9
    np.testing.assert_allclose(looping["per_prompt_bleu"], 0.0)


def test_scoring_plan_of_a_schedule(monkeypatch, tmp_path):
    """evaluate_schedule's scoring plan, two baselines x two seeds: every model scores test, repeated text and the
    copy probe (Q1's instruments); fine-tuned runs add the code domain; the first seed of every baseline adds
    generation; only the first run is analysed."""
    import lmask.evaluate as E
    from lmask.params import load_params

    planned = {}

    def fake_evaluate(params, data_dir, first, variants, desc):
        planned.update({name: parts for name, (_, parts) in variants.items()})
        return {name: ({}, {}) for name in variants}, None, [0] * 7

    monkeypatch.setattr(E, "_evaluate", fake_evaluate)
    monkeypatch.setattr(E, "_write", lambda out_dir, out_metrics, results, header: header)
    params = load_params(ROOT / "params.yaml")
    bases = {k: tmp_path / f"b{k}" for k in (0, 1)}
    runs = {(k, s): tmp_path / f"b{k}-s{s}" for k in (0, 1) for s in (0, 1)}
    header = E.evaluate_schedule(params, "half", tmp_path, bases, runs, tmp_path / "m.json", tmp_path / "out")
    assert header["finetune_seeds"] == [0, 1] and header["baseline_seeds"] == [0, 1]
    assert planned == {
        "b0-zs": E.Parts(),
        "b1-zs": E.Parts(),
        "b0-s0": E.Parts(code=True, generation=True, analysis=True),
        "b1-s0": E.Parts(code=True, generation=True),
        "b0-s1": E.Parts(code=True),
        "b1-s1": E.Parts(code=True),
    }
    assert all(p.copy and "repeated" in p.domain_names for p in planned.values())


def test_summary_reads_every_seed_of_a_key_and_only_the_seeds_that_scored_it():
    """ModelFiles.runs: per baseline, the test NLL of both seeds; the code domain (first seed only) of one."""
    from lmask.summary import ModelFiles

    def arr(value):
        return np.full((2, 3), float(value))

    arrays = {
        f"b{k}-s{s}": {"nll_test": arr(10 * k + s), **({"nll_code": arr(100 + k)} if s == 0 else {})}
        for k in (0, 1)
        for s in (0, 1)
    }
    arrays |= {f"b{k}-zs": {"copy_nll": arr(-k)} for k in (0, 1)}
    files = ModelFiles("half", {"baseline_seeds": [0, 1], "finetune_seeds": [0, 1]}, arrays, {})
    assert [[float(a[0, 0]) for a in per] for per in files.runs("nll_test")] == [[0, 1], [10, 11]]
    assert [[float(a[0, 0]) for a in per] for per in files.runs("nll_code")] == [[100], [101]]
    assert [[float(a[0, 0]) for a in per] for per in files.runs("copy_nll@zs")] == [[0], [-1]]
