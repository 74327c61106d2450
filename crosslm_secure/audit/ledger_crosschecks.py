"""Ledger cross-checks (issue #13): a ledger is compared with what the run shows, not trusted.

Each check returns one finding per disagreement:

* **signed and complete**: every configured client's ledger exists, is not empty, keeps its
  head, belongs to this run, and every entry verifies against the client's enrolled key
  (``report/run_ledgers.py``);
* **config**: every DP-SGD entry's noise multiplier, sample rate and delta are the ones the
  resolved config gives for the client's record count (noise recomputed from
  ``target_epsilon`` over the planned steps), its steps within the planned steps per round,
  its accountant and budget the configured ones; every score-release entry's noise sigma is
  ``feedback.noise_sigma``, and its noise and sensitivity are what that sigma gives for its
  count and contributors;
* **rounds**: every round ``state.json`` says completed has, for each client whose
  ``train.reply`` the server accepted, a training entry; every accepted ``score.reply`` of a
  noised release has its score-release entry; no entry lies beyond the last round;
* **claims**: every signed epsilon claim the transcript keeps (an accepted ``train.reply``)
  verifies against the client's enrolled key, and the client's ledger holds that very entry
  (same position and hash, same epsilon), so a ledger cut short or rewritten after the
  run disagrees with what the client told the server.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from crosslm_secure.audit.transcript_checks import TRANSCRIPT, read_jsonl_rows
from crosslm_secure.config import Config
from crosslm_secure.crypto.keys import PublicIdentity
from crosslm_secure.errors import CrossLMError, RunError
from crosslm_secure.privacy.ledger import LEDGER_FILE, LedgerEntry, LedgerError
from crosslm_secure.privacy.ledger_format import Mechanism
from crosslm_secure.report.run_ledgers import (
    configured_dp_sgd,
    ledger_problems,
    mechanism_disagreements,
    score_release_disagreements,
)
from crosslm_secure.runstore import RunStore


def load_verified_ledgers(
    store: RunStore, config: Config, identities: dict[str, list[PublicIdentity]]
) -> tuple[dict[str, list[LedgerEntry]], list[str]]:
    """Every configured client's chain-verified ledger, and one finding per refused ledger or
    untrustworthy entry (its entries are still recomputed, so every problem is shown).

    ``identities`` are the keys signatures are checked against (audit/trust.py: the pinned
    registry's, or the run folder's own)."""
    findings: list[str] = []
    if not identities:
        findings.append(
            "run.json: records no enrolled public keys, so no ledger entry can be shown to be its client's "
            "(the run predates signed ledgers); re-run it"
        )
    ledgers: dict[str, list[LedgerEntry]] = {}
    for client_id in config.client_ids():
        try:
            ledgers[client_id], problems = ledger_problems(store, client_id, identities)
        except LedgerError as exc:
            findings.append(f"clients/{client_id}/{LEDGER_FILE}: does not verify: {exc}")
            continue
        findings += problems
    return ledgers, findings


def record_counts(config: Config) -> dict[str, int]:
    """Each client's private record count, from the run's own data and split (seeded, deterministic)."""
    from crosslm_secure.data.loaders import load_labelled_data
    from crosslm_secure.data.partition import partition_clients

    train, test = load_labelled_data(config.data, config.task, seed=config.run.seed)
    split = partition_clients(train, test, config.partition, config.client_ids(), seed=config.run.seed)
    return {client.client_id: len(client.train) for client in split.clients}


def config_findings(config: Config, ledgers: dict[str, list[LedgerEntry]]) -> list[str]:
    """DP-SGD entries against the mechanism the config prescribes, score releases against its feedback noise."""
    findings = release_findings(config, ledgers)
    if not config.privacy.dp:
        return findings
    try:
        counts = record_counts(config)
    except CrossLMError as exc:
        return [f"config.yaml: the run's data cannot be loaded to recompute the mechanism ({exc})"]
    for client_id, entries in ledgers.items():
        name = f"clients/{client_id}/{LEDGER_FILE}"
        try:
            expected = configured_dp_sgd(config, client_id, counts[client_id])
        except (CrossLMError, KeyError) as exc:
            findings.append(f"{name}: the configured mechanism cannot be recomputed ({exc})")
            continue
        for number, entry in enumerate(entries, start=1):
            if entry.mechanism == Mechanism.NON_PRIVATE:
                findings.append(f"{name} line {number}: non-private training, but the config has privacy.dp on")
            if entry.accountant != config.privacy.accountant:
                findings.append(
                    f"{name} line {number}: accountant {entry.accountant!r}, the config's is "
                    f"{config.privacy.accountant!r}"
                )
            if entry.mechanism != Mechanism.DP_SGD:
                continue
            for problem in mechanism_disagreements(entry, expected):
                findings.append(f"{name} line {number} (round {entry.round}): {problem}")
    return findings


def release_findings(config: Config, ledgers: dict[str, list[LedgerEntry]]) -> list[str]:
    """Score-release entries against ``feedback.noise_sigma`` and the run's number of clients."""
    findings = []
    clients = len(config.client_ids())
    for client_id, entries in ledgers.items():
        name = f"clients/{client_id}/{LEDGER_FILE}"
        for number, entry in enumerate(entries, start=1):
            if entry.mechanism != Mechanism.GAUSSIAN_SCORE_RELEASE:
                continue
            problems = score_release_disagreements(entry, config.feedback.noise_sigma)
            contributors = entry.details.get("contributors")
            if isinstance(contributors, int) and contributors > clients:
                problems.append(f"{contributors} contributors, but the run has {clients} clients")
            findings += [f"{name} line {number} (round {entry.round}): {problem}" for problem in problems]
    return findings


