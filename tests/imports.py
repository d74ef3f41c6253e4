"""Import closure of a module inside this repository (ast walk; imports inside functions count, since they run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lmask", "stages")


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
        files.add(path.relative_to(root).as_posix())
        todo.extend(_imported(path))
    return files
