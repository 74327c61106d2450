"""The shape of the JSON an audit writes, kept in ``golden/`` and compared after each audit test.

Only what a fixed tiny run makes deterministic is kept: keys, verdict, names and titles, table
columns and row counts, figure names, the number of findings, and every string with its digits
masked (the numbers themselves depend on DP noise drawn from OS entropy, timings and paths).
A deliberate change of an audit's JSON is recorded by running its test with
``CROSSLM_UPDATE_GOLDEN=1`` and reviewing the diff of ``golden/``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"
_DIGITS = re.compile(r"(?:(?<=[\s(\[])-)?\d+(\.\d+)?(e[-+]?\d+)?")
"""A number, with its minus sign where it stands alone (" -0.12x", "[-0.3"), so a value whose sign
follows the noise (a canary shift) keeps one shape; "client-1" stays "client-#"."""
_ATTACK = re.compile(r"\b(LOSS|RMIA|LiRA)\b")


def shape(value: Any, run_dir: Path) -> Any:
    """``value`` with numbers replaced by their type and strings by their digit-masked text."""
    if isinstance(value, dict):
        return {key: shape(item, run_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item, run_dir) for item in value]
    if isinstance(value, str):
        return _DIGITS.sub("#", value.replace(str(run_dir.parent), "<runs>"))
    return type(value).__name__


def audit_shape(raw: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The deterministic part of one ``audit/<name>.json``."""
    summary = raw["summary"].replace(str(run_dir.parent), "<runs>")
    return {
        "name": raw["name"],
        "title": raw["title"],
        "verdict": raw["verdict"],
        # which attack is best, and its name in the summary, depends on noise
        "summary": _DIGITS.sub("#", _ATTACK.sub("<attack>", summary)),
        "numbers": {key: type(value).__name__ for key, value in raw["numbers"].items()},
        "tables": [
            {"title": t["title"], "columns": t["columns"], "rows": len(t["rows"]), "cells": {len(r) for r in t["rows"]}}
            for t in raw["tables"]
        ],
        "figures": raw["figures"],
        "findings": len(raw["findings"]),
        "details": shape(raw["details"], run_dir),
    }


def assert_matches_golden(run_dir: Path, name: str, golden: str) -> None:
    """``run_dir/audit/<name>.json`` has the shape kept in ``golden/<golden>.json``."""
    raw = json.loads((run_dir / "audit" / f"{name}.json").read_text())
    found = json.loads(json.dumps(audit_shape(raw, run_dir), default=sorted))
    path = GOLDEN / f"{golden}.json"
    if os.environ.get("CROSSLM_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    assert found == json.loads(path.read_text())
