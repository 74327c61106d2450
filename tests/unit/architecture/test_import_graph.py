"""The subpackages of crosslm_secure import each other without cycles.

A cycle means neither side can be read, tested or replaced alone; this test names the files
that close one, so the fix is a move, not a hunt.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import crosslm_secure

PACKAGE = Path(crosslm_secure.__file__).parent


def _unit(parts: tuple[str, ...]) -> str:
    """A file's unit in the graph: its subpackage, or the module itself at the top level."""
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _imported_units(path: Path) -> set[str]:
    rel = path.relative_to(PACKAGE).parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                package = list(rel[:-1])[: len(rel) - node.level]
                names.append(".".join([*package, node.module or ""]).strip("."))
            elif node.module == "crosslm_secure":
                names.extend(alias.name for alias in node.names)
            elif node.module and node.module.startswith("crosslm_secure."):
                names.append(node.module.removeprefix("crosslm_secure."))
        elif isinstance(node, ast.Import):
            prefix = "crosslm_secure."
            names.extend(a.name.removeprefix(prefix) for a in node.names if a.name.startswith(prefix))
        found.update(name.split(".")[0] for name in names if name)
    return found


def import_graph() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the files that import it (lazy imports inside functions count)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path.relative_to(PACKAGE).parts)
        for target in _imported_units(path) - {unit}:
            graph[unit][target].add(str(path.relative_to(PACKAGE)))
    return graph


def find_cycle(graph: dict[str, dict[str, set[str]]]) -> list[str]:
    """One cycle as ``[a, b, ..., a]``, or ``[]`` when the graph is acyclic (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(unit: str) -> list[str]:
        state[unit] = 1
        stack.append(unit)
        for target in sorted(graph.get(unit, {})):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[unit] = 2
        return []

    for unit in sorted(graph):
        if unit not in state and (cycle := visit(unit)):
            return cycle
    return []


def test_find_cycle_finds_a_planted_cycle() -> None:
    graph = {"a": {"b": {"a/x.py"}}, "b": {"c": {"b/y.py"}}, "c": {"a": {"c/z.py"}}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    del graph["c"]["a"]
    assert find_cycle(graph) == []


def test_subpackages_import_each_other_without_cycles() -> None:
    graph = import_graph()
    assert "client" in graph and "privacy" in graph["config"], "the graph reader found no imports"
    cycle = find_cycle(graph)
    closing = [f"{a} -> {b} in {sorted(graph[a][b])}" for a, b in zip(cycle, cycle[1:], strict=False)]
    assert not cycle, "import cycle: " + "; ".join(closing)


def test_every_module_imports() -> None:
    """A module moved without its importers updated fails here, not in the one test that reaches it."""
    import importlib

    broken = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("crosslm_secure", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - report every broken module at once
            broken[name] = f"{type(exc).__name__}: {exc}"
    assert not broken, broken


MAX_MODULE_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    """A module a newcomer cannot read in one sitting is split along what it does."""
    long = {
        str(path.relative_to(PACKAGE)): count
        for path in sorted(PACKAGE.rglob("*.py"))
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"over {MAX_MODULE_LINES} lines: {long}"


def test_the_report_modules_import_each_other_without_cycles() -> None:
    """Within report/, module by module: summary.md and report.html share pieces, never each other."""
    report = PACKAGE / "report"
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted(report.glob("*.py")):
        graph[path.stem] = defaultdict(set)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("crosslm_secure.report."):
                target = (node.module or "").removeprefix("crosslm_secure.report.").split(".")[0]
                graph[path.stem][target].add(path.name)
    assert graph["summary"] and graph["run_page"]  # the graph was read
    cycle = find_cycle(graph)
    assert not cycle, "import cycle in report/: " + " -> ".join(cycle)
