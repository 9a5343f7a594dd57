"""The layers hold: callers import only the facade, and core's modules import each other without a
cycle. Read from the source (every import, those under ``TYPE_CHECKING`` too), so a violation fails
here before it fails at run time or in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import core

ROOT = Path(__file__).resolve().parents[1]
CALLERS = ("app", "api")  # thin callers: the dashboard and the HTTP API


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module ``path`` imports, as absolute names (``from core import x`` counts as
    ``core.x`` when ``core/x`` is a module, else as ``core``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (ROOT / Path(*candidate.split("."))).with_suffix(".py").is_file() or (
                    ROOT / Path(*candidate.split(".")) / "__init__.py"
                ).is_file()
                found.add(candidate if is_module else base)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_graph() -> dict[str, set[str]]:
    """``{module: core modules it imports}`` over every module of ``core`` except the package
    itself (``core/__init__.py`` re-exports the facade and is imported by nothing inside core)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "core").rglob("*.py")):
        name = module_name(path)
        if name == "core":
            continue
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {m for m in imported_modules(path, package) if m.startswith("core.") and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def caller_files() -> list[Path]:
    return sorted(p for folder in CALLERS if (ROOT / folder).is_dir() for p in (ROOT / folder).rglob("*.py"))


def test_callers_import_only_the_facade() -> None:
    files = caller_files()
    assert files, "no app/ or api/ sources found"
    beneath = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path, "") if m.startswith("core."))
        for path in files
    }
    assert {path: modules for path, modules in beneath.items() if modules} == {}


def test_the_facade_exports_what_it_names() -> None:
    assert all(hasattr(core, name) for name in core.__all__)
    assert not {"ImageRecord", "VectorFilter", "Catalog", "Backends"} & set(core.__all__)


def test_core_has_no_import_cycle() -> None:
    assert find_cycle(core_graph()) is None


def test_the_reported_cycle_is_gone() -> None:
    graph = core_graph()
    assert "core.analysis_service" in graph["core.ingest"]
    assert "core.observability" in graph["core.analysis_service"]
    assert "core.ingest" not in graph["core.observability"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected


def test_the_import_reader_sees_beneath_the_facade(tmp_path: Path) -> None:
    page = tmp_path / "page.py"
    page.write_text("from core import Collection\nfrom core import storage\nimport core.collection\n")
    assert imported_modules(page, "") == {"core", "core.storage", "core.collection"}
