"""The audit package stays readable: short functions, and mechanism names only from the ledger's enum.

Each audit fills in the steps of one pipeline (audit/pipeline.py), so no function needs to be
long; a mechanism compared as a string literal drifts from the values the ledger writes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import crosslm_secure
from crosslm_secure.privacy.ledger_format import Mechanism

AUDIT = Path(crosslm_secure.__file__).parent / "audit"
MAX_FUNCTION_LINES = 60


def _trees() -> list[tuple[str, ast.Module]]:
    return [(path.name, ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(AUDIT.glob("*.py"))]


def long_functions(trees: list[tuple[str, ast.Module]], limit: int) -> list[str]:
    """``file:function (lines)`` for each function longer than ``limit`` lines, def line to last line."""
    found = []
    for name, tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{name}:{node.name} ({lines} lines)")
    return found


def mechanism_literals(trees: list[tuple[str, ast.Module]]) -> list[str]:
    """``file:line "value"`` for each string constant that is exactly a mechanism's name."""
    names = {m.value for m in Mechanism}
    return [
        f"{name}:{node.lineno} {node.value!r}"
        for name, tree in trees
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    ]


def test_no_audit_function_is_longer_than_sixty_lines() -> None:
    assert long_functions(_trees(), MAX_FUNCTION_LINES) == []


def test_the_audits_name_mechanisms_through_the_ledgers_enum() -> None:
    assert mechanism_literals(_trees()) == []


def test_the_checks_find_what_they_are_about() -> None:
    planted = ast.parse(
        "def long():\n" + "    x = 1\n" * MAX_FUNCTION_LINES + "\n\ndef short():\n    return 'dp-sgd'\n"
    )
    assert long_functions([("planted.py", planted)], MAX_FUNCTION_LINES) == [
        f"planted.py:long ({MAX_FUNCTION_LINES + 1} lines)"
    ]
    assert mechanism_literals([("planted.py", planted)]) == [f"planted.py:{MAX_FUNCTION_LINES + 5} 'dp-sgd'"]
