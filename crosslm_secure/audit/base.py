"""What every audit check returns and where it is kept.

Each check writes ``runs/<id>/audit/<name>.json`` (atomically) holding one :class:`CheckResult`;
``crosslm audit all`` turns the results into ``audit/report.md`` and ``audit/report.html``,
and sweeps read the flat ``numbers`` of each result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from crosslm_secure.errors import CrossLMError
from crosslm_secure.storage import atomic_write_json

Verdict = Literal["pass", "fail", "incomplete"]
AUDIT_DIR = "audit"


class AuditError(CrossLMError):
    """An audit could not run (missing run artefacts, unreadable files)."""


@dataclass
class Table:
    """A small table for the report: a title, column names and rows of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class CheckResult:
    """The outcome of one audit check.

    Attributes:
        name: short id (``mia``, ``dp``, ``protocol``, ``ledger``); also the JSON file name.
        title: heading in the report.
        verdict: ``pass`` or ``fail``; any ``fail`` makes ``crosslm audit all`` exit non-zero;
            ``incomplete`` when the evidence is missing rather than wrong (a site audit not handed in).
        summary: one sentence a reviewer reads first, with the key numbers.
        numbers: flat name -> number/string for tables and sweeps (e.g. ``slm_auc_mean``).
        tables: tables shown in the report.
        figures: PNG files, relative to the run's ``audit/`` folder.
        findings: one line per problem found (empty when the check passed).
        details: anything else JSON-able worth keeping.
        settings: the audit settings as applied (the run's ``audit`` section with the overrides),
            recorded by ``crosslm audit`` when it keeps the result; empty in results saved before.
        overrides: the ``--set audit.x=y`` overrides among them, as typed.
    """

    name: str
    title: str
    verdict: Verdict
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckResult:
        tables = [Table(**t) for t in raw.get("tables", [])]
        return cls(**{**raw, "tables": tables})


Figure = Callable[[Path], None]
"""Draws one figure into the file it is given."""


@dataclass
class Outcome:
    """A check's result before it is kept, and its figures, not yet drawn.

    The checks compute; where the result goes is the caller's: a run-level audit keeps it with
    its figures in ``runs/<id>/audit/`` (:meth:`save`), a site audit signs its verdict and numbers.
    """

    result: CheckResult
    figures: dict[str, Figure] = field(default_factory=dict)
    """File name (in the run's ``audit/``) -> what draws it."""

    def save(self, run_dir: Path) -> CheckResult:
        """Draw the figures into ``audit/``, write ``audit/<name>.json``, return the result."""
        for name, draw in self.figures.items():
            draw(audit_dir(run_dir) / name)
        self.result.figures = list(self.figures)
        save_result(run_dir, self.result)
        return self.result


def eps_text(eps: float) -> str:
    """An epsilon as tables and summaries show it: two decimals, or ``inf``."""
    return "inf" if math.isinf(eps) else f"{eps:.2f}"


def audit_dir(run_dir: Path) -> Path:
    folder = Path(run_dir) / AUDIT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_result(run_dir: Path, result: CheckResult) -> Path:
    """Write ``audit/<name>.json`` atomically and return its path."""
    path = audit_dir(run_dir) / f"{result.name}.json"
    atomic_write_json(path, result.to_dict())
    return path


def load_result(run_dir: Path, name: str) -> CheckResult | None:
    """The saved result of check ``name``, or None when it has not been run."""
    path = Path(run_dir) / AUDIT_DIR / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return CheckResult.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise AuditError(f"audit: {path} is unreadable ({exc}); run the check again to rewrite it") from None
