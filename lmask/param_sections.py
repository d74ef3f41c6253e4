"""The sections of params.yaml: one dataclass per section, with its defaults and the checks that need only itself
(or the context length / layer count it is handed). ``lmask.params`` builds them from the file, resolves the schedules
and runs the checks that span sections. Pure Python: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lmask.backends import ATTENTION_BACKENDS  # paths attention.backend may force (the attention files own it)

DATA_SOURCES = ("embedded", "hf", "text")
TOKENIZER_KINDS = ("bpe", "gpt2")
MODEL_INITS = ("scratch", "pretrained")
POSITION_INITS = ("default", "sinusoidal")
GPT2_INITIALIZER_RANGE = 0.02  # GPT-2's std of the initial weights (GPT2Config.initializer_range)
DEVICES = ("auto", "cpu", "cuda", "mps")
SPLITS = ("train", "validation", "test")


class ParamsError(ValueError):
    """A bad value in params.yaml; the message names the field."""


@dataclass
class DataParams:
    source: str = "embedded"  # embedded | hf | text
    hf_path: str = "Salesforce/wikitext"
    hf_name: str | None = "wikitext-103-raw-v1"
    hf_text_field: str = "text"
    text_dir: str = "corpus"  # source: text reads text_files from here (a DVC dependency of download)
    text_files: dict[str, str] = field(default_factory=dict)  # split -> file name inside text_dir
    validation_fraction: float = 0.05  # embedded/text: share of characters in validation
    test_documents: int = 32  # embedded/text: articles held out for test; also the code domain's file count
    max_train_docs: int | None = None  # cap for quick runs (None = all)
    context_length: int = 1024
    code_package: str = "dvc"  # held-out code domain: .py files of this installed (pinned) package

    def check(self) -> None:
        _choice("data.source", self.source, DATA_SOURCES)
        _positive("data.context_length", self.context_length)
        if not 0 < self.validation_fraction < 0.5:
            raise ParamsError(f"data.validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        _positive("data.test_documents", self.test_documents)
        if self.test_documents > 100_000:
            raise ParamsError(f"data.test_documents must be at most 100000, got {self.test_documents}")
        if self.max_train_docs is not None:
            _positive("data.max_train_docs", self.max_train_docs)
        extra = sorted(set(self.text_files) - set(SPLITS))
        if extra:
            raise ParamsError(f"data.text_files.{extra[0]} is not a split (use {list(SPLITS)})")
        for split, name in self.text_files.items():
            if not isinstance(name, str) or PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
                raise ParamsError(f"data.text_files.{split} must be a file name inside data.text_dir, got {name!r}")
        if self.source == "text":
            if "train" not in self.text_files:
                raise ParamsError("data.text_files.train must name a text file in data.text_dir for source: text")
            for split, name in self.text_files.items():
                if not (Path(self.text_dir) / name).is_file():
                    raise ParamsError(f"data.text_files.{split}: file not found: {Path(self.text_dir) / name}")


MIX_KINDS = ("random", "natural")


@dataclass
class MixParams:
    """Synthetic periodic rows mixed into every training batch (baseline and fine-tuning alike)."""

    fraction: float = 0.25  # share of training rows that are periodic
    kind: str = "natural"  # natural: a segment of the row's own text | random: distinct random ids (only copying pays)
    min_period: int = 32  # a periodic row repeats a segment of this many tokens ...
    max_period: int = 512  # ... up to this many, to fill the context
    # Short copy rows added to every natural-text step (0 = none): distinct random ids repeated with a period in
    # [2, copy_max_period], copy_context tokens each. They keep the copy warm-up's induction heads while natural
    # text is learned (without them natural text overwrote the heads: README); the loss weighs every token alike.
    copy_rows: int = 0
    copy_context: int = 128
    copy_max_period: int = 48
    copy_prefix: bool | float = False  # share of short copy rows that begin with non-repeating ids (CopyPhase.prefix)
    copy_position_offsets: bool = False  # the short copy rows at random positions (CopyPhase.position_offsets)

    def check(self, context: int, vocab_size: int | None = None) -> None:
        if not 0 <= self.fraction <= 1:
            raise ParamsError(f"mix.fraction must be in [0, 1], got {self.fraction}")
        _choice("mix.kind", self.kind, MIX_KINDS)
        _positive("mix.min_period", self.min_period)
        _positive("mix.max_period", self.max_period)
        if self.min_period > self.max_period or self.max_period >= context:
            raise ParamsError(
                f"mix: need min_period <= max_period < data.context_length ({self.min_period}, {self.max_period}, "
                f"{context})"
            )
        if self.kind == "random" and vocab_size is not None:
            _ids_fit("mix.max_period", self.max_period, self.max_period, vocab_size)
        if self.copy_rows < 0:
            raise ParamsError(f"mix.copy_rows must be >= 0, got {self.copy_rows}")
        if self.copy_rows:
            _positive("mix.copy_context", self.copy_context)
            if self.copy_context > context or not 2 <= self.copy_max_period <= self.copy_context // 2:
                raise ParamsError(
                    f"mix: need copy_context <= data.context_length and 2 <= copy_max_period <= copy_context / 2, "
                    f"got {self.copy_context}, {self.copy_max_period}"
                )
        _share("mix.copy_prefix", self.copy_prefix)
        if self.copy_rows and vocab_size is not None:
            _copy_ids_fit(
                "mix.copy_context",
                "mix.copy_max_period",
                self.copy_context,
                self.copy_max_period,
                self.copy_prefix,
                vocab_size,
            )


@dataclass
class CopyPhase:
    """One phase of the copy warm-up: ``steps`` steps of ``batch_size`` rows of ``context`` tokens, each a segment of
    distinct random ids repeated with a period drawn from [copy_warmup.min_period, max_period]."""

    context: int
    steps: int
    batch_size: int
    max_period: int
    # The share of rows (true = all) that begin with 0 to context - 2P distinct ids that never repeat, so the first
    # occurrence sits anywhere in the row: copying is learned only from positions where first occurrences were. All
    # rows prefixed at once broke formed heads; half kept them (README, "Where copying reaches").
    prefix: bool | float = False
    # true: each row's position ids start at a random offset in [0, data.context_length - context] instead of 0, so
    # that the short rows train every position the natural rows use (heads trained at positions 0-127 alone did not
    # copy at others: README, "What teaches the baselines to copy").
    position_offsets: bool = False


@dataclass
class CopyWarmupParams:
    """The copy warm-up: training starts on rows of distinct random ids repeated with a varying period, where only
    copying lowers the loss (lmask.synthetic.copy_rows), in phases of growing context (a curriculum: induction heads
    form far sooner at short contexts, then the longer phase teaches them farther positions). Natural text follows.
    ``phases``: a list of {context, steps, batch_size, max_period[, prefix, position_offsets]}; empty = no warm-up."""

    phases: list[dict[str, int]] = field(default_factory=list)
    min_period: int = 2
    lr: float = 5e-4  # peak; warmup then constant (the main schedule starts after it)
    warmup_steps: int = 100

    @property
    def plan(self) -> list[CopyPhase]:
        return [CopyPhase(**p) for p in self.phases]

    @property
    def steps(self) -> int:
        return sum(p.steps for p in self.plan)

    def phase_at(self, step: int) -> CopyPhase | None:
        """The phase training step ``step`` belongs to, or None once the warm-up is over."""
        for p in self.plan:
            if step < p.steps:
                return p
            step -= p.steps
        return None

    def tokens(self) -> int:
        return sum(p.steps * p.batch_size * p.context for p in self.plan)

    def check(self, section: str, context: int, vocab_size: int | None = None) -> None:
        keys = {"context", "steps", "batch_size", "max_period"}
        for i, phase in enumerate(self.phases):
            where = f"{section}.phases[{i}]"
            if not isinstance(phase, dict) or not keys <= set(phase) <= keys | {"prefix", "position_offsets"}:
                raise ParamsError(
                    f"{where} must be a mapping with {sorted(keys)} and optionally 'prefix' and 'position_offsets', "
                    f"got {phase!r}"
                )
            for name in sorted(keys):
                _positive(f"{where}.{name}", phase[name])
            _share(f"{where}.prefix", phase.get("prefix", False))
            _flag(f"{where}.position_offsets", phase.get("position_offsets", False))
            if phase["context"] > context:
                raise ParamsError(f"{where}.context ({phase['context']}) must be <= data.context_length ({context})")
            if not self.min_period <= phase["max_period"] <= phase["context"] // 2:
                raise ParamsError(
                    f"{where}.max_period must be in [{section}.min_period, context / 2], got {phase['max_period']}"
                )
            if vocab_size is not None:
                _copy_ids_fit(
                    f"{where}.context",
                    f"{where}.max_period",
                    phase["context"],
                    phase["max_period"],
                    phase.get("prefix", False),
                    vocab_size,
                )
        _positive(f"{section}.min_period", self.min_period)
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ParamsError(f"{section}.lr must be > 0 and warmup_steps >= 0, got {self.lr}, {self.warmup_steps}")


@dataclass
class TokenizerParams:
    kind: str = "bpe"  # bpe (trained here) | gpt2 (the real GPT-2 BPE)
    vocab_size: int = 4096

    def check(self) -> None:
        _choice("tokenizer.kind", self.kind, TOKENIZER_KINDS)
        if isinstance(self.vocab_size, bool) or self.vocab_size < 260:
            raise ParamsError(f"tokenizer.vocab_size must be >= 260 (256 bytes + specials), got {self.vocab_size}")


@dataclass
class ModelParams:
    init: str = "scratch"  # scratch | pretrained
    pretrained_name: str = "gpt2"
    n_layer: int = 12
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 1024
    dropout: float = 0.0
    position_init: str = "sinusoidal"  # default (GPT-2's random init) | sinusoidal (scratch only)
    initializer_range: float = GPT2_INITIALIZER_RANGE  # std of the initial weights (scratch only)
    train_positions: bool = True  # false: the position table keeps its init through every training stage

    def check(self) -> None:
        _choice("model.init", self.init, MODEL_INITS)
        _choice("model.position_init", self.position_init, POSITION_INITS)
        for name, most in (("n_layer", 128), ("n_embd", 16384), ("n_head", 256), ("n_positions", 1 << 20)):
            _positive(f"model.{name}", getattr(self, name))
            if getattr(self, name) > most:  # a typo's size (1000 layers) fails here, not after an hour
                raise ParamsError(f"model.{name} must be at most {most}, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ParamsError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if not 0 <= self.dropout < 1:
            raise ParamsError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.initializer_range, bool) or not 0 < self.initializer_range <= 1:
            raise ParamsError(f"model.initializer_range must be in (0, 1], got {self.initializer_range!r}")
        _flag("model.train_positions", self.train_positions)


@dataclass
class AttentionParams:
    backend: str = "auto"  # auto | blocked | flex | masked

    def check(self) -> None:
        _choice("attention.backend", self.backend, ATTENTION_BACKENDS)


@dataclass
class TrainParams:
    steps: int = 150
    batch_size: int = 2  # global batch, in sequences per optimizer step
    micro_batch_size: int = 2  # per device and forward pass; batch_size = micro × devices × accumulation
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 40
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_batches: int = 4
    checkpoint_every: int = 50
    device: str = "auto"  # auto | cpu | cuda | mps
    nproc: int = 1  # processes (DDP under torchrun); 1 = plain python
    copy_warmup: CopyWarmupParams = field(default_factory=CopyWarmupParams)

    def check(self, section: str, context: int = 1 << 30, vocab_size: int | None = None) -> None:
        self.copy_warmup.check(f"{section}.copy_warmup", context, vocab_size)
        if self.copy_warmup.steps >= self.steps:
            raise ParamsError(
                f"{section}.copy_warmup's phases take {self.copy_warmup.steps} of {section}.steps ({self.steps}): "
                "natural text must follow"
            )
        if self.steps > 10_000_000:
            raise ParamsError(f"{section}.steps must be at most 10000000, got {self.steps}")
        for name in ("steps", "batch_size", "micro_batch_size", "eval_every", "eval_batches", "checkpoint_every"):
            _positive(f"{section}.{name}", getattr(self, name))
        _positive(f"{section}.nproc", self.nproc)
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ParamsError(f"{section}.lr must be > 0 and {section}.min_lr in [0, lr], got {self.lr}, {self.min_lr}")
        if self.weight_decay < 0:
            raise ParamsError(f"{section}.weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip <= 0:  # clip_grad_norm_ with max <= 0 zeroes or reverses every gradient
            raise ParamsError(f"{section}.grad_clip must be > 0, got {self.grad_clip}")
        if self.warmup_steps < 0:
            raise ParamsError(f"{section}.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.batch_size % (self.micro_batch_size * self.nproc):
            raise ParamsError(
                f"{section}.batch_size ({self.batch_size}) must be a multiple of "
                f"{section}.micro_batch_size × {section}.nproc ({self.micro_batch_size} × {self.nproc})"
            )
        _choice(f"{section}.device", self.device, DEVICES)


# masked: the fine-tunes start from a trained baseline, at its final learning rate (params.yaml says why).
MASKED_DEFAULTS = {
    "steps": 8,
    "lr": 2e-4,
    "min_lr": 1e-4,
    "warmup_steps": 2,
    "eval_every": 4,
    "eval_batches": 2,
    "checkpoint_every": 4,
}


@dataclass
class EvaluateParams:
    batch_size: int = 4
    max_documents: int | None = None  # documents scored per domain (None = all); each is an interval's unit

    def check(self, context: int) -> None:
        _positive("evaluate.batch_size", self.batch_size)
        if self.max_documents is not None:
            _positive("evaluate.max_documents", self.max_documents)


@dataclass
class CopyParams:
    """Copy gain: the loss drop on a span's second occurrence that its first occurrence buys (lmask.synthetic)."""

    distances: list[int] = field(default_factory=lambda: [8, 32, 128, 512, 960])
    span: int = 8  # tokens per span; the gain is measured on tokens 2..span of the second occurrence
    offset: int = 16  # first occurrence starts here (clear of sink tokens)
    n_sequences: int = 32  # pairs of sequences per distance, scored by every model (paired across models)
    batch_size: int = 8

    def check(self, context: int) -> None:
        for name in ("span", "n_sequences", "batch_size"):
            _positive(f"copy.{name}", getattr(self, name))
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ParamsError(f"copy.offset must be an integer >= 0, got {self.offset!r}")
        if self.span < 2:
            raise ParamsError(f"copy.span must be >= 2 (the first token of a span cannot be copied), got {self.span}")
        if not self.distances:
            raise ParamsError("copy.distances must be a non-empty list of distances")
        for d in self.distances:
            _positive("copy.distances", d)
            if d < self.span:
                raise ParamsError(f"copy.distances: {d} is shorter than copy.span ({self.span}); the copies overlap")
            if self.offset + d + self.span > context:
                raise ParamsError(
                    f"copy.distances: {d} does not fit: copy.offset + distance + copy.span = "
                    f"{self.offset + d + self.span} > data.context_length ({context})"
                )


