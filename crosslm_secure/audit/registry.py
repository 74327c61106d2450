"""The audit checks by name, run one at a time with their result (or error) kept in ``audit/``.

Each check is ``run_<x>_audit(run_dir, settings=None, *, progress=True) -> CheckResult``,
imported only when it runs (the attacks pull in models and take minutes).
A check that raises is recorded in ``audit/errors.json`` so the report shows it as an
error row; a later successful run of that check clears the record.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from crosslm_secure.audit.base import AUDIT_DIR, AuditError, CheckResult, audit_dir
from crosslm_secure.audit.runinfo import audit_settings
from crosslm_secure.audit.trust import TRUSTING_CHECKS, TrustAnchor, is_self_attested
from crosslm_secure.errors import CrossLMError
from crosslm_secure.storage import atomic_write_json

CHECKS: dict[str, tuple[str, str]] = {
    "mia": ("crosslm_secure.audit.mia", "run_mia_audit"),
    "dp": ("crosslm_secure.audit.dp_audit", "run_dp_audit"),
    "protocol": ("crosslm_secure.audit.protocol_audit", "run_protocol_audit"),
    "ledger": ("crosslm_secure.audit.ledger_audit", "run_ledger_audit"),
}
"""Check name -> (module, function). Report order; ``crosslm audit all`` runs the cheap ones first."""
CHECK_HELP = {
    "mia": "Membership-inference attacks on the clients' SLMs and the server LLM.",
    "dp": "One-run empirical DP audit (canaries) against the recorded epsilon.",
    "protocol": "Server held only a public 128-bit CKKS context, no secret key or per-client score; "
    "every message signed and accepted once.",
    "ledger": "Ledger hash chains intact, epsilon recomputed with dp-accounting, no client over budget.",
}
RUN_ORDER = ("protocol", "ledger", "mia", "dp")
SITES = "sites"
"""The site audits' result (``--site-audits``, audit/site_audits.py): reported when checked."""
ERRORS_FILE = "errors.json"

EXIT_PASS, EXIT_FAIL, EXIT_ERROR, EXIT_SELF_ATTESTED = 0, 1, 2, 3


@dataclass(frozen=True)
class CheckOutcome:
    """What running one check gave: its result, or the sentence saying why it could not run."""

    name: str
    result: CheckResult | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0 pass; 1 fail; 2 could not run, or incomplete; 3 passed on self-attested keys (no registry)."""
        if self.result is None or self.result.verdict == "incomplete":
            return EXIT_ERROR
        if not self.result.passed:
            return EXIT_FAIL
        return EXIT_SELF_ATTESTED if is_self_attested(self.result) else EXIT_PASS


def check_function(name: str) -> Callable[..., CheckResult]:
    """The function that runs check ``name``.

    Raises:
        AuditError: unknown name, or its module is not part of this build.
    """
    if name not in CHECKS:
        raise AuditError(f"audit: unknown check {name!r}; choose one of {', '.join(CHECKS)} or all")
    module_name, function = CHECKS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise AuditError(
            f"audit {name}: {module_name} is not part of this build; install a crosslm-secure that has it"
        ) from None
    found = getattr(module, function, None)
    if found is None:
        raise AuditError(f"audit {name}: {module_name} has no {function}(); the build is incomplete, reinstall it")
    return found


def run_check(
    name: str,
    run_dir: Path,
    overrides: Sequence[str] = (),
    *,
    progress: bool = True,
    anchor: TrustAnchor | None = None,
) -> CheckOutcome:
    """Run one check, save its result (or record its error) under ``audit/``, and return it.

    Any exception becomes an error outcome (one sentence) so that ``audit all`` still reports
    the other checks; the run folder itself must exist. ``anchor`` (the reviewer's registry)
    goes to the checks in :data:`TRUSTING_CHECKS`.
    """
    run_dir = Path(run_dir)
    try:
        settings = audit_settings(run_dir, overrides)
        pinned = {"anchor": anchor} if anchor is not None and name in TRUSTING_CHECKS else {}
        result = check_function(name)(run_dir, settings, progress=progress, **pinned)
        if result.name != name:
            raise AuditError(f"audit {name}: the check returned a result named {result.name!r}; fix the check")
    except CrossLMError as exc:
        message = str(exc)
    except Exception as exc:  # noqa: BLE001 - a crashing check is reported, not fatal to the others
        message = f"audit {name}: crashed with {type(exc).__name__}: {exc}; report this as a bug"
    else:  # the check saved its own result (audit/<name>.json)
        _record_error(run_dir, name, None)
        return CheckOutcome(name, result=result)
    if (run_dir / "config.yaml").is_file():
        _record_error(run_dir, name, message)
    return CheckOutcome(name, error=message)


def saved_outcomes(run_dir: Path) -> list[CheckOutcome]:
    """Every check's saved result or recorded error, in report order (absent ones left out)."""
    from crosslm_secure.audit.base import load_result

    errors = load_errors(run_dir)
    out = []
    for name in CHECKS:
        if name in errors:
            out.append(CheckOutcome(name, error=errors[name]["error"]))
            continue
        result = load_result(run_dir, name)
        if result is not None:
            out.append(CheckOutcome(name, result=result))
    sites = load_result(run_dir, SITES)
    return out + ([CheckOutcome(SITES, result=sites)] if sites is not None else [])


def load_errors(run_dir: Path) -> dict[str, dict[str, str]]:
    path = Path(run_dir) / AUDIT_DIR / ERRORS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except ValueError:
        raise AuditError(f"audit: {path} is unreadable; delete it and run the checks again") from None
    return {k: v for k, v in raw.items() if isinstance(v, dict) and "error" in v}


def _record_error(run_dir: Path, name: str, message: str | None) -> None:
    errors = load_errors(run_dir)
    if message is None and name not in errors:
        return
    if message is None:
        errors.pop(name)
    else:
        errors[name] = {"error": message, "time": datetime.now(UTC).isoformat(timespec="seconds")}
        stale = Path(run_dir) / AUDIT_DIR / f"{name}.json"
        stale.unlink(missing_ok=True)  # an older pass must not stand in for a check that now cannot run
    atomic_write_json(audit_dir(run_dir) / ERRORS_FILE, errors)


def overall_exit_code(outcomes: Sequence[CheckOutcome]) -> int:
    """2 if a check could not run (or is incomplete), else 1 if one failed, else 3 if one passed on
    self-attested keys, else 0."""
    codes = [o.exit_code for o in outcomes]
    for code in (EXIT_ERROR, EXIT_FAIL, EXIT_SELF_ATTESTED):
        if code in codes:
            return code
    return EXIT_PASS
