"""What made an output, checked where it matters: a checkpoint resumes only if every input its stage declares in
dvc.yaml is unchanged, and a model folder's weights load only if they match the hashes recorded when they were
written.

- ``stage_inputs``: the stage's ``deps`` (code closure, C++ source, data; files and folders by content) and ``params``
  from dvc.yaml, the same set DVC hashes for the stage, plus what DVC cannot see but the bits depend on (the host's
  instruction set, the torch version). Read from dvc.yaml itself, so there is no second hand-kept list to drift.
- ``record_weights`` / ``verify_weights``: SHA-256 of the weight files in a model folder's ``train_info.json``; every
  load checks it, so a corrupt cache object (which ``dvc checkout`` and ``dvc repro`` do not re-hash) cannot reach an
  evaluation or a fine-tune.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from lmask.determinism import host_cpu
from lmask.io import DataError, read_json

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_TEMPLATE = re.compile(r"\$\{([^}]+)\}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path_sha256(path: Path) -> str:
    """A file's SHA-256, or a folder's: over its files' relative paths and hashes (hidden temp entries skipped, as
    .dvcignore skips them); "missing" where nothing is."""
    if path.is_file():
        return file_sha256(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def _lookup(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _resolve(text: str, item: dict[str, Any], params: dict) -> str:
    """dvc.yaml's ``${item.x}`` / ``${key}`` / ``${section.key}`` templating, for one stage instance."""

    def value(match: re.Match) -> str:
        ref = match.group(1).strip()
        if ref.startswith("item."):
            return str(item[ref[5:]])
        if ref in ("key", "item"):
            return str(item[ref])
        return str(_lookup(params, ref))

    return _TEMPLATE.sub(value, text)


def stage_spec(stage: str, root: Path) -> dict:
    try:
        stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise DataError(f"{root / 'dvc.yaml'}: cannot read its stages ({err})") from None
    if stage not in stages:
        raise DataError(f"{root / 'dvc.yaml'}: no stage '{stage}'")
    spec = stages[stage]
    return spec.get("do", spec)  # foreach stages keep their body under "do"


def stage_inputs(
    stage: str, item: dict[str, Any], params: dict, root: Path = Path("."), extra: dict | None = None
) -> dict[str, str]:
    """``{input: hash}`` for one instance of a dvc.yaml stage: each dep by content, each declared param by value,
    and ``extra`` (process facts the bits depend on). ``params`` is params.yaml as parsed YAML."""
    spec = stage_spec(stage, root)
    out: dict[str, str] = {}
    for dep in spec.get("deps", []):
        rel = _resolve(str(dep), item, params)
        out[rel] = path_sha256(root / rel)
    for entry in spec.get("params", []):
        if isinstance(entry, dict):  # {params.yaml: null} (the whole file) or {file: [keys]}
            for keys in entry.values():
                for key in keys or [""]:
                    value = params if key == "" else _lookup(params, _resolve(str(key), item, params))
                    out[f"params:{key or '*'}"] = json.dumps(value, sort_keys=True, default=str)
        else:
            key = _resolve(str(entry), item, params)
            out[f"params:{key}"] = json.dumps(_lookup(params, key), sort_keys=True, default=str)
    out["host isa"] = host_cpu()["isa"]
    for k, v in (extra or {}).items():
        out[k] = str(v)
    return out


def changed_inputs(saved: dict[str, str] | None, now: dict[str, str]) -> list[str]:
    """Inputs whose hash differs between a checkpoint and this run (added and removed included)."""
    if not isinstance(saved, dict):
        return ["no inputs recorded"]
    return sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))


def record_weights(folder: Path) -> dict[str, str]:
    """SHA-256 of each weight file in a model folder (recorded in its train_info.json)."""
    return {name: file_sha256(folder / name) for name in WEIGHT_FILES if (folder / name).is_file()}


def verify_weights(folder: Path) -> None:
    """Raise ``DataError`` unless every weight file matches the hash recorded when lmask wrote the folder. Folders
    without a train_info.json (a hub model, another tool's checkpoint) are not lmask's and are not checked."""
    folder = Path(folder)
    info_path = folder / "train_info.json"
    if not info_path.is_file():
        return
    recorded = read_json(info_path, "model folder").get("weights_sha256")
    fix = "run `python -m tools.remote verify --cache --repair`, then `dvc pull` or `dvc repro`"
    if not isinstance(recorded, dict) or not recorded:
        raise DataError(f"{folder}: no recorded weight hashes in train_info.json (written by older code): {fix}")
    now = record_weights(folder)
    if now != recorded:
        raise DataError(f"{folder}: weights do not match their recorded hash: {fix}")


__all__ = [
    "WEIGHT_FILES",
    "changed_inputs",
    "file_sha256",
    "path_sha256",
    "record_weights",
    "stage_inputs",
    "stage_spec",
    "verify_weights",
]
