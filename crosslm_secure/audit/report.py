"""The audit report: ``audit/report.md`` and a self-contained ``audit/report.html``.

Built only from what the checks saved (``audit/<name>.json``, ``audit/errors.json``), so
``crosslm audit report`` rebuilds it without re-running anything. It holds the overall
verdict, a verdict row per check (a check that could not run is an error row, one never run
a "not run" row), each check's summary, numbers, tables, findings and figures (embedded in
the HTML as base64 PNG), and the provenance a reviewer signs against: the run's config hash,
model hashes, tool versions, time, and the command that reproduces the report.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import crosslm_secure
from crosslm_secure.audit.base import AUDIT_DIR, AuditError, audit_dir
from crosslm_secure.audit.registry import CHECKS, SITES, CheckOutcome, saved_outcomes
from crosslm_secure.audit.report_sections import VERDICT_MEANINGS, explanations, summary_sentence
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.trust import SELF_ATTESTED, is_self_attested
from crosslm_secure.config import config_to_dict
from crosslm_secure.errors import CrossLMError
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_json, atomic_write_text

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
META_FILE = "report_meta.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class ModelHash:
    """One model artefact a reviewer can match: its role, where it came from, its sha256."""

    role: str
    source: str
    sha256: str


def remember_command(run_dir: Path, command: str) -> None:
    """Keep the command that produced the results, for ``audit report`` to print later."""
    atomic_write_json(audit_dir(run_dir) / META_FILE, {"command": command})


def reproduce_command(run_dir: Path) -> str:
    path = Path(run_dir) / AUDIT_DIR / META_FILE
    try:
        return str(json.loads(path.read_text())["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"crosslm audit all --run {run_dir}"


def overall_verdict(outcomes: Sequence[CheckOutcome]) -> str:
    """``FAIL`` if any check failed; else ``INCOMPLETE`` if any could not run, never ran, or lacks
    evidence (a site audit not handed in); else ``SELF-ATTESTED`` if a check passed on keys the run
    folder names itself (no ``--registry``); else ``PASS``."""
    by_name = {o.name: o for o in outcomes}
    if any(o.result is not None and o.result.verdict == "fail" for o in outcomes):
        return "FAIL"
    if any(by_name.get(name) is None or by_name[name].result is None for name in CHECKS):
        return "INCOMPLETE"
    if any(o.result is not None and o.result.verdict == "incomplete" for o in outcomes):
        return "INCOMPLETE"
    if any(o.result is not None and is_self_attested(o.result) for o in outcomes):
        return "SELF-ATTESTED"
    return "PASS"


def row_state(outcome: CheckOutcome) -> str:
    """How a check's verdict is shown: its verdict, or ``self-attested`` for a pass on the folder's own keys."""
    if outcome.result is None:
        return "error"
    if outcome.result.passed and is_self_attested(outcome.result):
        return SELF_ATTESTED
    return outcome.result.verdict


def trust_anchor_line(outcomes: Sequence[CheckOutcome]) -> str:
    """What the signatures were checked against, as the checks recorded it."""
    anchors = sorted(
        {str(o.result.details["trust_anchor"]) for o in outcomes if o.result and "trust_anchor" in o.result.details}
    )
    return " / ".join(anchors) or "not recorded (run the protocol and ledger checks)"


def write_report(run_dir: Path, outcomes: Sequence[CheckOutcome] | None = None) -> tuple[Path, Path]:
    """Write ``audit/report.md`` and ``audit/report.html`` atomically; return both paths.

    Args:
        run_dir: ``runs/<id>``.
        outcomes: results of this session; default: what the checks saved under ``audit/``.

    Raises:
        AuditError: not a run folder.
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    outcomes = list(outcomes) if outcomes is not None else saved_outcomes(run_dir)
    provenance = _provenance(run_dir, config_to_dict(config), outcomes)
    models = model_hashes(run_dir, config)
    folder = audit_dir(run_dir)
    md_path, html_path = folder / REPORT_MD, folder / REPORT_HTML
    atomic_write_text(md_path, render_markdown(run_dir, outcomes, provenance, models))
    atomic_write_text(html_path, render_html(run_dir, outcomes, provenance, models))
    return md_path, html_path


# -- provenance ----------------------------------------------------------------------------


def _provenance(run_dir: Path, resolved: dict[str, Any], outcomes: Sequence[CheckOutcome]) -> list[tuple[str, str]]:
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()
    return [
        ("run", RunStore(run_dir).run_id),
        ("trust anchor", trust_anchor_line(outcomes)),
        ("run folder", str(run_dir)),
        ("config sha256 (resolved, canonical JSON)", hashlib.sha256(canonical).hexdigest()),
        ("config.yaml sha256 (file)", _sha256_file(run_dir / "config.yaml")),
        ("audit tool", f"crosslm-secure {crosslm_secure.__version__}; {_versions()}"),
        ("generated", datetime.now(UTC).isoformat(timespec="seconds")),
        ("reproduce", reproduce_command(run_dir)),
    ]


def _versions() -> str:
    out = []
    for package in ("dp-accounting", "tenseal", "opacus", "torch"):
        try:
            out.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            out.append(f"{package} not installed")
    return ", ".join(out)


