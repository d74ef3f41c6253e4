"""Data: corpus cleaning and splitting, tokenizer round trip, blocks that never cross a document, one row per
held-out document, offline behaviour, atomic outputs, errors that name the file and the field."""

import importlib.util
import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from lmask.data import (
    EOS,
    MIN_TEST_CHARS,
    code_texts,
    document_blocks,
    download,
    first_blocks,
    hub_reachable,
    load_documents,
    local_gpt2_tokenizer,
    read_text_file,
    split_by_article,
    text_splits,
    tokenize_splits,
    train_bpe,
    unigram_perplexity,
    wiki_markup_to_text,
    wikitext_articles,
)
from lmask.io import DataError, atomic_dir, write_text
from lmask.params import DataParams, TokenizerParams

CODE_PACKAGE = "iniconfig"  # a small pinned package (pytest depends on it): 4 .py files


def package_sources(package: str) -> dict[str, str]:
    """The package's .py files found on disk (not through its wheel metadata), by path under site-packages."""
    root = Path(importlib.util.find_spec(package).submodule_search_locations[0])
    return {f.relative_to(root.parent).as_posix(): f.read_text(encoding="utf-8") for f in root.rglob("*.py")}


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
    docs = [{"title": f"t{i}", "text": "x" * (MIN_TEST_CHARS - 30 + i)} for i in range(60)]  # 30 are long enough
    a = split_by_article(docs, 0.1, 8)
    b = split_by_article(list(reversed(docs)), 0.1, 8)
    assert a == b
    titles = [d["title"] for split in a.values() for d in split]
    assert sorted(titles) == sorted(d["title"] for d in docs)
    assert len(a["test"]) == 8 and all(len(d["text"]) >= MIN_TEST_CHARS for d in a["test"])  # documents, not stubs
    share = sum(len(d["text"]) for d in a["validation"]) / sum(len(d["text"]) for d in docs)
    assert 0.1 <= share < 0.13


def test_wikitext_rows_group_into_articles():
    rows = ["", " = A = ", "", " a text ", " = = Sub = = ", " more ", " = B = ", " b text "]
    docs = wikitext_articles(rows)
    assert [d["title"] for d in docs] == ["A", "B"]
    assert "Sub" in docs[0]["text"] and "b text" in docs[1]["text"]


def test_training_blocks_never_cross_a_document_boundary():
    blocks = document_blocks([[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14]], eos_id=0, context_length=3)
    # doc 1 + EOS = 8 tokens: 2 blocks (tail [7, EOS] dropped); doc 2 + EOS = 3: one block; doc 3 + EOS = 6: two.
    assert blocks.tolist() == [[1, 2, 3], [4, 5, 6], [8, 9, 0], [10, 11, 12], [13, 14, 0]]
    with pytest.raises(DataError, match="context_length=8.*longest: 3"):
        document_blocks([[1, 2]], eos_id=0, context_length=8)


def test_held_out_documents_are_one_padded_row_each():
    rows, lengths = first_blocks([[1, 2, 3, 4, 5], [6, 7]], eos_id=0, context_length=4)
    assert rows.tolist() == [[1, 2, 3, 4], [6, 7, 0, 0]]
    assert lengths.tolist() == [4, 2]


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


def write_corpus(tmp_path: Path, n_articles: int = 30) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    articles = [f" = Title {i} = \n Body {i} " + TEXT * 3 for i in range(n_articles)]  # MIN_TEST_CHARS+ each
    (corpus / "all.txt").write_text("\n".join(articles))
    return corpus


def test_text_source_and_tokenize_split(tmp_path):
    corpus = write_corpus(tmp_path)
    params = DataParams(
        source="text", text_dir=str(corpus), text_files={"train": "all.txt"}, context_length=16, test_documents=4
    )
    counts = download(params, tmp_path / "raw")
    assert sum(counts.values()) == 30 and min(counts.values()) >= 1
    first = json.loads((tmp_path / "raw" / "train.jsonl").read_text().splitlines()[0])
    assert first["title"].startswith("Title")
    stats = tokenize_splits(
        tmp_path / "raw", TokenizerParams(vocab_size=300), 16, CODE_PACKAGE, 2, tmp_path / "tok", tmp_path / "ids"
    )
    assert sorted(p.name for p in (tmp_path / "ids").iterdir()) == [
        "code.lengths.npy",
        "code.npy",
        "stats.json",
        "test.lengths.npy",
        "test.npy",
        "train.npy",
        "validation.npy",
    ]
    blocks = np.load(tmp_path / "ids" / "train.npy")
    assert blocks.shape[1] == 16 and blocks.dtype == np.uint16
    assert stats["train_tokens"] == blocks.size and stats["context_length"] == 16
    assert json.loads((tmp_path / "ids" / "stats.json").read_text()) == stats
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.decode(blocks[0]).startswith(" = Title")
    # The held-out test articles: one row each, their first tokens, and the lengths beside them.
    test, lengths = load_documents(tmp_path / "ids", "test")
    raw_test = [json.loads(line) for line in (tmp_path / "raw" / "test.jsonl").read_text().splitlines()]
    assert len(test) == len(raw_test) == len(stats["test_documents"])
    for row, n, doc in zip(test, lengths, raw_test, strict=True):
        assert doc["text"].startswith(tok.decode(row[:n]))
    # The code domain: 2 source files of the package (of MIN_TEST_CHARS+), one row each, the start of each file.
    code, code_lengths = load_documents(tmp_path / "ids", "code")
    sources = package_sources(CODE_PACKAGE)
    assert len(code) == 2 and stats["code_documents"] == [t for t in stats["code_documents"] if t in sources]
    for row, n, title in zip(code, code_lengths, stats["code_documents"], strict=True):
        assert len(sources[title]) >= MIN_TEST_CHARS and sources[title].startswith(tok.decode(row[:n]))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folders were renamed into place


