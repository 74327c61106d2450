"""The protocol audit's third sub-check: no plaintext per-client score vector on the server.

``transcript.jsonl`` rows hold only the documented fields (protocols/wire-protocol.md), each of
its type; ``events.jsonl``, ``metrics.jsonl``, ``metrics.csv`` and ``state.json`` hold no list of
numbers and no per-client score field.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crosslm_secure.audit.transcript_checks import (
    TRANSCRIPT,
    TRANSCRIPT_FIELDS,
    SubCheck,
    read_jsonl_rows,
    transcript_row_problems,
)
from crosslm_secure.config import Config

AGGREGATE_LOGS = ("events.jsonl", "metrics.jsonl", "metrics.csv", "state.json")


def check_no_scores(run_dir: Path, config: Config) -> SubCheck:
    check = SubCheck("no plaintext per-client score vector")
    rows = read_jsonl_rows(run_dir / TRANSCRIPT, check)
    for number, row in enumerate(rows, start=1):
        check.findings += [f"{TRANSCRIPT} line {number}: {p}" for p in transcript_row_problems(row)]
    clients = config.client_ids()
    logs = 0
    for name in AGGREGATE_LOGS:
        path = run_dir / name
        if not path.is_file():
            continue
        logs += 1
        records = _csv_records(path) if name.endswith(".csv") else _json_records(path, check)
        for number, record in records:
            check.findings += [f"{name} line {number}: {p}" for p in aggregate_problems(record, clients)]
    check.evidence = (
        f"{len(rows)} transcript rows hold only {sorted(TRANSCRIPT_FIELDS)}; {logs} aggregate logs "
        f"({', '.join(AGGREGATE_LOGS)}) hold no numeric list and no per-client score field"
    )
    return check


def aggregate_problems(record: Any, clients: list[str]) -> list[str]:
    """Why one event/metrics record carries more than aggregate numbers (empty when it does not)."""
    problems = []
    for key, value in _walk_paths(record):
        if isinstance(value, list):
            numbers = [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
            if numbers:
                problems.append(f"{key!r} is a list of {len(numbers)} numbers; only aggregate numbers are allowed")
        leaf = key.rsplit(".", 1)[-1].lower()
        if "score" in leaf and any(client in key for client in clients):
            problems.append(f"{key!r} is a per-client score field")
    return problems


def _walk_paths(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, item
            yield from _walk_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                yield from _walk_paths(item, prefix)


def _json_records(path: Path, check: SubCheck) -> list[tuple[int, Any]]:
    if path.suffix == ".json":
        try:
            return [(1, json.loads(path.read_text()))]
        except ValueError:
            check.findings.append(f"{path.name}: not valid JSON; it cannot be shown to hold only aggregates")
            return []
    return list(enumerate(read_jsonl_rows(path, check), start=1))


def _csv_records(path: Path) -> list[tuple[int, Any]]:
    out = []
    for number, row in enumerate(csv.DictReader(io.StringIO(path.read_text())), start=2):
        parsed: dict[str, Any] = {}
        for key, cell in row.items():
            parsed[str(key)] = _cell(cell)
        out.append((number, parsed))
    return out


def _cell(cell: Any) -> Any:
    if isinstance(cell, str) and cell.startswith("["):
        try:
            return json.loads(cell)
        except ValueError:
            return cell
    return cell
