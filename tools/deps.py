"""dvc.yaml's code deps, generated: each stage depends on exactly the repo files its entry point can run.

    python -m tools.deps            # check: exit 1 naming each stage whose deps differ from its import closure
    python -m tools.deps --write    # rewrite those deps in dvc.yaml (comments and other deps kept)

The closure is an ast walk from ``python -m stages.<name>``; imports inside functions count, since they run. A
module that compiles native code brings its source with it (``NATIVE_SOURCES``).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

from tools import fail

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lmask", "stages")
# Non-Python files a module builds and runs: lmask.band compiles its kernel from this source at run time.
NATIVE_SOURCES = {"lmask/band.py": ("lmask/csrc/band.cpp",)}


def module_file(module: str, root: Path = ROOT) -> Path | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from lmask import attention`
    return names


def closure(module: str, root: Path = ROOT) -> set[str]:
    """Repo files (relative, posix) that running ``python -m module`` can execute: the module, what it imports,
    transitively, and the ``__init__.py`` of every package on the way."""
    todo, seen = [module], set()
    files: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):  # importing a.b.c runs a/__init__ and a/b/__init__
            todo.append(".".join(parts[:i]))
        path = module_file(name, root)
        if path is None:
            continue
        rel = path.relative_to(root).as_posix()
        files.update((rel, *NATIVE_SOURCES.get(rel, ())))
        todo.extend(_imported(path))
    return files


def _is_code(dep: str) -> bool:
    return dep.split("/", 1)[0] in PACKAGES and dep.endswith((".py", ".cpp"))


def sync(dvc_yaml: Path, root: Path = ROOT, write: bool = False) -> list[str]:
    """Stages whose code deps differ from their import closure; with ``write``, fix them in place."""
    from ruamel.yaml import YAML

    from lmask.io import write_text

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(dvc_yaml.read_text())
    stale = []
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        match = re.search(r"python -m (stages\.\w+)", body["cmd"])
        if not match:
            continue
        deps = body.setdefault("deps", [])
        want = sorted(closure(match.group(1), root), key=lambda f: (not f.startswith("stages/"), f))
        have = [d for d in deps if isinstance(d, str) and _is_code(d)]
        if have != want:
            stale.append(name)
            keep = [d for d in deps if not (isinstance(d, str) and _is_code(d))]
            deps.clear()
            deps.extend([*keep, *want])
    if write and stale:
        import io

        buf = io.StringIO()
        yaml.dump(doc, buf)
        write_text(dvc_yaml, buf.getvalue())
    return stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.deps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--write", action="store_true", help="rewrite dvc.yaml's code deps")
    p.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = p.parse_args(argv)
    from ruamel.yaml.error import YAMLError

    from lmask.io import WriteError

    try:
        stale = sync(args.dvc_yaml, write=args.write)
    except FileNotFoundError as err:
        fail("deps", f"{err.filename}: file not found")
    except (YAMLError, KeyError, TypeError, AttributeError) as err:
        fail("deps", f"{args.dvc_yaml}: not a dvc.yaml with stages ({type(err).__name__}: {err})")
    except (SyntaxError, WriteError) as err:  # a module that does not parse; dvc.yaml not writable
        fail("deps", err)
    if not stale:
        print(f"{args.dvc_yaml}: every stage's code deps equal its import closure")
        return 0
    verb = "rewrote" if args.write else "stale (run `python -m tools.deps --write`)"
    print(f"{args.dvc_yaml}: {verb}: {', '.join(stale)}")
    return 0 if args.write else 1


if __name__ == "__main__":
    sys.exit(main())