def test_code_domain_comes_from_the_package_py_files():
    sources = package_sources(CODE_PACKAGE)
    long_enough = {path for path, text in sources.items() if len(text) >= MIN_TEST_CHARS}
    got = code_texts(CODE_PACKAGE, 100)
    assert {d["title"] for d in got} == long_enough and all(d["text"] == sources[d["title"]] for d in got)
    assert code_texts(CODE_PACKAGE, 100) == got  # the same files in the same (hash) order every time
    assert code_texts(CODE_PACKAGE, 1) == got[:1]
    with pytest.raises(DataError, match=r"data\.code_package.*no_such_package_xyz"):
        code_texts("no_such_package_xyz", 3)


@pytest.mark.parametrize("bad_split", ["train", "validation"])
def test_invalid_utf8_names_the_file_and_the_field(tmp_path, bad_split):
    corpus = write_corpus(tmp_path)
    files = {"train": "all.txt", "validation": "all.txt", "test": "all.txt"}
    files[bad_split] = "bad.txt"
    (corpus / "bad.txt").write_bytes(b" = Bad = \n caf\xc3 au lait \xff\n")
    params = DataParams(source="text", text_dir=str(corpus), text_files=files, context_length=16)
    with pytest.raises(DataError) as err:
        download(params, tmp_path / "raw")
    message = str(err.value)
    assert str(corpus / "bad.txt") in message and f"data.text_files.{bad_split}" in message
    assert "UTF-8" in message
    assert not (tmp_path / "raw").exists()
    with pytest.raises(DataError, match=r"data\.text_files\.test"):
        read_text_file(corpus / "missing.txt", "data.text_files.test")


def test_text_splits_keeps_all_three_given_splits(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split in ("train", "validation", "test"):
        (corpus / f"{split}.txt").write_text(f" = {split} one = \n a \n = {split} two = \n b \n")
    files = {split: f"{split}.txt" for split in ("train", "validation", "test")}
    splits = text_splits(DataParams(source="text", text_dir=str(corpus), text_files=files))
    for split in files:
        assert [d["title"] for d in splits[split]] == [f"{split} one", f"{split} two"]


def test_corpus_too_small_leaves_previous_outputs(tmp_path):
    """A split with no document of one block fails naming its raw file; no temp folders, old outputs untouched."""
    raw = tmp_path / "raw"
    raw.mkdir()
    big = [{"title": f"T{i}", "text": f" = T{i} = \n {TEXT}"} for i in range(20)]
    for split, docs in (("train", big), ("validation", [{"title": "x", "text": "tiny"}]), ("test", big[:3])):
        (raw / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    tok_dir, data_dir = tmp_path / "tokenizer", tmp_path / "tokenized"
    for folder in (tok_dir, data_dir):
        folder.mkdir()
        (folder / "marker.txt").write_text(f"previous {folder.name}")
    with pytest.raises(DataError) as err:
        tokenize_splits(raw, TokenizerParams(vocab_size=300), 64, CODE_PACKAGE, 3, tok_dir, data_dir)
    assert str(raw / "validation.jsonl") in str(err.value) and "context_length=64" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "raw",
        "tokenized",
        "tokenizer",
    ]  # no .tokenizer.*/.tokenized.*
    for folder in (tok_dir, data_dir):
        assert [p.name for p in folder.iterdir()] == ["marker.txt"]
        assert (folder / "marker.txt").read_text() == f"previous {folder.name}"


def test_unigram_perplexity_of_uniform_tokens():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 8, size=100_000)
    assert unigram_perplexity(train, rng.integers(0, 8, size=10_000), 8) == pytest.approx(8, rel=0.01)


@pytest.mark.skipif(hub_reachable(), reason="the hub is reachable: the offline error path cannot be exercised")
def test_hf_source_offline_fails_fast_naming_the_field(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"data\.source.*embedded"):
        download(DataParams(source="hf"), tmp_path / "raw")
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "raw").exists()


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    """mkdtemp makes private (0700) folders; a committed output must look like any other file under the umask."""
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "weights.bin").write_bytes(b"x")
        write_text(tmp_path / "metrics.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644
    assert (tmp_path / "metrics.json").read_text() == "{}\n"
    assert (tmp_path / "out" / "weights.bin").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "out"]  # no temp leftovers


def test_atomic_dir_failure_keeps_the_previous_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(tmp_path / "out") as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
