"""The audit report's first section, the part a reviewer signs: what was audited and what was not,
under which threat model, the verdict in plain words, the thresholds as the checks applied them,
the trust anchor, the models, the privacy spend, and the sign-off block with the hashes signed.

Built as plain :class:`Block` s (paragraphs and tables of text), so the Markdown and the HTML
report say the same thing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crosslm_secure.audit.base import AUDIT_DIR, CheckResult, Table
from crosslm_secure.audit.registry import CHECKS, SITES, CheckOutcome
from crosslm_secure.audit.report_figures import SETTING_CHECKS, not_resolvable
from crosslm_secure.audit.report_sections import VERDICT_MEANINGS
from crosslm_secure.audit.trust import PINNED, SELF_ATTESTED_SENTENCE
from crosslm_secure.config import Config, config_to_dict
from crosslm_secure.errors import CrossLMError
from crosslm_secure.report.budgets import SCORE_RELEASE_MEANING

THREAT_MODEL = (
    'Threat model: SECURITY.md of crosslm-secure, "Parties and trust" (an honest-but-curious server; '
    'clients curious about each other; the decryptor is a client) and "Audit threat model" (the party '
    "guarded against is the operator who holds the run folder and wants the run to look more private than "
    "it was; its table says who can forge what and what this audit then shows)."
)
NOT_AUDITED = (
    "what a party did outside the files it wrote or signed (a live process's memory, copies sent elsewhere)",
    "whether the models are accurate: this audit is about privacy and protocol, not quality",
    "attacks stronger than the ones run here (more reference models, more records, other attacks)",
)


@dataclass(frozen=True)
class Block:
    """One part of the first section: a heading, paragraphs of plain text, and tables."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass(frozen=True)
class SignedFile:
    """A file whose hash the reviewer signs."""

    what: str
    sha256: str


def first_section(
    run_dir: Path, outcomes: Sequence[CheckOutcome], config: Config, models: Sequence[Any], verdict: str
) -> list[Block]:
    """Every block of the first section, in reading order."""
    return [
        Block("Scope", [*scope_lines(outcomes, config), THREAT_MODEL]),
        Block("Verdict in plain words", [verdict_paragraph(outcomes, verdict)]),
        Block(
            "Thresholds as applied",
            [
                "The thresholds and settings as each check applied them (a check that did not record them shows "
                "the run's config); an overridden one names the --set that changed it."
            ],
            [thresholds_table(outcomes, config)],
        ),
        Block("Trust anchor", [trust_anchor(outcomes)]),
        Block(
            "Models",
            [],
            [Table("models", ["model", "source", "sha256"], [[m.role, m.source, m.sha256] for m in models])],
        ),
        privacy_block(run_dir, config),
        signoff_block(run_dir, outcomes, models),
    ]


def scope_lines(outcomes: Sequence[CheckOutcome], config: Config) -> list[str]:
    """What was audited (per check that gave a result) and what was not."""
    results = {o.name: o.result for o in outcomes if o.result is not None}
    dp_client = _dp_client(results.get("dp"), config)
    what = {
        "protocol": "the server's files in the run folder: only allowed files, only a public CKKS context, no "
        "per-client score, every message signed and accepted once, the coordinator's seal",
        "ledger": f"the privacy ledgers of {', '.join(config.client_ids())}: hash chains, signatures, every epsilon "
        "recomputed with dp-accounting, budgets",
        "mia": "membership-inference attacks on each client's SLM and on the server LLM",
        "dp": f"a re-run of {dp_client}'s DP-SGD training with canaries, against the epsilon it claims",
        SITES: "the sites' own signed audits of their models and ledgers",
    }
    audited = [
        f"{name} ({results[name].title if results[name].details.get('at_the_sites') else what[name]})"
        for name in [*CHECKS, SITES]
        if name in results
    ]
    not_audited = [*NOT_AUDITED]
    others = [c for c in config.client_ids() if c != dp_client]
    if others and "dp" in results and not results["dp"].details.get("at_the_sites"):
        not_audited.append(f"the DP-SGD of {', '.join(others)} (the DP audit re-runs one client's training)")
    if SITES not in results:
        not_audited.append("the sites' own audits (none were handed in with --site-audits)")
    missing = [name for name in CHECKS if name not in results]
    if missing:
        not_audited.append(f"the checks that gave no result: {', '.join(missing)}")
    return [
        "Audited: " + ("; ".join(audited) if audited else "nothing: no check gave a result") + ".",
        "Not audited: " + "; ".join(not_audited) + ".",
    ]


