"""The coordinator's seal: ``seal.json``, its signature over the run folder's record.

Whenever the coordinator saves its state, seals the manifest or finishes, it signs (with its
own Ed25519 key, :mod:`crosslm_secure.crypto.signed`, kind ``run-seal``) the sha256 of every
file the run's record rests on: ``run.json``, ``config.yaml``, ``state.json``,
``transcript.jsonl``, the event and metric logs, the CKKS contexts and announcement, the LLM
adapters, the synthetic releases (every server-side kind of ``manifest.py`` marked ``sealed``)
and the server's copy of each client's ledger. A reviewer who pinned the coordinator's key
checks the seal and each hash; anyone who edits a sealed file afterwards breaks it.

Reports and plots (``summary.md``, ``report.html``, ``plots/``) are not sealed: ``crosslm
report`` rebuilds them without the coordinator's key, and they carry no record of their own.
``manifest.json`` itself is rewritten by such rebuilds, so the seal holds the hashes it must
agree with instead of its bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crosslm_secure.crypto.keys import ParticipantKeys
from crosslm_secure.crypto.signed import sign_document
from crosslm_secure.manifest import classify, server_files, sha256_file
from crosslm_secure.privacy.ledger import LEDGER_FILE
from crosslm_secure.storage import atomic_write_json

SEAL_FILE = "seal.json"
SEAL_KIND = "run-seal"
SEAL_SCHEMA = "crosslm-run-seal/1"
SERVER_LEDGER_COPIES = f"clients/*/{LEDGER_FILE}"
"""The server's copy of each client's ledger, sealed with the rest."""


def sealed_paths(run_dir: Path) -> list[Path]:
    """Every file the seal covers, as it is in the folder now (sorted)."""
    run_dir = Path(run_dir)
    out = []
    for path in server_files(run_dir):
        kind = classify(path.relative_to(run_dir).as_posix())
        if kind is not None and kind.sealed:
            out.append(path)
    return sorted([*out, *run_dir.glob(SERVER_LEDGER_COPIES)])


def seal_body(run_dir: Path, run_id: str) -> dict[str, Any]:
    """What the coordinator signs: the run id and the sha256 of every sealed file."""
    run_dir = Path(run_dir)
    files = {path.relative_to(run_dir).as_posix(): sha256_file(path) for path in sealed_paths(run_dir)}
    return {
        "schema": SEAL_SCHEMA,
        "run_id": run_id,
        "files": files,
        "sealed": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_seal(run_dir: Path, run_id: str, keys: ParticipantKeys) -> Path:
    """Sign the run folder as it is now and write ``seal.json`` (atomically)."""
    path = Path(run_dir) / SEAL_FILE
    atomic_write_json(path, sign_document(keys, SEAL_KIND, seal_body(run_dir, run_id)))
    return path
