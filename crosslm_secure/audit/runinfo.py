"""What every audit reads first: the run's validated config and the audit settings.

Settings come from the run's ``config.audit`` with ``--set audit.x=y`` overrides; anything
else in the config is the run's record and cannot be overridden by an audit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from crosslm_secure.audit.base import AuditError
from crosslm_secure.config import AuditConfig, Config, apply_override, config_from_dict
from crosslm_secure.errors import CrossLMError
from crosslm_secure.runstore import RunStore


def run_config(run_dir: Path, overrides: Sequence[str] = ()) -> Config:
    """The run's resolved config with ``audit.*`` overrides applied.

    Raises:
        AuditError: not a run folder, an unreadable config, or an override outside ``audit.``.
    """
    for item in overrides:
        if not item.strip().startswith("audit."):
            raise AuditError(f"audit: --set {item!r} is not an audit setting; only audit.<field>=<value> is allowed")
    try:
        raw = RunStore.open(Path(run_dir)).config_dict() or {}
        for item in overrides:
            apply_override(raw, item)
        return config_from_dict(raw)
    except CrossLMError as exc:
        raise AuditError(f"audit: {exc}") from None


def audit_settings(run_dir: Path, overrides: Sequence[str] = ()) -> AuditConfig:
    """``config.audit`` of the run, with overrides."""
    return run_config(run_dir, overrides).audit