def verdict_paragraph(outcomes: Sequence[CheckOutcome], verdict: str) -> str:
    """The overall verdict in one plain paragraph: what passed, failed, could not run, and what it means."""
    by_name = {o.name: o for o in outcomes}
    groups: dict[str, list[str]] = {}
    for name in [*CHECKS, *([SITES] if SITES in by_name else [])]:
        outcome = by_name.get(name)
        state = "not run" if outcome is None else "could not run" if outcome.result is None else outcome.result.verdict
        groups.setdefault(state, []).append(name)
    counted = "; ".join(f"{state}: {', '.join(names)}" for state, names in groups.items())
    text = f"The overall verdict is {verdict}: {VERDICT_MEANINGS[verdict]}. By check, {counted}."
    undecided = [line for o in outcomes if o.result is not None for line in not_resolvable(o.result)]
    if undecided:
        text += (
            f" {len(undecided)} figure(s) could not be decided and count as not resolvable, not as a pass: "
            + "; ".join(undecided)
            + "."
        )
    if verdict == "SELF-ATTESTED":
        text += f" No check failed, but {SELF_ATTESTED_SENTENCE}."
    return text + " A pass means these checks found nothing wrong; it is evidence, not a proof of privacy."


def thresholds_table(outcomes: Sequence[CheckOutcome], config: Config) -> Table:
    """Each audit setting as the checks applied it, overridden ones marked, plus the run's epsilon budget."""
    run_values = config.audit.model_dump(mode="json")
    rows = []
    for key, run_value in run_values.items():
        applied: dict[str, list[str]] = {}
        overrides = []
        for outcome in outcomes:
            result = outcome.result
            if result is None or not result.settings or key not in SETTING_CHECKS.get(outcome.name, ()):
                continue
            settings, typed = result.settings, result.overrides
            applied.setdefault(_value(settings.get(key, run_value)), []).append(outcome.name)
            overrides += [item for item in typed if item.split("=", 1)[0].strip() == f"audit.{key}"]
        if not applied:
            cell, note = _value(run_value), "the run's config (no check recorded applying it)"
        else:
            cell = "; ".join(f"{value} ({', '.join(names)})" for value, names in applied.items())
            note = "the run's config"
        if overrides:
            note = f"OVERRIDDEN by --set {', '.join(sorted(set(overrides)))}; the run's config says {_value(run_value)}"
        rows.append([f"audit.{key}", cell, note])
    rows.append(
        [
            "privacy.epsilon_max",
            _value(config.privacy.epsilon_max),
            "the run's config (the ledger check's budget; an audit cannot override it)",
        ]
    )
    return Table("thresholds", ["setting", "as applied (checks)", "from"], rows)


def trust_anchor_line(outcomes: Sequence[CheckOutcome]) -> str:
    """What the signatures were checked against, as the checks recorded it."""
    anchors = sorted(
        {str(o.result.details["trust_anchor"]) for o in outcomes if o.result and "trust_anchor" in o.result.details}
    )
    return " / ".join(anchors) or "not recorded (run the protocol and ledger checks)"


