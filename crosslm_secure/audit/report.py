"""The audit report: ``audit/report.md`` and a self-contained ``audit/report.html``.

Built only from what the checks saved (``audit/<name>.json``, ``audit/errors.json``), so
``crosslm audit report`` rebuilds it without re-running anything. It opens with
the section a reviewer signs (:mod:`~crosslm_secure.audit.report_scope`: scope, verdict in words,
thresholds as applied, trust anchor, models, privacy spend, sign-off with the hashes signed),
then the overall verdict, a verdict row per check (a check that could not run is an error row,
one never run a "not run" row with the command that runs it), each check's summary, numbers,
tables, findings and figures (embedded in the HTML as base64 PNG), and the provenance: config
hash, tool versions, time, and the command that reproduces the report.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import crosslm_secure
from crosslm_secure.audit.base import AUDIT_DIR, AuditError, CheckResult, audit_dir
from crosslm_secure.audit.registry import CHECKS, SITES, CheckOutcome, saved_outcomes
from crosslm_secure.audit.report_figures import display_summary, not_resolvable, shown_columns
from crosslm_secure.audit.report_scope import (
    Block,
    config_sha256,
    file_sha256,
    first_section,
    trust_anchor_line,
)
from crosslm_secure.audit.report_sections import VERDICT_MEANINGS, dp_sentences, executive_line
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.trust import SELF_ATTESTED, is_self_attested
from crosslm_secure.config import Config
from crosslm_secure.errors import CrossLMError
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_json, atomic_write_text, user_path

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
META_FILE = "report_meta.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class ModelHash:
    """One model artefact a reviewer can match: its role, where it came from (named), its sha256."""

    role: str
    source: str
    sha256: str


class Row(NamedTuple):
    """One check's line in the report: its name, shown state, one-line summary, and outcome (None: not run)."""

    name: str
    state: str
    summary: str
    outcome: CheckOutcome | None


@dataclass(frozen=True)
class ReportInputs:
    """Everything the Markdown and the HTML are rendered from."""

    run_id: str
    run_dir: Path
    config: Config
    rows: list[Row]
    verdict: str
    first: list[Block]
    provenance: list[tuple[str, str]]


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


def write_report(run_dir: Path, outcomes: Sequence[CheckOutcome] | None = None) -> tuple[Path, Path]:
    """Write ``audit/report.md`` and ``audit/report.html`` atomically; return both paths.

    Args:
        run_dir: ``runs/<id>``.
        outcomes: results of this session; default: what the checks saved under ``audit/``.

    Raises:
        AuditError: not a run folder.
    """
    from crosslm_secure.audit.report_html import render_audit_html

    inputs = report_inputs(Path(run_dir), outcomes)
    folder = audit_dir(run_dir)
    md_path, html_path = folder / REPORT_MD, folder / REPORT_HTML
    atomic_write_text(md_path, render_markdown(inputs))
    atomic_write_text(html_path, render_audit_html(inputs))
    return md_path, html_path


def report_inputs(run_dir: Path, outcomes: Sequence[CheckOutcome] | None = None) -> ReportInputs:
    """What the report shows, gathered once from the run folder and the checks' results."""
    config = run_config(run_dir)
    outcomes = list(outcomes) if outcomes is not None else saved_outcomes(run_dir)
    verdict = overall_verdict(outcomes)
    models = model_hashes(run_dir, config)
    return ReportInputs(
        run_id=RunStore(run_dir).run_id,
        run_dir=run_dir,
        config=config,
        rows=report_rows(run_dir, outcomes),
        verdict=verdict,
        first=first_section(run_dir, outcomes, config, models, verdict),
        provenance=_provenance(run_dir, outcomes),
    )


def executive_lines(inputs: ReportInputs) -> list[tuple[str, str, str]]:
    """(check, state, paragraph) for the executive summary."""
    return [
        (
            row.name,
            row.state,
            executive_line(row.state, row.summary, _result(row), inputs.config.audit, inputs.config.privacy),
        )
        for row in inputs.rows
    ]


# -- provenance ----------------------------------------------------------------------------


