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
   ``metrics.csv`` and ``state.json`` hold no list of numbers and no per-client score field.
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

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crosslm_secure.aggregation.schemes import scheme_for
from crosslm_secure.audit.artefact_checks import check_manifest
from crosslm_secure.audit.base import AuditError, CheckResult, Table, save_result
from crosslm_secure.audit.progress import progress_bar
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.seal_checks import check_seal
from crosslm_secure.audit.secret_scan import scan_bytes
from crosslm_secure.audit.transcript_checks import (
    TRANSCRIPT,
    TRANSCRIPT_FIELDS,
    SubCheck,
    check_signed_once,
    read_jsonl_rows,
    transcript_row_problems,
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
AGGREGATE_LOGS = ("events.jsonl", "metrics.jsonl", "metrics.csv", "state.json")
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
    del settings
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    if not (run_dir / TRANSCRIPT).is_file():
        raise AuditError(f"audit protocol: {run_dir} has no {TRANSCRIPT}; audit a run that exchanged messages")
    scheme = scheme_for(config.feedback.aggregator)
    uses_ckks = method_for(config.run.method).gets_feedback and scheme.needs_key_ceremony
    context_check, context = _check_public_context(run_dir, config, uses_ckks)
    he_check = _check_he_parameters(context, uses_ckks)
    files = server_artefacts(run_dir)
    manifest_check = check_manifest(run_dir, config.client_ids())
    secrets_check, kinds, scanned_bytes = _check_no_secrets(run_dir, files, progress=progress)
    scores_check = _check_no_scores(run_dir, config)
    signing_check, counts = check_signed_once(run_dir)
    anchor = anchor or TrustAnchor()
    seal_check = check_seal(run_dir, anchor)
    checks = [context_check, secrets_check, scores_check, he_check, signing_check, manifest_check, seal_check]
    findings = [line for check in checks for line in check.findings]
    verdict = "pass" if not findings else "fail"
    numbers: dict[str, Any] = {
        "server_files_scanned": len(files),
        "server_bytes_scanned": scanned_bytes,
        "subchecks_failed": sum(c.verdict == "fail" for c in checks),
        **counts,
    }
    if context is not None:
        numbers["poly_modulus_degree"] = (
            context.tenseal.seal_context().data.key_context_data().parms().poly_modulus_degree()
        )
        numbers["coeff_modulus_bits"] = _modulus_bits(context)
    summary = f"{len(files)} server artefacts scanned; " + (
        ("the server held only a public 128-bit CKKS context, " if uses_ckks else "no CKKS context was used, ")
        + "no secret key or per-client score vector, "
        f"and all {counts['messages_in_accepted']} incoming messages were signed and accepted once."
        if verdict == "pass"
        else f"{len(findings)} finding(s) in {numbers['subchecks_failed']} of {len(checks)} sub-checks."
    )
    result = CheckResult(
        name="protocol",
        title="Protocol audit: server keys, scores, HE parameters, signatures",
        verdict=verdict,
        summary=summary,
        numbers=numbers,
        tables=[
            Table(
                "Sub-checks", ["sub-check", "verdict", "evidence"], [[c.name, c.verdict, c.evidence] for c in checks]
            ),
            Table(
                "Server artefacts scanned",
                ["file", "bytes", "recognised as"],
                [[str(p.relative_to(run_dir)), str(p.stat().st_size), kinds.get(p, "-")] for p in files],
            ),
        ],
        findings=findings,
        details={
            "server_artefacts": SERVER_DEFINITION,
            "uses_ckks": uses_ckks,
            # which sub-check found what, so a reader (and test_forgery) can tell the allowlist
            # from the blacklist scans; the flat ``findings`` above stay the report's list
            "findings_by_subcheck": {c.name: c.findings for c in checks},
            **anchor.details(),
        },
    )
    save_result(run_dir, result)
    return result


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


# -- 3. no per-client scores ---------------------------------------------------------------


def _check_no_scores(run_dir: Path, config: Config) -> SubCheck:
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
