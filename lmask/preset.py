"""Apply a preset: merge ``presets/<name>.yaml`` into params.yaml, keeping params.yaml's comments.

    python -m lmask.preset gpu          # the seed's GPT-2 / WikiText-103 setup
    python -m lmask.preset tiny         # seconds-long smoke run (tests use it)

Mappings merge key by key; any other value (lists included) replaces the old one. The result is validated
before params.yaml is rewritten, so a bad preset leaves params.yaml untouched.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from ruamel.yaml import YAML

from lmask.io import write_text
from lmask.params import ParamsError, params_from_dict


def _merge(base, override) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def apply_preset(preset: str | Path, params_path: str | Path = "params.yaml") -> None:
    """Merge a preset (a name under presets/ or a path) into params_path, atomically."""
    path = Path(preset)
    if not path.suffix:
        path = Path(params_path).parent / "presets" / f"{preset}.yaml"
    if not path.is_file():
        raise ParamsError(f"{path}: no such preset")
    yaml = YAML()
    yaml.preserve_quotes = True
    params_path = Path(params_path)
    params = yaml.load(params_path.read_text())
    _merge(params, yaml.load(path.read_text()) or {})
    # Round-trip types are dict subclasses, so the same validator as every stage applies.
    params_from_dict(YAML(typ="safe").load(_dump(yaml, params)))
    write_text(params_path, _dump(yaml, params))


def _dump(yaml: YAML, data) -> str:
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m lmask.preset <name under presets/ | path to a preset yaml>")
    try:
        apply_preset(sys.argv[1])
    except ParamsError as err:
        raise SystemExit(f"error: preset {sys.argv[1]}: {err}") from None
    print(f"params.yaml: applied preset {sys.argv[1]}")
