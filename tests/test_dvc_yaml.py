"""dvc.yaml cannot go stale: every stage depends on every repo file its entry point can run, paths are declared in
dvc.yaml (not in lmask/), and the params each stage lists exist."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from tools.deps import ROOT, _imported, closure

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def stage_bodies() -> dict[str, dict]:
    """Each stage's definition (the ``do`` body of foreach, the body of matrix stages), by name."""
    out = {}
    for name, stage in DVC["stages"].items():
        out[name] = stage.get("do", stage)
    return out


def entry_module(cmd: str) -> str:
    match = re.search(r"python -m (stages\.\w+)", cmd)
    assert match, f"stage command does not run `python -m stages.<name>`: {cmd}"
    return match.group(1)


def plain(entries: list) -> set[str]:
    return {e if isinstance(e, str) else next(iter(e)) for e in entries or []}


@pytest.mark.parametrize("name", list(stage_bodies()))
def test_deps_cover_the_code_the_stage_imports(name):
    body = stage_bodies()[name]
    module = entry_module(body["cmd"])
    needed = closure(module)
    missing = sorted(needed - plain(body.get("deps")))
    assert not missing, f"stage {name} runs {module}, which imports {missing}, but dvc.yaml does not list them"


def test_library_holds_only_the_experiment():
    """Every module in lmask/ is in the import closure of some stages/*.py entry point: a hand-run tool belongs in
    tools/ (nothing in lmask/ or stages/ may import tools)."""
    used: set[str] = set()
    for entry in sorted((ROOT / "stages").glob("*.py")):
        used |= closure(f"stages.{entry.stem}")
    library = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lmask").rglob("*.py")}
    assert sorted(library - used) == [], "not run by any stage: move it to tools/"
    for package in ("lmask", "stages"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tools = sorted(m for m in _imported(path) if m == "tools" or m.startswith("tools."))
            assert tools == [], f"{path.relative_to(ROOT)} imports {tools}: the library must not need tools/"


def test_library_imports_form_no_circle():
    """lmask's modules import each other (lazy imports inside functions included) without a circle, and no lmask/
    module imports stages/ (upward): the library is layered, so any module can be read and tested with only what
    sits below it."""
    import graphlib

    modules = {p.stem: p for p in (ROOT / "lmask").glob("*.py")}
    graph = {
        name: {
            parts[1]
            for parts in (m.split(".") for m in _imported(path))
            if parts[0] == "lmask" and len(parts) > 1 and parts[1] in modules and parts[1] != name
        }
        for name, path in modules.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        pytest.fail(f"import circle in lmask/: {' -> '.join(err.args[1])}")
    for path in sorted((ROOT / "lmask").rglob("*.py")):
        upward = sorted(m for m in _imported(path) if m == "stages" or m.startswith("stages."))
        assert upward == [], f"{path.relative_to(ROOT)} imports {upward}: the library must not need stages/"


def test_closure_follows_lazy_imports(tmp_path):
    """The closure walker sees imports inside functions and `from package import module` (an independent check)."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "lmask").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "lmask" / "__init__.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text("def main():\n    from lmask import a\n")
    (tmp_path / "lmask" / "a.py").write_text("import lmask.b\n")
    (tmp_path / "lmask" / "b.py").write_text("x = 1\n")
    (tmp_path / "lmask" / "unused.py").write_text("")
    assert closure("stages.s", tmp_path) == {
        "stages/__init__.py",
        "stages/s.py",
        "lmask/__init__.py",
        "lmask/a.py",
        "lmask/b.py",
    }


@pytest.mark.parametrize("name", [n for n in stage_bodies() if n != "validate"])
def test_every_stage_waits_for_params_validation(name):
    assert "params.ok" in plain(stage_bodies()[name].get("deps")), f"{name} must depend on params.ok"


def test_validate_depends_on_the_whole_params_file():
    params = DVC["stages"]["validate"]["params"]
    assert params == [{"params.yaml": None}]
    assert DVC["stages"]["validate"]["outs"] == ["params.ok"]


def _lookup(dotted: str) -> bool:
    node = PARAMS
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


@pytest.mark.parametrize("name", list(stage_bodies()))
def test_listed_params_exist(name):
    for entry in stage_bodies()[name].get("params", []):
        if isinstance(entry, dict):
            continue  # a whole params file
        key = re.sub(r"\$\{(item\.schedule|key)\}", "half", entry)
        assert _lookup(key), f"stage {name} lists param {entry}, which params.yaml lacks"


def test_only_aggregation_stages_read_every_schedule():
    readers = {n for n, b in stage_bodies().items() if "schedules" in (b.get("params") or [])}
    assert readers == {"summarize", "report"}


OUTPUT_ROOTS = ("data/", "models/", "metrics/", "plots/", "eval/", "checkpoints/")


def test_library_declares_no_output_paths():
    """Paths are declared once, in dvc.yaml: no stage module of lmask/ hard-codes an output location."""
    offenders = []
    for path in sorted((ROOT / "lmask").glob("*.py")):  # (tools/readme.py, by hand, edits README.md: not here)
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(node)
        }
        for node in ast.walk(tree):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            if literal and node.value.startswith(OUTPUT_ROOTS):
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not offenders, offenders


def test_stages_that_can_run_the_band_kernel_depend_on_its_source():
    """The C++ kernel is not a Python import: a change to it must still rerun every stage that can call it."""
    from lmask.band import SOURCE

    source = SOURCE.relative_to(ROOT).as_posix()
    assert SOURCE.is_file()
    with_kernel = [name for name, body in stage_bodies().items() if "lmask/band.py" in plain(body.get("deps"))]
    assert {"train_masked", "evaluate", "benchmark_kernel"} <= set(with_kernel)
    for name, body in stage_bodies().items():
        assert (name in with_kernel) == (source in plain(body.get("deps"))), name
