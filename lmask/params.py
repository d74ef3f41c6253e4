"""params.yaml as one typed tree, validated in full before any stage does real work.

``load_params`` reads the file once and returns ``Params``: a dataclass per section (lmask.param_sections, each with
its own range checks), and ``schedules`` resolved to ``Schedule(windows, sinks)``. Unknown keys, wrong types and
out-of-range values raise ``ParamsError`` naming the field (``schedules.half.end_windw``, ``train.batch_size``); every
cross-field check (windows and sinks against the model and the context, copy distances and generation lengths against
the context, the benchmark's layer count against the model's) runs here too, so a stage never finds a bad value after
an hour of work. Pure Python: no torch import.

    python -m lmask.params            # validate params.yaml and print the resolved schedules
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmask.param_sections import (
    ATTENTION_BACKENDS,
    DATA_SOURCES,
    DEVICES,
    GPT2_INITIALIZER_RANGE,
    MASKED_DEFAULTS,
    MIX_KINDS,
    MODEL_INITS,
    POSITION_INITS,
    SPLITS,
    TOKENIZER_KINDS,
    AnalysisParams,
    AttentionParams,
    BenchmarkParams,
    CopyParams,
    CopyWarmupParams,
    DataParams,
    EvaluateParams,
    GenerationParams,
    MixParams,
    ModelParams,
    ParamsError,
    ReportParams,
    TokenizerParams,
    TrainParams,
)
from lmask.schedule import Windows, describe, layer_windows, schedule_sinks

RESERVED_NAMES = ("baseline",)


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule: one window per layer (None = full attention) and its sink count."""

    name: str
    windows: Windows
    sinks: int

    @property
    def is_full(self) -> bool:
        return all(w is None for w in self.windows)


@dataclass
class Params:
    seed: int = 1337
    baseline_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    finetune_seeds: list[int] = field(default_factory=lambda: [0, 1])
    cpu_threads: int | None = 2  # torch threads in every CPU stage (fixed: results depend on it); None = default
    data: DataParams = field(default_factory=DataParams)
    mix: MixParams = field(default_factory=MixParams)
    tokenizer: TokenizerParams = field(default_factory=TokenizerParams)
    model: ModelParams = field(default_factory=ModelParams)
    attention: AttentionParams = field(default_factory=AttentionParams)
    train: TrainParams = field(default_factory=TrainParams)
    masked: TrainParams = field(default_factory=lambda: TrainParams(**MASKED_DEFAULTS))
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    copy: CopyParams = field(default_factory=CopyParams)
    generation: GenerationParams = field(default_factory=GenerationParams)
    analysis: AnalysisParams = field(default_factory=AnalysisParams)
    report: ReportParams = field(default_factory=ReportParams)
    benchmark: BenchmarkParams = field(default_factory=BenchmarkParams)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    # params.yaml as parsed: the values dvc.yaml's per-stage params lists name (lmask.provenance hashes them)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def context(self) -> int:
        return self.data.context_length

    def schedule(self, name: str) -> Schedule:
        if name not in self.schedules:
            raise ParamsError(f"schedules.{name}: no such schedule in params.yaml (have {', '.join(self.schedules)})")
        return self.schedules[name]

    def check(self) -> None:
        ctx, n_layer = self.context, self.model.n_layer
        for section in (self.data, self.tokenizer, self.model, self.attention):
            section.check()
        self.report.check(ctx)
        self.evaluate.check(ctx)
        self.benchmark.check()
        vocab = self.tokenizer.vocab_size if self.tokenizer.kind == "bpe" else None  # gpt2's 50257 holds any row
        self.mix.check(ctx, vocab)
        self.train.check("train", ctx, vocab)
        self.masked.check("masked", ctx, vocab)
        self.copy.check(ctx)
        self.generation.check(ctx)
        self.analysis.check(n_layer)
        if ctx > self.model.n_positions:
            raise ParamsError(f"data.context_length ({ctx}) must be <= model.n_positions ({self.model.n_positions})")
        if self.model.position_init != "default" and self.model.init != "scratch":
            raise ParamsError("model.position_init applies to model.init: scratch only (pretrained keeps its own)")
        if self.model.initializer_range != GPT2_INITIALIZER_RANGE and self.model.init != "scratch":
            raise ParamsError("model.initializer_range applies to model.init: scratch only (pretrained keeps its own)")
        for key, limit in (("baseline_seeds", 1000), ("finetune_seeds", 1000)):
            seeds = getattr(self, key)
            for s in seeds:
                if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < limit:
                    raise ParamsError(f"{key}: {s!r} is not an integer in [0, {limit})")
            if not seeds or len(set(seeds)) != len(seeds):
                raise ParamsError(f"{key} must be a non-empty list of distinct seeds, got {seeds}")
        for s in self.schedules.values():
            if s.sinks >= ctx:
                raise ParamsError(f"schedules.{s.name}.sinks ({s.sinks}) must be < data.context_length ({ctx})")


SECTIONS: dict[str, type] = {
    "data": DataParams,
    "mix": MixParams,
    "tokenizer": TokenizerParams,
    "model": ModelParams,
    "attention": AttentionParams,
    "train": TrainParams,
    "masked": TrainParams,
    "evaluate": EvaluateParams,
    "copy": CopyParams,
    "generation": GenerationParams,
    "analysis": AnalysisParams,
    "report": ReportParams,
    "benchmark": BenchmarkParams,
}


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
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    return isinstance(value, tp)


