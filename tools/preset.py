"""Apply a preset: merge ``presets/<name>.yaml`` into params.yaml, keeping params.yaml's comments.

    python -m tools.preset gpu             # the original project's GPT-2 / WikiText-103 setup
    python -m tools.preset tiny            # seconds-long smoke run (tests use it)
    python -m tools.preset long --stack    # on top of a preset already applied, on purpose
    python -m tools.preset --reset         # params.yaml as committed (git show HEAD:params.yaml)

Mappings merge key by key; any other value (lists included) replaces the old one. The result is validated
before params.yaml is rewritten (atomically), so a bad preset leaves params.yaml untouched. The presets applied are
recorded in params.yaml's first line, ``# presets applied: tiny``; a second preset is refused unless ``--stack`` is
given. ``--params PATH`` works on another params file (named presets are looked up in PATH's folder/presets/).
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from lmask.io import WriteError, write_text
from lmask.params import ParamsError, params_from_dict
from tools import fail

PROG = "preset"
APPLIED = re.compile(r"# presets applied: (.*)\n?")  # params.yaml's first line, once a preset is applied


class PresetError(ParamsError):
    """A preset that cannot be applied: not found, not YAML, or refused on top of another one."""


def merge_into(base, override) -> None:
    """Merge mapping ``override`` into ``base`` in place: mappings key by key, any other value replaces."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_into(base[key], value)
        else:
            base[key] = value


def applied(text: str) -> list[str]:
    """The presets recorded in a params file's first line (empty if none)."""
    match = APPLIED.match(text)
    return [n.strip() for n in match.group(1).split(",") if n.strip()] if match else []


def _strip_record(text: str) -> str:
    match = APPLIED.match(text)
    return text[match.end() :] if match else text


def load_yaml(yaml: YAML, path: Path, text: str):
    """``text`` (the contents of ``path``) parsed by ``yaml``; bad YAML is a PresetError naming the file and line."""
    try:
        return yaml.load(text)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PresetError(f"{path}: not valid YAML{where}: {problem}") from None


def preset_path(preset: str | Path, params_path: str | Path = "params.yaml") -> Path:
    """A preset's file: a path as given (it has a suffix), else ``presets/<name>.yaml`` beside params_path."""
    path = Path(preset)
    if path.suffix:
        if not path.is_file():
            raise PresetError(f"{path}: no such preset file")
        return path
    folder = Path(params_path).parent / "presets"
    path = folder / f"{preset}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise PresetError(f"no such preset: {preset} ({path} does not exist; presets: {known})")
    return path


def apply_preset(
    preset: str | Path, params_path: str | Path = "params.yaml", *, stack: bool = False, record: bool = True
) -> None:
    """Merge a preset (a name under presets/ or a path) into params_path, atomically.

    Refused (``PresetError``) when params_path already records an applied preset, unless ``stack``. With ``record``
    the preset's name is added to the record line (``record=False``: an override file, merged but not named)."""
    path = preset_path(preset, params_path)
    params_path = Path(params_path)
    try:
        text = params_path.read_text()
    except FileNotFoundError:
        raise PresetError(f"{params_path}: no such params file") from None
    before = applied(text)
    name = str(preset)
    if before and not stack:
        raise PresetError(
            f"{params_path} already has preset {', '.join(before)} applied: add --stack to apply {name} on top of "
            f"it, or restore it first with --reset"
        )
    yaml = YAML()
    yaml.preserve_quotes = True
    params = load_yaml(yaml, params_path, _strip_record(text))
    override = load_yaml(yaml, path, path.read_text())
    if override is None:
        override = {}
    if not isinstance(params, dict):
        raise PresetError(f"{params_path}: not a mapping of params sections")
    if not isinstance(override, dict):
        got = "a list" if isinstance(override, list) else repr(override)
        raise PresetError(f"{path}: a preset must be a mapping of params sections, got {got}")
    merge_into(params, override)
    # Round-trip types are dict subclasses, so the same validator as every stage applies.
    params_from_dict(YAML(typ="safe").load(_dump(yaml, params)))
    names = [*before, name] if record else before
    head = f"# presets applied: {', '.join(names)}\n" if names else ""
    write_text(params_path, head + _dump(yaml, params))


def reset(params_path: str | Path = "params.yaml") -> list[str]:
    """Restore params_path from git's HEAD (atomically); returns the presets it recorded before."""
    params_path = Path(params_path)
    proc = subprocess.run(
        ["git", "-C", str(params_path.parent), "show", f"HEAD:./{params_path.name}"], capture_output=True, text=True
    )
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["git show failed"])[-1]
        raise PresetError(f"{params_path}: cannot restore it from git ({reason})")
    before = applied(params_path.read_text()) if params_path.is_file() else []
    write_text(params_path, proc.stdout)
    return before


def _dump(yaml: YAML, data) -> str:
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.preset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("preset", nargs="?", help="a name under presets/ (gpu, tiny, ...) or a path to a preset yaml")
    p.add_argument("--stack", action="store_true", help="apply it on top of a preset already applied")
    p.add_argument("--reset", action="store_true", help="restore the params file from git (HEAD)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params file (default params.yaml)")
    args = p.parse_args(argv)
    if args.reset == bool(args.preset):
        p.error("give a preset, or --reset (not both)")
    try:
        if args.reset:
            before = reset(args.params)
            print(f"{args.params}: restored from git HEAD" + (f" (undid {', '.join(before)})" if before else ""))
            return 0
        apply_preset(args.preset, args.params, stack=args.stack)
    except PresetError as err:
        fail(PROG, err)
    except ParamsError as err:  # the merged params do not validate: params file untouched
        fail(PROG, f"preset {args.preset}: {err} ({args.params} left as it was)")
    except WriteError as err:
        fail(PROG, err)
    print(f"{args.params}: applied preset {args.preset}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
