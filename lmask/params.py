"""params.yaml, read into dataclasses and validated before any stage does real work.

Every section is a dataclass; unknown keys, wrong types and out-of-range values raise ``ValueError`` naming the
field (``train.lr``, ``schedules.half.end_windw``), so a typo fails in a second instead of after an hour.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmask.schedule import validate_schedules

DATA_SOURCES = ("embedded", "hf", "text")
TOKENIZER_KINDS = ("bpe", "gpt2")
MODEL_INITS = ("scratch", "pretrained")
BACKENDS = ("auto", "blocked", "flex", "masked")
DEVICES = ("auto", "cpu", "cuda", "mps")
SPLITS = ("train", "validation", "test")


@dataclass
class DataParams:
    source: str = "embedded"  # embedded | hf | text
    hf_path: str = "Salesforce/wikitext"
    hf_name: str | None = "wikitext-103-raw-v1"
    hf_text_field: str = "text"
    text_files: dict[str, str] = field(default_factory=dict)  # split -> path, for source: text
    validation_fraction: float = 0.05  # embedded/text: share of characters per held-out split
    test_fraction: float = 0.05
    max_train_docs: int | None = None  # cap for quick runs (None = all)
    context_length: int = 256

    def check(self) -> None:
        _choice("data.source", self.source, DATA_SOURCES)
        _positive("data.context_length", self.context_length)
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 < value < 0.5:
                raise ValueError(f"data.{name} must be in (0, 0.5), got {value}")
        if self.source == "text":
            missing = [s for s in SPLITS if s not in self.text_files]
            extra = sorted(set(self.text_files) - set(SPLITS))
            if extra:
                raise ValueError(f"data.text_files.{extra[0]} is not a split (use {list(SPLITS)})")
            if len(missing) == 3:
                raise ValueError("data.text_files must map at least 'train' to a text file for source: text")
            for split, path in self.text_files.items():
                if not Path(path).is_file():
                    raise ValueError(f"data.text_files.{split}: file not found: {path}")
        if self.max_train_docs is not None:
            _positive("data.max_train_docs", self.max_train_docs)


@dataclass
class TokenizerParams:
    kind: str = "bpe"  # bpe (trained here) | gpt2 (the real GPT-2 BPE)
    vocab_size: int = 4096

    def check(self) -> None:
        _choice("tokenizer.kind", self.kind, TOKENIZER_KINDS)
        if self.vocab_size < 260:
            raise ValueError(f"tokenizer.vocab_size must be >= 260 (256 bytes + specials), got {self.vocab_size}")


@dataclass
class ModelParams:
    init: str = "scratch"  # scratch | pretrained
    pretrained_name: str = "gpt2"
    n_layer: int = 12
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    dropout: float = 0.0

    def check(self) -> None:
        _choice("model.init", self.init, MODEL_INITS)
        for name in ("n_layer", "n_embd", "n_head", "n_positions"):
            _positive(f"model.{name}", getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class AttentionParams:
    backend: str = "auto"  # auto | blocked | flex | masked

    def check(self) -> None:
        _choice("attention.backend", self.backend, BACKENDS)


@dataclass
class TrainParams:
    steps: int = 400
    batch_size: int = 16  # global batch, in sequences per optimizer step
    micro_batch_size: int = 16  # per device and forward pass; batch_size = micro × devices × accumulation
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 40
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 50
    device: str = "auto"  # auto | cpu | cuda | mps
    nproc: int = 1  # processes for torchrun (DDP); 1 = plain python

    def check(self, section: str = "train") -> None:
        for name in ("steps", "batch_size", "micro_batch_size", "eval_every", "eval_batches", "checkpoint_every"):
            _positive(f"{section}.{name}", getattr(self, name))
        _positive(f"{section}.nproc", self.nproc)
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"{section}.lr must be > 0 and {section}.min_lr in [0, lr]")
        if self.warmup_steps < 0:
            raise ValueError(f"{section}.warmup_steps must be >= 0")
        if self.batch_size % (self.micro_batch_size * self.nproc):
            raise ValueError(
                f"{section}.batch_size ({self.batch_size}) must be a multiple of "
                f"{section}.micro_batch_size × {section}.nproc ({self.micro_batch_size} × {self.nproc})"
            )
        _choice(f"{section}.device", self.device, DEVICES)


@dataclass
class EvaluateParams:
    max_batches: int | None = None  # cap on test/validation blocks (None = all)
    batch_size: int = 16

    def check(self) -> None:
        _positive("evaluate.batch_size", self.batch_size)
        if self.max_batches is not None:
            _positive("evaluate.max_batches", self.max_batches)


@dataclass
class Params:
    seed: int = 1337
    data: DataParams = field(default_factory=DataParams)
    tokenizer: TokenizerParams = field(default_factory=TokenizerParams)
    model: ModelParams = field(default_factory=ModelParams)
    attention: AttentionParams = field(default_factory=AttentionParams)
    train: TrainParams = field(default_factory=TrainParams)
    masked: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    schedules: dict[str, dict] = field(default_factory=dict)
    # Sections owned by other modules (benchmark, report, ...) are validated by them; kept raw here.
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        for section in (self.data, self.tokenizer, self.model, self.attention, self.evaluate):
            section.check()
        self.train.check("train")
        self.masked.check("masked")
        if self.data.context_length > self.model.n_positions:
            raise ValueError(
                f"data.context_length ({self.data.context_length}) must be <= model.n_positions "
                f"({self.model.n_positions})"
            )
        validate_schedules(self.schedules, self.model.n_layer)


# Top-level sections that other modules validate themselves.
EXTRA_SECTIONS = ("benchmark", "report", "probe", "generation", "analysis")


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is dict:
        return isinstance(value, dict)
    if origin is list:
        return isinstance(value, list)
    return isinstance(value, tp)


def section_from_dict(cls: type, raw: Any, section: str) -> Any:
    """Build dataclass ``cls`` from a params mapping; unknown keys and wrong types name the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{section} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        if key not in fields:
            raise ValueError(f"{section}.{key} is not a known parameter (known: {', '.join(sorted(fields))})")
        if not _matches(value, hints[key]):
            raise ValueError(f"{section}.{key} must be {hints[key]}, got {value!r}")
    return cls(**{k: float(v) if hints[k] is float else v for k, v in raw.items()})


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Validate a params.yaml mapping and return typed Params."""
    if not isinstance(raw, dict):
        raise ValueError("params.yaml must be a mapping")
    sections = {
        "data": DataParams,
        "tokenizer": TokenizerParams,
        "model": ModelParams,
        "attention": AttentionParams,
        "train": TrainParams,
        "masked": TrainParams,
        "evaluate": EvaluateParams,
    }
    known = set(sections) | {"seed", "schedules"} | set(EXTRA_SECTIONS)
    for key in raw:
        if key not in known:
            raise ValueError(f"params.yaml: unknown top-level section '{key}' (known: {', '.join(sorted(known))})")
    seed = raw.get("seed", 1337)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    params = Params(
        seed=seed,
        schedules=raw.get("schedules") or {},
        extra={k: raw[k] for k in EXTRA_SECTIONS if k in raw},
        **{name: section_from_dict(cls, raw.get(name), name) for name, cls in sections.items()},
    )
    params.check()
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (every stage calls this first)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found (run from the repository root)")
    with path.open() as f:
        raw = yaml.safe_load(f)
    return params_from_dict(raw or {})
