"""What ``crosslm runs list`` and ``crosslm runs show`` say about run folders.

A run's row is read from the files in its folder only (``config.yaml``, ``metrics.jsonl``,
``run.json`` and ``audit/*.json``); nothing is loaded but JSON and YAML, so listing a folder of
runs takes no model and no ML library.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from crosslm_secure.audit.base import AUDIT_DIR
from crosslm_secure.audit.registry import saved_outcomes
from crosslm_secure.audit.report import overall_verdict, row_state
from crosslm_secure.errors import CrossLMError, RunError
from crosslm_secure.runstore import CONFIG_FILE, RunStore

EPSILON_PREFIX = "epsilon/"
SLM_F1_PREFIX = "slm_macro_f1/"


@dataclass
class RunRow:
    """One run as the list shows it; ``None`` where the run has not written that yet."""

    run_id: str
    folder: str
    method: str | None
    task: str | None
    data_source: str | None
    target_epsilon: float | str | None
    rounds: int | None
    slm_macro_f1: float | None
    llm_macro_f1: float | None
    audit: str | None
    created: str | None
    clients: dict[str, dict[str, float | None]] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (an infinite epsilon is the string ``"inf"``, which JSON can hold)."""
        return _finite(asdict(self))


def run_row(folder: Path) -> RunRow:
    """The row of one run folder.

    Raises:
        RunError: the folder holds no config.yaml, or its run.json, config.yaml or metrics.jsonl is damaged.
    """
    store = RunStore.open(folder)
    try:
        config = store.config_dict()
        rows = store.rounds()
        meta = store.metadata() or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise RunError(f"runs: {folder} has a damaged file ({exc}); rebuild it or move the folder away") from None
    last = rows[-1] if rows else {}
    config = config if isinstance(config, dict) else {}
    section = {name: value for name, value in config.items() if isinstance(value, dict)}
    verdict, checks = audit_verdict(store.root)
    return RunRow(
        run_id=store.run_id,
        folder=str(store.root),
        method=section.get("run", {}).get("method"),
        task=section.get("task", {}).get("name"),
        data_source=_data_source(section.get("data", {})),
        target_epsilon=_target_epsilon(section.get("privacy", {})),
        rounds=last.get("round"),
        slm_macro_f1=last.get("slm_macro_f1_mean"),
        llm_macro_f1=last.get("llm_macro_f1"),
        audit=verdict,
        created=meta.get("created") or _modified(store.root / CONFIG_FILE),
        clients=_clients(last),
        checks=checks,
    )


def list_runs(directory: Path) -> tuple[list[RunRow], dict[str, str]]:
    """Every run folder directly under ``directory``, oldest first, and the folders skipped with why.

    Raises:
        RunError: ``directory`` is not a folder.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RunError(f"runs: {directory} is not a folder; pass the folder that holds your runs (default runs/)")
    found: list[RunRow] = []
    skipped: dict[str, str] = {}
    for folder in sorted(p for p in directory.iterdir() if (p / CONFIG_FILE).is_file()):
        try:
            found.append(run_row(folder))
        except CrossLMError as exc:
            skipped[str(folder)] = str(exc)
    return sorted(found, key=lambda r: r.created or ""), skipped


def audit_verdict(run_dir: Path) -> tuple[str | None, dict[str, str]]:
    """The overall verdict of the audit checks saved in ``audit/`` and each check's state, or ``None``
    when no check has run; ``unreadable`` when a saved result cannot be read."""
    if not any((Path(run_dir) / AUDIT_DIR).glob("*.json")):
        return None, {}
    try:
        outcomes = saved_outcomes(run_dir)
    except CrossLMError:
        return "unreadable", {}
    if not outcomes:
        return None, {}
    return overall_verdict(outcomes), {o.name: row_state(o) for o in outcomes}


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return "inf" if isinstance(value, float) and math.isinf(value) else value


def _data_source(data: dict[str, Any]) -> str | None:
    source = data.get("source")
    if source == "embedded" or (source is None and data.get("embedded")):
        return f"embedded:{data.get('embedded')}"
    return f"{source}:{Path(str(data['path'])).name}" if data.get("path") else source


def _target_epsilon(privacy: dict[str, Any]) -> float | str | None:
    if privacy.get("dp") is False:
        return "no DP"
    return _finite(privacy.get("target_epsilon"))


def _clients(last: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    names = sorted({k.split("/", 1)[1] for k in last if k.startswith((EPSILON_PREFIX, SLM_F1_PREFIX))})
    return {
        name: {"epsilon": last.get(EPSILON_PREFIX + name), "slm_macro_f1": last.get(SLM_F1_PREFIX + name)}
        for name in names
    }


def _modified(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