def trust_anchor(outcomes: Sequence[CheckOutcome]) -> str:
    """The keys every signature was checked against, in words: a pinned registry, or self-attested."""
    recorded = [o.result.details for o in outcomes if o.result and "trust_anchor" in o.result.details]
    if not recorded:
        return "Not recorded: run the protocol and ledger checks, which check the signatures."
    if all(details.get("identities") == PINNED for details in recorded):
        return f"Pinned: {trust_anchor_line(outcomes)}. Every signature was checked against this registry."
    return f"Self-attested: {SELF_ATTESTED_SENTENCE}."


def privacy_block(run_dir: Path, config: Config) -> Block:
    """Target and spent epsilon and delta per client, from the verified ledgers."""
    from crosslm_secure.report.budgets import run_budgets

    target = config.privacy.target_epsilon if config.privacy.dp else math.inf
    target_text = "none (no DP)" if target is None or math.isinf(target) else f"{target:g}"
    try:
        budgets = run_budgets(run_dir)
    except CrossLMError as exc:
        return Block("Privacy: target and spent epsilon", [f"Target epsilon {target_text}; spend not shown: {exc}"])
    rows = [
        [
            b.client_id,
            target_text,
            "inf (no DP)" if not b.private else f"{b.epsilon_spent:.3f} of budget {b.epsilon_max:g}",
            "-" if b.delta is None else f"{b.delta:.1e}",
            "-" if b.client_level_epsilon is None else f"{b.client_level_epsilon:.3g}",
        ]
        for b in budgets
    ]
    columns = [
        "client",
        "target epsilon",
        "spent epsilon (record level)",
        "delta",
        "score-release epsilon (client level)",
    ]
    lines = [
        "Record level: one record (one note) is the privacy unit. The target is what the run was configured to "
        "reach; the spent epsilon is what the client's ledger records, the budget the most it may spend. They are "
        "read with the keys run.json names; whether the ledgers verify against the trust anchor is the ledger "
        "check's verdict."
    ]
    if any(b.client_level_epsilon is not None for b in budgets):
        lines.append(SCORE_RELEASE_MEANING)
    return Block("Privacy: target and spent epsilon", lines, [Table("privacy", columns, rows)])


def signoff_block(run_dir: Path, outcomes: Sequence[CheckOutcome], models: Sequence[Any]) -> Block:
    """The reviewer's lines and every hash the signature covers."""
    rows = [[f.what, f.sha256] for f in signed_files(run_dir, outcomes, models)]
    return Block(
        "Sign-off",
        [
            "I reviewed this report and the files whose sha256 is listed below; my signature covers exactly these.",
            "Reviewer name: ______________________________",
            "Date: ______________________________",
            "Signature: ______________________________",
        ],
        [Table("signed hashes", ["what", "sha256"], rows)],
    )


def signed_files(run_dir: Path, outcomes: Sequence[CheckOutcome], models: Sequence[Any]) -> list[SignedFile]:
    """The config hashes, the model hashes and the sha256 of each check's saved result."""
    files = [
        SignedFile("config (resolved, canonical JSON)", config_sha256(run_dir)),
        SignedFile("config.yaml (file)", file_sha256(Path(run_dir) / "config.yaml")),
    ]
    files += [SignedFile(f"{m.role}: {m.source}", m.sha256) for m in models if m.sha256 not in ("-", "")]
    for outcome in outcomes:
        if outcome.result is not None:
            path = Path(run_dir) / AUDIT_DIR / f"{outcome.name}.json"
            files.append(SignedFile(f"{AUDIT_DIR}/{outcome.name}.json", file_sha256(path)))
    return files


def config_sha256(run_dir: Path) -> str:
    """sha256 of the run's resolved config as canonical JSON (the hash a reviewer compares)."""
    from crosslm_secure.audit.runinfo import run_config

    canonical = json.dumps(config_to_dict(run_config(run_dir)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a file, or ``missing``."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()


def _dp_client(result: CheckResult | None, config: Config) -> str:
    if result is not None and "client" in result.numbers:
        return str(result.numbers["client"])
    return config.audit.dp_client or config.client_ids()[0]


def _value(value: Any) -> str:
    return "none" if value is None else str(value)