def round_findings(run_dir: Path, config: Config, ledgers: dict[str, list[LedgerEntry]]) -> list[str]:
    """Ledgers against ``state.json`` and the transcript: no completed round may lack its entries."""
    try:
        state = RunStore(run_dir).load_state()
    except RunError as exc:
        return [f"state.json: {exc}"]
    if state is None:
        return ["state.json: missing; the ledgers cannot be matched to rounds"]
    completed = state.completed_round
    rows = [r for r in read_jsonl_rows(run_dir / TRANSCRIPT) if isinstance(r, dict)]
    accepted = Counter(
        (r.get("type"), r.get("sender"), r.get("round"))
        for r in rows
        if r.get("direction") == "in" and r.get("status") == "accepted"
    )
    findings: list[str] = []
    trained_rounds = {rnd for (kind, _, rnd) in accepted if kind == "train.reply"}
    for round_index in range(1, completed + 1):
        if round_index not in trained_rounds:  # llm_zero_shot completes only round 0
            findings.append(f"{TRANSCRIPT}: round {round_index} is completed in state.json but no train.reply of it")
    training = Mechanism.DP_SGD if config.privacy.dp else Mechanism.NON_PRIVATE
    for client_id, entries in ledgers.items():
        name = f"clients/{client_id}/{LEDGER_FILE}"
        mine = Counter((e.mechanism, e.round) for e in entries)
        for (kind, sender, round_index), count in sorted(accepted.items(), key=str):
            if sender != client_id or not isinstance(round_index, int) or round_index > completed:
                continue
            if kind == "train.reply" and _trains(config, client_id) and mine[(training, round_index)] == 0:
                findings.append(
                    f"{name}: no {training} entry for round {round_index}, whose train.reply the server accepted"
                )
            if kind == "score.reply" and config.feedback.noise_sigma > 0:
                released = mine[(Mechanism.GAUSSIAN_SCORE_RELEASE, round_index)]
                if released < count:
                    findings.append(
                        f"{name}: {released} score-release entries for round {round_index}, but the server "
                        f"accepted {count} score.reply from {client_id}"
                    )
        late = sorted({e.round for e in entries if e.round > completed + 1})
        if late:
            findings.append(f"{name}: entries for rounds {late}, after the last completed round {completed}")
    return findings


def _trains(config: Config, client_id: str) -> bool:
    """Whether a round's private training leaves a ledger entry (a zero-step schedule leaves none)."""
    return config.slm_for(client_id).private_epochs > 0


def claim_findings(
    run_dir: Path, ledgers: dict[str, list[LedgerEntry]], identities: dict[str, list[PublicIdentity]]
) -> list[str]:
    """The signed epsilon claims of the transcript against the clients' keys (``identities``) and ledgers."""
    from crosslm_secure.privacy.ledger import signed_message

    findings: list[str] = []
    rows = read_jsonl_rows(run_dir / TRANSCRIPT)
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not isinstance(row.get("claim"), dict):
            continue
        claim, sender = row["claim"], str(row.get("sender"))
        where = f"{TRANSCRIPT} line {number} ({sender}'s claim for round {row.get('round')})"
        try:
            signature = bytes.fromhex(str(claim["signature"]))
            message = signed_message(sender, str(claim["ledger_hash"]))
        except (KeyError, ValueError):
            findings.append(f"{where}: malformed")
            continue
        if not any(_verifies(i, signature, message) for i in identities.get(sender, [])):
            findings.append(f"{where}: the signature does not verify as {sender}'s enrolled key (forged or re-signed)")
        entries = ledgers.get(sender)
        if entries is None:
            continue
        seq = claim.get("ledger_seq")
        entry = entries[seq] if isinstance(seq, int) and 0 <= seq < len(entries) else None
        if entry is None or entry.hash != claim.get("ledger_hash"):
            findings.append(
                f"{where}: clients/{sender}/{LEDGER_FILE} lacks the signed entry {seq} the client reported "
                "(the ledger was cut short or rewritten)"
            )
        elif claim.get("epsilon") is not None and abs(entry.spent() - float(claim["epsilon"])) > 1e-9:
            findings.append(f"{where}: claims epsilon {claim['epsilon']}, the ledger entry records {entry.spent()}")
    return findings


def _verifies(identity: object, signature: bytes, message: bytes) -> bool:
    from crosslm_secure.errors import CryptoError

    try:
        identity.verify(signature, message)  # type: ignore[attr-defined]
    except CryptoError:
        return False
    return True
