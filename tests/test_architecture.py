"""The layering rule of docs/ARCHITECTURE.md, and the size limits that keep modules readable.

Layers, highest first; a module may import only from its own package or a lower layer:

    beam_jobs  >  nightly, sample_catalog  >  index_builder  >  transforms  >  encoders  >  images
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import ROOT

LAYERS = {
    "beam_jobs": 6,
    "nightly": 5,
    "sample_catalog": 5,
    "index_builder": 4,
    "transforms": 3,
    "encoders": 2,
    "images": 1,
}
MAX_JOB_LINES = 155  # "about 150": a job that needs more is doing a package's work
MAX_FUNCTION_LINES = 60
# A longer function must say why in its docstring, with this phrase.
LONG_FUNCTION_MARK = "Long on purpose:"


def package_files() -> list[Path]:
    skip = ("_pb2.py",)
    return sorted(p for package in LAYERS for p in (ROOT / package).rglob("*.py") if not p.name.endswith(skip))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every project module this file imports, at any depth (imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import module` imports pkg.module when that is a module.
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = package_files()
    known = {module_name(p) for p in files}
    graph = {}
    for path in files:
        name = module_name(path)
        package_parents = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}
        graph[name] = imported_modules(path, known) - package_parents - {name}
    return graph


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if LAYERS[target.split(".")[0]] > LAYERS[module.split(".")[0]]
        or (
            LAYERS[target.split(".")[0]] == LAYERS[module.split(".")[0]]
            and target.split(".")[0] != module.split(".")[0]
        )
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule above is only worth something if the parser finds imports inside functions."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from beam_jobs import launcher\n    return launcher\n")
    assert imported_modules(source, {"beam_jobs", "beam_jobs.launcher"}) == {"beam_jobs", "beam_jobs.launcher"}


@pytest.mark.parametrize("job", sorted(p.name for p in (ROOT / "beam_jobs").glob("*.py")))
def test_job_modules_only_wire(job: str) -> None:
    lines = len((ROOT / "beam_jobs" / job).read_text().splitlines())
    assert lines <= MAX_JOB_LINES, f"beam_jobs/{job} has {lines} lines: move the logic into a package"


def test_functions_are_short_or_say_why() -> None:
    long_ones = []
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node) or ""
                # Docstring lines are documentation, not length.
                doc_lines = node.body[0].end_lineno - node.body[0].lineno + 1 if doc else 0
                length = node.end_lineno - node.lineno + 1 - doc_lines
                if length > MAX_FUNCTION_LINES and LONG_FUNCTION_MARK not in doc:
                    long_ones.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long_ones, "\n".join(long_ones)
