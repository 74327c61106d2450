"""Protocol audit (issue #5, part 3): what the server held, shown from the run folder alone.

**Server artefacts** are every file in the run folder except ``clients/<id>/...`` (each
client's own silo: SLM checkpoint, privacy ledger) and ``audit/`` (this tool's output).
Five sub-checks, each finding one line naming the file:

1. *public context*: ``server/ckks_public_context.bin`` loads as a TenSEAL CKKS context with
   no secret key and no Galois keys, and its fingerprint is the one in the dealer's signed
   announcement and in the last ``key_ceremony`` event. A resume or a rejoin redoes the
   ceremony: every earlier context is kept in ``server/ckks_contexts/<fingerprint>.bin`` and
   checked the same way against its event.
2. *no secrets*: no server file is, or carries inside it (also base64/hex-encoded in text),
   a secret TenSEAL context (crosslm ``CLMC`` framing or a bare TenSEAL context), a PEM or
   PKCS#8 DER private key, a passphrase-sealed secret file (``CLMP``), a key file of ours
   (``signing.pem``/``exchange.pem``), a bare 32-byte file (a raw Ed25519/X25519 key), or a
   JSON field named like a private key.
3. *no per-client scores*: ``transcript.jsonl`` rows hold only the documented fields
   (protocols/wire-protocol.md), each of its type; ``events.jsonl``, ``metrics.jsonl``,
   ``metrics.csv`` and ``state.json`` hold no list of numbers and no per-client score field
   (audit/score_checks.py).
4. *128-bit HE*: the ring degree and total coefficient-modulus bits read from the context
   itself are within SEAL's 128-bit table, and SEAL accepted the parameters.
0. *allowlist*: every server file is listed in ``manifest.json`` (written by the run store)
   with its sha256, and validates as the kind it declares (crosslm_secure/manifest.py,
   audit/artefact_checks.py); the blacklist scans below are a second layer.
5. *signed, accepted once*: every transcript row has its envelope routing; every incoming
   message the server used was ``accepted`` (signature verified, sequence fresh); no
   ``(sender, seq)`` and no message hash was accepted twice; ``seq`` grows per sender.
6. *sealed, keys pinned*: ``seal.json`` verifies as the coordinator's key and every file it
   seals (state, transcript, run.json, config, logs, ledger copies) is unchanged
   (audit/seal_checks.py); with ``--registry`` every identity ``run.json`` records is the
   registry's. Without a registry the keys are the folder's own: the result says so
   (audit/trust.py), and it is never a plain PASS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crosslm_secure.aggregation.schemes import scheme_for
from crosslm_secure.audit.artefact_checks import check_manifest
from crosslm_secure.audit.base import AuditError, CheckResult, Outcome, Table
from crosslm_secure.audit.pipeline import Audit, run_audit
from crosslm_secure.audit.progress import progress_bar
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.score_checks import check_no_scores
from crosslm_secure.audit.seal_checks import check_seal
from crosslm_secure.audit.secret_scan import scan_bytes
from crosslm_secure.audit.transcript_checks import (
    TRANSCRIPT,
    SubCheck,
    check_signed_once,
    read_jsonl_rows,
)
from crosslm_secure.audit.trust import TrustAnchor
from crosslm_secure.config import AuditConfig, Config
from crosslm_secure.crypto.ckks import SEAL_128_BIT_MAX_MODULUS, ScoreContext
from crosslm_secure.errors import CryptoError
from crosslm_secure.manifest import MANIFEST_FILE, server_files
from crosslm_secure.methods import method_for
from crosslm_secure.runstore import RunStore

PUBLIC_CONTEXT = "server/ckks_public_context.bin"
CONTEXTS_DIR = "server/ckks_contexts"
ANNOUNCEMENT = "server/ckks_announcement.json"
SERVER_DEFINITION = (
    "Server artefacts: every file in the run folder except clients/<id>/... (each client's silo) "
    "and audit/ (this tool's output)."
)


def server_artefacts(run_dir: Path) -> list[Path]:
    """Every server artefact of a run (see the module docstring), sorted; the manifest included."""
    manifest = run_dir / MANIFEST_FILE
    return sorted([*server_files(run_dir), *([manifest] if manifest.is_file() else [])])


def run_protocol_audit(
    run_dir: Path, settings: AuditConfig | None = None, *, progress: bool = True, anchor: TrustAnchor | None = None
) -> CheckResult:
    """Audit what the server held and how messages were accepted, from the run folder.

    Args:
        run_dir: ``runs/<id>``.
        settings: unused (the protocol audit has no knobs); accepted for a uniform signature.
        progress: show a progress bar over the scanned files.
        anchor: the keys to trust (default: the run folder's own, reported as self-attested).

    Raises:
        AuditError: the folder is not a run folder or has no transcript.
    """
    return run_audit(ProtocolAudit(progress=progress, anchor=anchor or TrustAnchor()), run_dir, settings)


@dataclass
class ServerSide:
    """What the protocol audit reads: the run's config, whether it used CKKS, the server artefacts."""

    root: Path
    config: Config
    uses_ckks: bool
    files: list[Path]


@dataclass
class ProtocolEvidence:
    """Every sub-check, and what they measured on the way."""

    checks: list[SubCheck]
    context: ScoreContext | None
    kinds: dict[Path, str]
    """Server artefact -> what the secret scan recognised it as."""
    scanned_bytes: int
    counts: dict[str, int]
    """Messages sent, accepted and refused (``check_signed_once``)."""


@dataclass
class ProtocolAudit(Audit[ServerSide, ProtocolEvidence]):
    """Server keys, secrets, per-client scores, HE parameters, signatures, manifest and seal."""

    progress: bool = True
    anchor: TrustAnchor = field(default_factory=TrustAnchor)

    def open(self, run_dir: Path, settings: AuditConfig | None) -> ServerSide:
        del settings  # the protocol audit has no knobs
        config = run_config(run_dir)
        if not (run_dir / TRANSCRIPT).is_file():
            raise AuditError(f"audit protocol: {run_dir} has no {TRANSCRIPT}; audit a run that exchanged messages")
        scheme = scheme_for(config.feedback.aggregator)
        uses_ckks = method_for(config.run.method).gets_feedback and scheme.needs_key_ceremony
        return ServerSide(run_dir, config, uses_ckks, server_artefacts(run_dir))

    def measure(self, server: ServerSide) -> ProtocolEvidence:
        run_dir = server.root
        context_check, context = _check_public_context(run_dir, server.config, server.uses_ckks)
        he_check = _check_he_parameters(context, server.uses_ckks)
        manifest_check = check_manifest(run_dir, server.config.client_ids())
        secrets_check, kinds, scanned_bytes = _check_no_secrets(run_dir, server.files, progress=self.progress)
        scores_check = check_no_scores(run_dir, server.config)
        signing_check, counts = check_signed_once(run_dir)
        seal_check = check_seal(run_dir, self.anchor)
        checks = [context_check, secrets_check, scores_check, he_check, signing_check, manifest_check, seal_check]
        return ProtocolEvidence(checks, context, kinds, scanned_bytes, counts)

    def judge(self, server: ServerSide, evidence: ProtocolEvidence) -> Outcome:
        checks = evidence.checks
        findings = [line for check in checks for line in check.findings]
        numbers = _numbers(evidence, server.files)
        result = CheckResult(
            name="protocol",
            title="Protocol audit: server keys, scores, HE parameters, signatures",
            verdict="pass" if not findings else "fail",
            summary=_summary(server, evidence, numbers, len(findings)),
            numbers=numbers,
            tables=[
                Table(
                    "Sub-checks",
                    ["sub-check", "verdict", "evidence"],
                    [[c.name, c.verdict, c.evidence] for c in checks],
                ),
                Table("Server artefacts scanned", ["file", "bytes", "recognised as"], _artefact_rows(server, evidence)),
            ],
            findings=findings,
            details={
                "server_artefacts": SERVER_DEFINITION,
                "uses_ckks": server.uses_ckks,
                # which sub-check found what, so a reader (and test_forgery) can tell the allowlist
                # from the blacklist scans; the flat ``findings`` above stay the report's list
                "findings_by_subcheck": {c.name: c.findings for c in checks},
                **self.anchor.details(),
            },
        )
        return Outcome(result)


def _artefact_rows(server: ServerSide, evidence: ProtocolEvidence) -> list[list[str]]:
    return [[str(p.relative_to(server.root)), str(p.stat().st_size), evidence.kinds.get(p, "-")] for p in server.files]


def _artefact_rows(server: ServerSide, evidence: ProtocolEvidence) -> list[list[str]]:
    return [[str(p.relative_to(server.root)), str(p.stat().st_size), evidence.kinds.get(p, "-")] for p in server.files]


def _numbers(evidence: ProtocolEvidence, files: list[Path]) -> dict[str, Any]:
    numbers: dict[str, Any] = {
        "server_files_scanned": len(files),
        "server_bytes_scanned": evidence.scanned_bytes,
        "subchecks_failed": sum(c.verdict == "fail" for c in evidence.checks),
        **evidence.counts,
    }
    context = evidence.context
    if context is not None:
        numbers["poly_modulus_degree"] = (
            context.tenseal.seal_context().data.key_context_data().parms().poly_modulus_degree()
        )
        numbers["coeff_modulus_bits"] = _modulus_bits(context)
    return numbers


def _summary(server: ServerSide, evidence: ProtocolEvidence, numbers: dict[str, Any], findings: int) -> str:
    if findings:
        return (
            f"{len(server.files)} server artefacts scanned; {findings} finding(s) in "
            f"{numbers['subchecks_failed']} of {len(evidence.checks)} sub-checks."
        )
    return (
        f"{len(server.files)} server artefacts scanned; "
        + ("the server held only a public 128-bit CKKS context, " if server.uses_ckks else "no CKKS context was used, ")
        + "no secret key or per-client score vector, "
        f"and all {evidence.counts['messages_in_accepted']} incoming messages were signed and accepted once."
    )


# -- 1. the public context -----------------------------------------------------------------


def _check_public_context(run_dir: Path, config: Config, uses_ckks: bool) -> tuple[SubCheck, ScoreContext | None]:
    check = SubCheck("server holds only a public CKKS context")
    path = run_dir / PUBLIC_CONTEXT
    if not uses_ckks:
        if method_for(config.run.method).gets_feedback and not scheme_for(config.feedback.aggregator).protected:
            check.findings.append(
                f"config.yaml: feedback.aggregator is {config.feedback.aggregator!r}; the server saw every "
                "client's plaintext score vector (unprotected run)"
            )
        check.evidence = f"method {config.run.method}, aggregator {config.feedback.aggregator}: no CKKS context used"
        return check, None
    if not path.is_file():
        check.findings.append(f"{PUBLIC_CONTEXT}: missing; the run used CKKS but the server's context was not kept")
        return check, None
    try:
        context = ScoreContext.from_bytes(path.read_bytes())
    except CryptoError as exc:
        check.findings.append(f"{PUBLIC_CONTEXT}: does not load as a crosslm CKKS context ({exc})")
        return check, None
    if context.has_secret_key:
        check.findings.append(f"{PUBLIC_CONTEXT}: holds a CKKS SECRET key; the server could decrypt")
    if context.has_galois_keys:
        check.findings.append(f"{PUBLIC_CONTEXT}: carries Galois keys; aggregation contexts must not")
    fingerprint = context.fingerprint
    announced = _announced_fingerprint(run_dir, check)
    if announced is not None and announced != fingerprint:
        check.findings.append(
            f"{ANNOUNCEMENT}: announces context {announced[:16]}..., the server kept {fingerprint[:16]}..."
        )
    ceremonies = [e for e in read_jsonl_rows(run_dir / "events.jsonl") if e.get("event") == "key_ceremony"]
    if ceremonies and ceremonies[-1].get("fingerprint") != fingerprint:
        check.findings.append(
            f"events.jsonl: the last key_ceremony dealt {str(ceremonies[-1].get('fingerprint'))[:16]}..., "
            f"but {PUBLIC_CONTEXT} holds {fingerprint[:16]}..."
        )
    for event in ceremonies:  # a resume or a rejoin redoes the ceremony: each context is kept and checked
        _check_earlier_context(run_dir, str(event.get("fingerprint")), fingerprint, check)
    check.evidence = (
        f"{PUBLIC_CONTEXT}: TenSEAL CKKS, secret key: {'yes' if context.has_secret_key else 'no'}, "
        f"Galois keys: {'yes' if context.has_galois_keys else 'no'}, fingerprint {fingerprint[:16]}... "
        f"(announcement {'matches' if announced == fingerprint else 'differs'}, "
        f"{len(ceremonies)} key_ceremony event(s))"
    )
    return check, context


def _check_earlier_context(run_dir: Path, dealt: str, current: str, check: SubCheck) -> None:
    """The context a key_ceremony event dealt must be kept in ``server/ckks_contexts/`` and be public."""
    path = run_dir / CONTEXTS_DIR / f"{dealt}.bin"
    if not path.is_file():
        if dealt != current:  # runs made before contexts were kept have only the current one
            check.findings.append(
                f"events.jsonl: key_ceremony dealt {dealt[:16]}..., kept neither in {PUBLIC_CONTEXT} "
                f"nor in {CONTEXTS_DIR}/"
            )
        return
    try:
        kept = ScoreContext.from_bytes(path.read_bytes())
    except CryptoError as exc:
        check.findings.append(f"{CONTEXTS_DIR}/{path.name}: does not load as a crosslm CKKS context ({exc})")
        return
    if kept.fingerprint != dealt:
        check.findings.append(
            f"{CONTEXTS_DIR}/{path.name}: holds context {kept.fingerprint[:16]}..., not {dealt[:16]}..."
        )
    if kept.has_secret_key:
        check.findings.append(f"{CONTEXTS_DIR}/{path.name}: holds a CKKS SECRET key; the server could decrypt")
    if kept.has_galois_keys:
        check.findings.append(f"{CONTEXTS_DIR}/{path.name}: carries Galois keys; aggregation contexts must not")


def _announced_fingerprint(run_dir: Path, check: SubCheck) -> str | None:
    path = run_dir / ANNOUNCEMENT
    run_id = RunStore(run_dir).run_id  # recorded at creation: a renamed copy keeps it
    try:
        raw = json.loads(path.read_bytes())
        if raw["run_id"] != run_id:
            check.findings.append(f"{ANNOUNCEMENT}: announced for run {raw['run_id']!r}, not {run_id!r}")
        return str(raw["fingerprint"])
    except FileNotFoundError:
        check.findings.append(f"{ANNOUNCEMENT}: missing; the context's origin cannot be shown")
    except (ValueError, KeyError, TypeError):
        check.findings.append(f"{ANNOUNCEMENT}: not the dealer's signed JSON announcement")
    return None


# -- 4. HE parameters ----------------------------------------------------------------------


def _modulus_bits(context: ScoreContext) -> int:
    return int(context.tenseal.seal_context().data.key_context_data().total_coeff_modulus_bit_count())


def _check_he_parameters(context: ScoreContext | None, uses_ckks: bool) -> SubCheck:
    check = SubCheck("HE parameters meet 128-bit security")
    if context is None:
        check.evidence = "no CKKS context to check" if not uses_ckks else "context did not load (see above)"
        if uses_ckks:
            check.findings.append(f"{PUBLIC_CONTEXT}: parameters cannot be checked; the context did not load")
        return check
    data = context.tenseal.seal_context().data
    degree = int(data.key_context_data().parms().poly_modulus_degree())
    bits = _modulus_bits(context)
    limit = SEAL_128_BIT_MAX_MODULUS.get(degree)
    if limit is None:
        check.findings.append(f"{PUBLIC_CONTEXT}: ring degree N={degree} is not in the 128-bit table")
    elif bits > limit:
        check.findings.append(
            f"{PUBLIC_CONTEXT}: {bits} coefficient-modulus bits at N={degree} exceed the 128-bit limit {limit}"
        )
    if not data.parameters_set():
        check.findings.append(f"{PUBLIC_CONTEXT}: SEAL refused the parameters ({data.parameters_error_message()})")
    check.evidence = (
        f"N={degree}, total coefficient modulus {bits} bits, 128-bit limit {limit} "
        f"(HE standard / SEAL table {SEAL_128_BIT_MAX_MODULUS}); preset {context.preset.name}"
    )
    return check


# -- 2. secrets in server files ------------------------------------------------------------


def _check_no_secrets(run_dir: Path, files: list[Path], *, progress: bool) -> tuple[SubCheck, dict[Path, str], int]:
    check = SubCheck("no secret key in any server artefact")
    kinds: dict[Path, str] = {}
    total = 0
    for path in progress_bar(files, "scanning server artefacts", enabled=progress):
        name = str(path.relative_to(run_dir))
        data = path.read_bytes()
        total += len(data)
        problems, kind = scan_bytes(data, file_name=path.name)
        kinds[path] = kind
        check.findings += [f"{name}: {problem}" for problem in problems]
    check.evidence = (
        f"{len(files)} files, {total} bytes: TenSEAL contexts (framed and bare), PEM/DER private keys, "
        "sealed secret files, raw 32-byte keys, key-named JSON fields; also inside base64/hex text"
    )
    return check, kinds, total