@dataclass
class GenerationParams:
    n_prompts: int = 32  # test documents long enough give one prompt each (the interval's unit)
    prompt_tokens: int = 960  # long enough that every window of the original project's schedules binds
    new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 50

    def check(self, context: int) -> None:
        for name in ("n_prompts", "prompt_tokens", "new_tokens", "top_k"):
            _positive(f"generation.{name}", getattr(self, name))
        if self.temperature <= 0:
            raise ParamsError(f"generation.temperature must be > 0, got {self.temperature}")
        if self.prompt_tokens + self.new_tokens > context:
            raise ParamsError(
                f"generation.prompt_tokens + generation.new_tokens ({self.prompt_tokens + self.new_tokens}) must be "
                f"<= data.context_length ({context}): the reference continuation comes from one test block"
            )


@dataclass
class AnalysisParams:
    batch_size: int = 1  # test blocks in the analysed batch
    heatmap_layers: list[int] | None = None  # None: first, middle and last layer
    heatmap_tokens: int = 64  # heatmaps show the first N queries x keys of the first block

    def check(self, n_layer: int) -> None:
        _positive("analysis.batch_size", self.batch_size)
        _positive("analysis.heatmap_tokens", self.heatmap_tokens)
        for layer in self.heatmap_layers or []:
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layer:
                raise ParamsError(f"analysis.heatmap_layers: {layer!r} is not a layer index (model.n_layer={n_layer})")

    def layers(self, n_layer: int) -> list[int]:
        return self.heatmap_layers if self.heatmap_layers else sorted({0, n_layer // 2, n_layer - 1})


@dataclass
class ReportParams:
    """What only summarize and report read: changing it reruns those two stages, never an evaluation."""

    title: str = "Layer-wise attention windows in GPT-2"
    max_samples: int = 4  # generation samples shown per model
    confidence: float = 0.95  # of every interval; verdicts use Holm at 1 - confidence within each family
    copy_min_gain: float = 0.05  # nats: the Q1 gate needs a copy gain above this (one-sided, Holm across distances)
    position_buckets: list[int] = field(default_factory=lambda: [64, 256, 512])  # query-position bucket edges

    def check(self, context: int = 1 << 30) -> None:
        if isinstance(self.max_samples, bool) or self.max_samples < 0:
            raise ParamsError(f"report.max_samples must be >= 0, got {self.max_samples}")
        if not 0.5 < self.confidence < 1:
            raise ParamsError(f"report.confidence must be in (0.5, 1), got {self.confidence}")
        if not self.copy_min_gain >= 0:
            raise ParamsError(f"report.copy_min_gain must be a number >= 0 (nats), got {self.copy_min_gain}")
        edges = self.position_buckets
        for e in edges:
            _positive("report.position_buckets", e)
        if edges != sorted(set(edges)) or (edges and edges[-1] >= context - 1):
            raise ParamsError(
                f"report.position_buckets must be increasing edges below data.context_length - 1 ({context - 1}), "
                f"got {edges}"
            )


@dataclass
class BenchmarkParams:
    seq_lens: list[int] = field(default_factory=lambda: [1024, 3072])  # CPU
    gpu_seq_lens: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384])
    fwd_bwd_seq_lens: list[int] | None = field(default_factory=list)  # T that also time fwd+bwd; None = every T
    kernel_windows: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024])
    kernel_seq_lens: list[int] = field(default_factory=lambda: [1024, 3072])  # CPU; on CUDA: gpu_seq_lens
    n_embd: int = 768  # the layer count is model.n_layer (the schedules' windows have one entry per layer)
    n_head: int = 12
    vocab_size: int = 50257
    batch_size: int = 1
    warmup: int = 1  # untimed rounds per T and mode before the timed rounds
    repeats: int = 2  # timed rounds per T and mode; the order alternates between rounds
    kernel_repeats: int = 5  # timed rounds of the one-layer kernel comparison
    band_max_window: int = 256  # the kernel benchmark times the band kernel up to this window (crossover sweep)
    experiment_repeats: int = 6  # timed rounds at the experiment's own dims and context (0 = skip)
    train_rounds: int = 6  # benchmark_train: timed training steps of each side (pipeline, reference)
    device: str = "auto"  # auto | cpu | cuda; CPU threads: the top-level cpu_threads, pinned before torch loads

    def check(self) -> None:
        for name in ("seq_lens", "gpu_seq_lens", "kernel_windows", "kernel_seq_lens"):
            values = getattr(self, name)
            if not values:
                raise ParamsError(f"benchmark.{name} must be a non-empty list of positive integers")
            for v in values:
                _positive(f"benchmark.{name}", v)
        for v in self.fwd_bwd_seq_lens or []:
            _positive("benchmark.fwd_bwd_seq_lens", v)
            if v not in self.seq_lens and v not in self.gpu_seq_lens:
                raise ParamsError(f"benchmark.fwd_bwd_seq_lens: {v} is in neither benchmark.seq_lens nor gpu_seq_lens")
        for name in ("n_embd", "n_head", "vocab_size", "batch_size", "repeats", "kernel_repeats", "band_max_window"):
            _positive(f"benchmark.{name}", getattr(self, name))
        if self.warmup < 0:
            raise ParamsError(f"benchmark.warmup must be an integer >= 0, got {self.warmup!r}")
        if isinstance(self.experiment_repeats, bool) or not isinstance(self.experiment_repeats, int):
            raise ParamsError(f"benchmark.experiment_repeats must be an integer >= 0, got {self.experiment_repeats!r}")
        if self.experiment_repeats < 0:
            raise ParamsError(f"benchmark.experiment_repeats must be an integer >= 0, got {self.experiment_repeats!r}")
        if self.n_embd % self.n_head:
            raise ParamsError(f"benchmark.n_embd ({self.n_embd}) must be divisible by benchmark.n_head ({self.n_head})")
        _choice("benchmark.device", self.device, ("auto", "cpu", "cuda"))


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ParamsError(f"{name} must be one of {list(choices)}, got {value!r}")


def _copy_ids_fit(
    context_name: str, period_name: str, context: int, max_period: int, prefixed: bool | float, vocab_size: int
) -> None:
    """A copy row's ids are distinct (lmask.synthetic.random_periodic): up to context - 1 of them in a prefixed row
    (prefix + period = context - period), max_period in an unprefixed one."""
    if prefixed:
        _ids_fit(context_name, context, context - 1, vocab_size)
    _ids_fit(period_name, max_period, max_period, vocab_size)


def _ids_fit(name: str, value: int, needed: int, vocab_size: int) -> None:
    """``needed`` distinct ids, never id 0 (the end-of-text token), fit the vocabulary."""
    if needed > vocab_size - 1:
        raise ParamsError(f"{name} ({value}) needs {needed} distinct ids, more than the vocabulary ({vocab_size}) has")


def _share(name: str, value: Any) -> None:
    """A share of rows: true (all), false (none), or a number in [0, 1]."""
    if not (isinstance(value, bool) or (isinstance(value, int | float) and 0 <= value <= 1)):
        raise ParamsError(f"{name} must be true, false or a share in [0, 1], got {value!r}")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParamsError(f"{name} must be a positive integer, got {value!r}")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ParamsError(f"{name} must be true or false, got {value!r}")