def _provenance(run_dir: Path, outcomes: Sequence[CheckOutcome]) -> list[tuple[str, str]]:
    return [
        ("run", RunStore(run_dir).run_id),
        ("trust anchor", trust_anchor_line(outcomes)),
        ("run folder", str(run_dir)),
        ("config sha256 (resolved, canonical JSON)", config_sha256(run_dir)),
        ("config.yaml sha256 (file)", file_sha256(run_dir / "config.yaml")),
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
    """sha256 of each client's SLM checkpoint weights, the last LLM adapter, and the base models (named)."""
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
    llm = config.llm
    hashes.append(
        ModelHash(
            "base LLM", model_name("llm", llm.model, llm.gguf_file), _base_model_hash("llm", llm.model, llm.gguf_file)
        )
    )
    for source in sorted({config.slm_for(c).model for c in config.client_ids()}):
        hashes.append(ModelHash("base SLM", model_name("slm", source, None), _base_model_hash("slm", source, None)))
    return hashes


def model_name(role: str, source: str, gguf_file: str | None) -> str:
    """A base model as the report names it: the model and where it came from."""
    from crosslm_secure.embedded import LLM_GGUF, LLM_PACKAGE, SLM_PACKAGE

    if source == "embedded" and role == "llm":
        return f"SmolLM2-135M-Instruct (embedded: package {LLM_PACKAGE}, file {LLM_GGUF})"
    if source == "embedded":
        return f"all-MiniLM-L6-v2 (embedded: package {SLM_PACKAGE})"
    path = Path(source)
    return f"{path.name} ({path / gguf_file if gguf_file else path})"


def _base_model_hash(role: str, source: str, gguf_file: str | None) -> str:
    try:
        if source == "embedded":
            from crosslm_secure.embedded import LLM_GGUF, LLM_PACKAGE, SLM_PACKAGE, SLM_SUBDIR, embedded_file

            path = embedded_file(LLM_PACKAGE, LLM_GGUF) if role == "llm" else embedded_file(SLM_PACKAGE, SLM_SUBDIR)
        else:
            path = user_path(source)
            if gguf_file:
                path = path / gguf_file
    except CrossLMError:
        return "not available on this machine"
    if path.is_file():
        return file_sha256(path)
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
        digest.update(path.name.encode() + b"\0" + bytes.fromhex(file_sha256(path)))
    return digest.hexdigest()


# -- rendering -----------------------------------------------------------------------------


def report_rows(run_dir: Path, outcomes: Sequence[CheckOutcome]) -> list[Row]:
    """One row per check in report order; a check never run names the command that runs it."""
    by_name = {o.name: o for o in outcomes}
    rows = []
    for name in [*CHECKS, *([SITES] if SITES in by_name else [])]:
        outcome = by_name.get(name)
        if outcome is None:
            command = shlex.join(["crosslm", "audit", name, str(run_dir)])
            rows.append(Row(name, "not run", f"not run yet; to run it: {command}", None))
        elif outcome.result is None:
            rows.append(Row(name, "error", outcome.error or "could not run", outcome))
        else:
            undecided = not_resolvable(outcome.result)
            note = f" Not resolvable: {len(undecided)} figure(s), named in the executive summary." if undecided else ""
            rows.append(Row(name, row_state(outcome), display_summary(outcome.result) + note, outcome))
    return rows


def missing_sentence(row: Row) -> str:
    """What the report says of a check without a result."""
    return f"This check was {row.summary}." if row.outcome is None else f"This check could not run: {row.summary}"


def _result(row: Row) -> CheckResult | None:
    return row.outcome.result if row.outcome is not None else None


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(inputs: ReportInputs) -> str:
    """The whole Markdown report."""
    verdict = inputs.verdict
    lines = [f"# Audit report: {inputs.run_id}", "", f"**Overall verdict: {verdict}**", ""]
    lines += ["## Scope and sign-off", ""]
    for block in inputs.first:
        lines += [f"### {block.heading}", ""] + [line for text in block.paragraphs for line in (text, "")]
        for table in block.tables:
            lines += _md_table(table.columns, table.rows)
    lines += ["## Verdict", "", f"{verdict}: {VERDICT_MEANINGS[verdict]}.", ""]
    lines += _md_table(["check", "verdict", "summary"], [(r.name, r.state.upper(), r.summary) for r in inputs.rows])
    lines += ["## Executive summary", ""]
    lines += [f"- **{name}** {state.upper()}: {text}" for name, state, text in executive_lines(inputs)] + [""]
    lines += ["## Provenance", ""]
    lines += _md_table(["item", "value"], [(k, f"`{v}`") for k, v in inputs.provenance])
    appendix = ["## Appendix: every number", "", "As saved in `audit/<check>.json`.", ""]
    for row in inputs.rows:
        lines += [f"## {row.name}: {row.state.upper()}", ""]
        result = _result(row)
        if result is None:
            lines += [missing_sentence(row), ""]
            continue
        lines += _check_markdown(result, row.summary)
        if result.numbers:
            appendix += [f"### {row.name}", ""]
            appendix += _md_table(["number", "value"], [(k, _number(v)) for k, v in result.numbers.items()])
    return "\n".join(lines + appendix)


def _check_markdown(result: CheckResult, summary: str) -> list[str]:
    lines = [f"### {result.title}", "", summary, ""]
    if result.findings:
        lines += ["**Findings**", ""] + [f"- {f}" for f in result.findings] + [""]
    sentences = dp_sentences(result.numbers)
    lines += ["**The epsilons shown**", ""] + [f"- {s}" for s in sentences] + [""] if sentences else []
    for table in result.tables:
        lines += [f"**{table.title}**", ""] + _md_table(shown_columns(table), table.rows)
    lines += [f"![{figure}]({figure})" for figure in result.figures] + ([""] if result.figures else [])
    lines += [f"- {key}: {value}" for key, value in result.details.items() if isinstance(value, str)]
    return lines + [""]


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
