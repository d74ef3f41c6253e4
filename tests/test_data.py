"""Data: corpus cleaning and splitting, tokenizer round trip, blocks with EOS, offline behaviour."""

import json
import os
import stat
import time

import numpy as np
import pytest
from transformers import AutoTokenizer

from lmask.data import (
    EOS,
    atomic_dir,
    commit_dir,
    download,
    hub_reachable,
    local_gpt2_tokenizer,
    split_by_article,
    to_blocks,
    tokenize_splits,
    train_bpe,
    unigram_perplexity,
    wiki_markup_to_text,
    wikitext_articles,
    write_text,
)
from lmask.params import DataParams, TokenizerParams

TEXT = "The quick brown fox jumps over the lazy dog. " * 20


def test_wiki_markup_becomes_wikitext_style():
    text = wiki_markup_to_text("Fox", "'''Fox''' is an ''animal''.\n\n==Habitat==\nForests.\n===Europe===\nYes.")
    assert text.splitlines() == [
        " = Fox = ",
        "Fox is an animal.",
        " = = Habitat = = ",
        "Forests.",
        " = = = Europe = = = ",
        "Yes.",
    ]


def test_split_by_article_is_deterministic_and_disjoint():
    docs = [{"title": f"t{i}", "text": "x" * (100 + i)} for i in range(60)]
    a = split_by_article(docs, 0.1, 0.1)
    b = split_by_article(list(reversed(docs)), 0.1, 0.1)
    assert a == b
    titles = [d["title"] for split in a.values() for d in split]
    assert sorted(titles) == sorted(d["title"] for d in docs)
    for split in ("validation", "test"):
        share = sum(len(d["text"]) for d in a[split]) / sum(len(d["text"]) for d in docs)
        assert 0.1 <= share < 0.13


def test_wikitext_rows_group_into_articles():
    rows = ["", " = A = ", "", " a text ", " = = Sub = = ", " more ", " = B = ", " b text "]
    docs = wikitext_articles(rows)
    assert [d["title"] for d in docs] == ["A", "B"]
    assert "Sub" in docs[0]["text"] and "b text" in docs[1]["text"]


def test_to_blocks_puts_eos_after_every_document():
    blocks = to_blocks([[1, 2, 3], [4, 5]], eos_id=0, context_length=3)
    assert blocks.tolist() == [[1, 2, 3], [0, 4, 5]]  # the final EOS is the dropped remainder
    with pytest.raises(ValueError, match="context_length=8"):
        to_blocks([[1, 2]], eos_id=0, context_length=8)


def test_bpe_tokenizer_round_trip(tmp_path):
    tok = train_bpe([TEXT, "Anarchism is a political philosophy."], vocab_size=300)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = loaded("The lazy fox. Ünïcode ✓")["input_ids"]
    assert loaded.decode(ids) == "The lazy fox. Ünïcode ✓"
    assert loaded.eos_token == EOS and loaded.convert_tokens_to_ids(EOS) == 0
    assert 257 < len(loaded) <= 300  # 256 bytes + EOS + merges (a tiny corpus may not fill the budget)


def test_local_gpt2_tokenizer_is_the_real_one(tmp_path):
    tok = local_gpt2_tokenizer(tmp_path)
    assert len(tok) == 50257
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.eos_token_id == 50256


def test_text_source_and_tokenize_split(tmp_path):
    articles = [f" = Title {i} = \n Body {i} " + TEXT for i in range(30)]
    (tmp_path / "all.txt").write_text("\n".join(articles))
    params = DataParams(source="text", text_files={"train": str(tmp_path / "all.txt")}, context_length=16)
    counts = download(params, tmp_path / "raw")
    assert sum(counts.values()) == 30 and min(counts.values()) >= 1
    first = json.loads((tmp_path / "raw" / "train.jsonl").read_text().splitlines()[0])
    assert first["title"].startswith("Title")
    stats = tokenize_splits(tmp_path / "raw", TokenizerParams(vocab_size=300), 16, tmp_path / "tok", tmp_path / "ids")
    blocks = np.load(tmp_path / "ids" / "train.npy")
    assert blocks.shape[1] == 16 and blocks.dtype == np.uint16
    assert stats["train_tokens"] == blocks.size
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.decode(blocks[0]).startswith(" = Title")
    assert (blocks == tok.eos_token_id).any()
    assert not list(tmp_path.glob(".*"))  # temp folders were renamed into place


def test_unigram_perplexity_of_uniform_tokens():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 8, size=100_000)
    assert unigram_perplexity(train, rng.integers(0, 8, size=10_000), 8) == pytest.approx(8, rel=0.01)


@pytest.mark.skipif(hub_reachable(), reason="the hub is reachable: the offline error path cannot be exercised")
def test_hf_source_offline_fails_fast_naming_the_field(tmp_path):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"data\.source.*embedded"):
        download(DataParams(source="hf"), tmp_path / "raw")
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "raw").exists()


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    """mkdtemp makes private (0700) folders; a committed output must look like any other file under the umask."""
    old = os.umask(0o022)
    try:
        tmp = atomic_dir(tmp_path / "out")
        (tmp / "weights.bin").write_bytes(b"x")
        commit_dir(tmp, tmp_path / "out")
        write_text(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert (tmp_path / "metrics.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "out"]  # no temp leftovers
