"""The one pipeline every run-level audit goes through: open the run, measure, judge, keep.

Each audit fills in its own steps, as a Flower strategy fills in ``configure_fit`` and
``aggregate_fit`` for the one server loop:

* :meth:`Audit.open` reads what the audit needs from the run folder (its config and data
  split, or its ledgers, or its server artefacts); a folder that is not such a run is refused
  here with an :class:`~crosslm_secure.audit.base.AuditError`;
* :meth:`Audit.measure` gathers the evidence: retrain and score (membership inference, DP
  canaries) or re-check (ledger recomputation, protocol scans);
* :meth:`Audit.judge` turns the evidence into a verdict, numbers, tables and figures.

:func:`run_audit` calls them in that order and keeps the result (``audit/<name>.json`` and its
figures, :meth:`~crosslm_secure.audit.base.Outcome.save`); rendering the report is not its job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Generic, TypeVar

from crosslm_secure.audit.base import CheckResult, Outcome
from crosslm_secure.config import AuditConfig

Subject = TypeVar("Subject")
Evidence = TypeVar("Evidence")


class Audit(ABC, Generic[Subject, Evidence]):
    """One run-level audit check: the steps :func:`run_audit` drives."""

    @abstractmethod
    def open(self, run_dir: Path, settings: AuditConfig | None) -> Subject:
        """What the audit reads from ``runs/<id>``; ``settings`` None = the run's own ``config.audit``.

        Raises:
            AuditError: the folder lacks what the audit needs.
        """

    @abstractmethod
    def measure(self, subject: Subject) -> Evidence:
        """The audit's evidence: retraining and scores, or re-checked artefacts."""

    @abstractmethod
    def judge(self, subject: Subject, evidence: Evidence) -> Outcome:
        """The verdict with its numbers, tables and figures (not yet kept)."""


def run_audit(audit: Audit[Subject, Evidence], run_dir: Path, settings: AuditConfig | None = None) -> CheckResult:
    """Open, measure, judge; write ``audit/<name>.json`` and its figures; return the result.

    Raises:
        AuditError: the run folder lacks what the audit needs, or its retraining failed.
    """
    run_dir = Path(run_dir)
    subject = audit.open(run_dir, settings)
    return audit.judge(subject, audit.measure(subject)).save(run_dir)