def model_hashes(run_dir: Path, config: Any) -> list[ModelHash]:
    """sha256 of each client's SLM checkpoint weights, the last LLM adapter, and the base models."""
    hashes = []
    for folder in sorted((run_dir / "clients").glob("*/slm")):
        hashes.append(
            ModelHash(f"SLM checkpoint {folder.parent.name}", str(folder.relative_to(run_dir)), _weights(folder))
        )
    adapters = sorted(
        (run_dir / "llm").glob("round-*"),
        key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1,
    )
    if adapters:
        last = adapters[-1]
        hashes.append(ModelHash("LLM LoRA adapter (last round)", str(last.relative_to(run_dir)), _weights(last)))
    else:
        hashes.append(ModelHash("LLM LoRA adapter", "none (the LLM was not tuned)", "-"))
    hashes.append(
        ModelHash("base LLM", config.llm.model, _base_model_hash("llm", config.llm.model, config.llm.gguf_file))
    )
    for source in sorted({config.slm_for(c).model for c in config.client_ids()}):
        hashes.append(ModelHash("base SLM", source, _base_model_hash("slm", source, None)))
    return hashes


def _base_model_hash(role: str, source: str, gguf_file: str | None) -> str:
    try:
        if source == "embedded":
            from crosslm_secure.embedded import LLM_GGUF, LLM_PACKAGE, SLM_PACKAGE, SLM_SUBDIR, embedded_file

            path = embedded_file(LLM_PACKAGE, LLM_GGUF) if role == "llm" else embedded_file(SLM_PACKAGE, SLM_SUBDIR)
        else:
            path = Path(source).expanduser()
            if gguf_file:
                path = path / gguf_file
    except CrossLMError:
        return "not available on this machine"
    if path.is_file():
        return _sha256_file(path)
    if path.is_dir():
        return _weights(path)
    return "not available on this machine"


def _weights(folder: Path) -> str:
    """sha256 over (file name, file sha256) of every weight file in a folder, in name order."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return "no weight files"
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + bytes.fromhex(_sha256_file(path)))
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()


# -- rendering -----------------------------------------------------------------------------


def _rows(outcomes: Sequence[CheckOutcome]) -> list[tuple[str, str, str, CheckOutcome | None]]:
    by_name = {o.name: o for o in outcomes}
    rows = []
    for name in [*CHECKS, *([SITES] if SITES in by_name else [])]:
        outcome = by_name.get(name)
        if outcome is None:
            rows.append((name, "not run", f"run `crosslm audit {name} --run <run>`", None))
        elif outcome.result is None:
            rows.append((name, "error", outcome.error or "could not run", outcome))
        else:
            rows.append((name, row_state(outcome), outcome.result.summary, outcome))
    return rows


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(
    run_dir: Path, outcomes: Sequence[CheckOutcome], provenance: list[tuple[str, str]], models: list[ModelHash]
) -> str:
    verdict = overall_verdict(outcomes)
    lines = [f"# Audit report: {run_dir.name}", "", f"**Overall verdict: {verdict}**", ""]
    lines += [f"{verdict}: {VERDICT_MEANINGS[verdict]}.", ""]
    lines += _md_table(["check", "verdict", "summary"], [(n, v.upper(), s) for n, v, s, _ in _rows(outcomes)])
    lines += ["## Executive summary", ""]
    explain = explanations(run_config(run_dir).audit)
    lines += [f"- **{n}** {v.upper()}: {summary_sentence(v, s, explain.get(n))}" for n, v, s, _ in _rows(outcomes)]
    lines += [""]
    lines += ["## Provenance", ""]
    lines += _md_table(["item", "value"], [(k, f"`{v}`") for k, v in provenance])
    lines += ["### Model hashes (sha256)", ""]
    lines += _md_table(["model", "source", "sha256"], [(m.role, m.source, f"`{m.sha256}`") for m in models])
    appendix = ["## Appendix: every number", "", "As saved in `audit/<check>.json`.", ""]
    for name, state, summary, outcome in _rows(outcomes):
        lines += [f"## {name}: {state.upper()}", ""]
        if outcome is None or outcome.result is None:
            lines += [f"This check {'was not run' if outcome is None else 'could not run'}: {summary}", ""]
            continue
        result = outcome.result
        lines += [f"### {result.title}", "", result.summary, ""]
        if result.findings:
            lines += ["**Findings**", ""] + [f"- {f}" for f in result.findings] + [""]
        if result.numbers:
            appendix += [f"### {name}", ""]
            appendix += _md_table(["number", "value"], [(k, _number(v)) for k, v in result.numbers.items()])
        for table in result.tables:
            lines += [f"**{table.title}**", ""] + _md_table(table.columns, table.rows)
        lines += [f"![{figure}]({figure})" for figure in result.figures] + ([""] if result.figures else [])
        for key, value in result.details.items():
            if isinstance(value, str):
                lines += [f"- {key}: {value}"]
        lines += [""]
    return "\n".join(lines + appendix)


def render_html(
    run_dir: Path, outcomes: Sequence[CheckOutcome], provenance: list[tuple[str, str]], models: list[ModelHash]
) -> str:
    from crosslm_secure.audit.report_html import render_audit_html

    settings = run_config(run_dir).audit
    return render_audit_html(run_dir, _rows(outcomes), overall_verdict(outcomes), provenance, models, settings)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def require_results(outcomes: Sequence[CheckOutcome], run_dir: Path) -> None:
    """Raise AuditError when there is nothing to report."""
    if not outcomes:
        raise AuditError(
            f"audit report: {run_dir}/audit holds no saved check results; run `crosslm audit all --run {run_dir}`"
        )