def section_from_dict(cls: type, raw: Any, section: str) -> Any:
    """Build dataclass ``cls`` from a params mapping; unknown keys and wrong types name the field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{section} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    nested = {}
    for key, value in raw.items():
        if key not in fields:
            raise ParamsError(f"{section}.{key} is not a known parameter (known: {', '.join(sorted(fields))})")
        if dataclasses.is_dataclass(hints[key]):  # a sub-section, e.g. train.copy_warmup
            nested[key] = section_from_dict(hints[key], value, f"{section}.{key}")
            continue
        if _matches(value, float) and _matches(1.0, hints[key]):
            _finite(f"{section}.{key}", value)
        elif isinstance(value, str) and _matches(1.0, hints[key]):
            raise ParamsError(f"{section}.{key} must be a number, got the string {value!r}{_yaml11_hint(value)}")
        if not _matches(value, hints[key]):
            raise ParamsError(f"{section}.{key} must be {_type_name(hints[key])}, got {value!r}")
    plain = {k: float(v) if hints[k] is float else v for k, v in raw.items() if k not in nested}
    return cls(**plain, **nested)


def _finite(name: str, value: float) -> None:
    # YAML's .nan and .inf pass every `x > 0` style range check (NaN compares false), then crash torch mid-run.
    if not math.isfinite(value):
        raise ParamsError(f"{name} must be a finite number, got {value}")


def _yaml11_hint(text: str) -> str:
    """Why a number came out a string: PyYAML follows YAML 1.1, where 1e6 and 1.0e6 are not floats."""
    match = re.fullmatch(r"([-+]?)(\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)", text.strip())
    if not match:
        return ""
    sign, whole, frac, exp_sign, exp = match.groups()
    fixed = f"{sign}{whole}.{frac or '0'}e{exp_sign or '+'}{exp}"
    return f" (YAML 1.1 needs a dot and a signed exponent: write {fixed})"


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def resolve_schedules(raw: Any, n_layer: int) -> dict[str, Schedule]:
    """Every schedule spec resolved once to (windows, sinks); names checked (they become paths and stage names)."""
    if not isinstance(raw, dict) or not raw:
        raise ParamsError("schedules must be a non-empty mapping of name -> schedule spec")
    out = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise ParamsError(f"schedules.{name}: names must be letters, digits or '_' (they become paths)")
        if name in RESERVED_NAMES:
            raise ParamsError(f"schedules.{name}: '{name}' is reserved for the unmasked model")
        where = f"schedules.{name}"
        try:
            out[name] = Schedule(name, layer_windows(spec, n_layer, where), schedule_sinks(spec, where))
        except ParamsError:
            raise
        except ValueError as err:
            raise ParamsError(str(err)) from None
    return out


def params_from_dict(raw: Any) -> Params:
    """Validate a params.yaml mapping and return typed Params."""
    if not isinstance(raw, dict):
        raise ParamsError("params.yaml must be a mapping of sections")
    known = set(SECTIONS) | {"seed", "baseline_seeds", "finetune_seeds", "cpu_threads", "schedules"}
    for key in raw:
        if key not in known:
            raise ParamsError(f"{key} is not a known section (known: {', '.join(sorted(known))})")
    seed = raw.get("seed", 1337)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ParamsError(f"seed must be an integer in [0, 2**31) (numpy's seeds are non-negative), got {seed!r}")
    defaults, seed_lists = Params(), {}
    for key in ("baseline_seeds", "finetune_seeds"):
        seed_lists[key] = raw.get(key, getattr(defaults, key))
        if not isinstance(seed_lists[key], list):
            raise ParamsError(f"{key} must be a list of integers, got {seed_lists[key]!r}")
    sections = {name: section_from_dict(cls, raw.get(name), name) for name, cls in SECTIONS.items()}
    sections["model"].check()  # its bounds first: the schedules are resolved against n_layer
    threads = raw.get("cpu_threads", 2)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024):
        raise ParamsError(f"cpu_threads must be an integer in [1, 1024] or null, got {threads!r}")
    params = Params(
        seed=seed,
        **seed_lists,
        cpu_threads=threads,
        schedules=resolve_schedules(raw.get("schedules"), sections["model"].n_layer),
        raw=raw,
        **sections,
    )
    params.check()
    return params


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last silently; DVC
    refuses the file), so a duplicated key fails here with its name instead of at `dvc repro`."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ParamsError(f"'{key}' appears twice in one mapping (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (every stage calls this first)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return params_from_dict(raw or {})


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m lmask.params", description="Validate a params file and print each schedule's windows."
    )
    p.add_argument("params", nargs="?", default="params.yaml", help="the params file (default params.yaml)")
    try:
        params = load_params(p.parse_args(argv).params)
    except ParamsError as err:
        raise SystemExit(f"params.yaml: {err}") from None
    resolved = {n: (s.windows, s.sinks) for n, s in params.schedules.items()}
    print(describe(resolved, params.context))


__all__ = [  # the sections are defined in lmask.param_sections; import them from here
    "ATTENTION_BACKENDS",
    "DATA_SOURCES",
    "DEVICES",
    "MASKED_DEFAULTS",
    "MIX_KINDS",
    "MODEL_INITS",
    "POSITION_INITS",
    "RESERVED_NAMES",
    "SECTIONS",
    "SPLITS",
    "TOKENIZER_KINDS",
    "AnalysisParams",
    "AttentionParams",
    "BenchmarkParams",
    "CopyParams",
    "CopyWarmupParams",
    "DataParams",
    "EvaluateParams",
    "GenerationParams",
    "MixParams",
    "ModelParams",
    "Params",
    "ParamsError",
    "ReportParams",
    "Schedule",
    "TokenizerParams",
    "TrainParams",
    "load_params",
    "params_from_dict",
    "resolve_schedules",
    "section_from_dict",
]


if __name__ == "__main__":
    main()
