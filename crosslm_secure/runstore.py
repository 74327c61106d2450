"""The run folder ``runs/<run-id>/`` and everything written into it.

Layout::

    run.json             run metadata: the run id, and the public keys every site signed with
    config.yaml          the resolved configuration
    manifest.json        every server-side file: its kind and sha256 (crosslm_secure/manifest.py)
    seal.json            the coordinator's signature over the run's record (crosslm_secure/seal.py)
    events.jsonl         what happened, when (phase starts/ends, dropouts, declines)
    metrics.jsonl/.csv   one row per round (round 0 = before any training)
    transcript.jsonl     the server's message log: types, sizes and hashes only
    state.json           last completed round (for resume)
    llm/round-N/         LoRA adapters
    server/synthetic/round-N.jsonl  the round's synthetic batch: text, intended label,
                         released aggregate score, accepted (public, server-side)
    server/predictions/round-N.jsonl  the LLM's answer to each evaluator test record
    clients/<id>/        per-client SLM checkpoint, privacy ledger and predictions/round-N.jsonl
    plots/, summary.md   what people look at
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from crosslm_secure.crypto.keys import ParticipantKeys
from crosslm_secure.errors import RunError
from crosslm_secure.privacy.ledger import LEDGER_FILE
from crosslm_secure.storage import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    csv_text,
    read_jsonl,
)

CONFIG_FILE = "config.yaml"
STATE_FILE = "state.json"
CLIENTS_DIR = "clients"
SLM_DIR = "slm"
SYNTHETIC_FILE = "synthetic.json"
PREDICTIONS_DIR = "predictions"
"""Accepted synthetic samples a client keeps for joint training, in its folder."""


@dataclass(frozen=True)
class RunState:
    """What ``state.json`` holds: the last completed round and who takes part (for resume)."""

    completed_round: int
    active: list[str]
    excluded: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    """Excluded because they stopped answering: they may rejoin."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """Read a saved state.

        Raises:
            RunError: a field is missing or of the wrong type.
        """
        try:
            state = cls(
                int(data["completed_round"]),
                [str(name) for name in data["active"]],
                {str(k): str(v) for k, v in dict(data.get("excluded", {})).items()},
                [str(name) for name in data.get("dropped", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RunError(
                f"run: {STATE_FILE} is malformed ({type(exc).__name__}: {exc}); restore it or start the run again"
            ) from None
        return state


RUN_FILE = "run.json"
RUN_SCHEMA = "crosslm-run/1"
PARTIES_SIMULATED = "one data file split into silos (simulation)"
PARTIES_SITES = "party folders (each site's own keys, records and state)"


class RunStore:
    """One run folder. Every write is atomic (whole files) or durable (appended lines)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._signer: ParticipantKeys | None = None

    def sign_with(self, keys: ParticipantKeys) -> None:
        """Seal the run folder with the coordinator's ``keys`` from now on: every state save and
        manifest seal also writes ``seal.json`` (crosslm_secure/seal.py)."""
        self._signer = keys

    @property
    def run_id(self) -> str:
        """The id recorded when the run was created (``run.json``), not the folder's name: a
        renamed or copied run keeps its id. Runs made before ``run.json`` fall back to the name."""
        meta = self.metadata()
        return str(meta["run_id"]) if meta else self.root.name

    def metadata(self) -> dict[str, Any] | None:
        """``run.json``, or None for a run made before it existed.

        Raises:
            RunError: the file is not the run's JSON metadata.
        """
        path = self.root / RUN_FILE
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            raise RunError(f"run: {path} is not JSON; the run's metadata was damaged") from None
        if not isinstance(meta, dict) or meta.get("schema") != RUN_SCHEMA or not isinstance(meta.get("run_id"), str):
            raise RunError(f"run: {path} is not {RUN_SCHEMA} metadata with a run_id")
        return meta

    def record_parties(self, parties: str) -> None:
        """Say in ``run.json`` who held the data: :data:`PARTIES_SITES` or :data:`PARTIES_SIMULATED`."""
        meta = self.metadata() or {"schema": RUN_SCHEMA, "run_id": self.run_id}
        atomic_write_json(self.root / RUN_FILE, {**meta, "parties": parties})

    def parties(self) -> str:
        """Who held the data (runs made before this was recorded were simulations)."""
        meta = self.metadata() or {}
        return str(meta.get("parties", PARTIES_SIMULATED))

    def record_identities(self, identities: list[dict[str, str]], *, first_round: int) -> None:
        """Keep the public keys the sites sign with from ``first_round`` on (each start of an
        in-process run, a resume included, enrols fresh keys), so ledgers can be verified later."""
        meta = self.metadata() or {"schema": RUN_SCHEMA, "run_id": self.run_id}
        enrolled = [*meta.get("identities", []), {"first_round": first_round, "participants": identities}]
        atomic_write_json(self.root / RUN_FILE, {**meta, "identities": enrolled})

    def enrolled_keys(self) -> dict[str, list[dict[str, str]]]:
        """Site -> every public identity recorded in ``run.json`` for it (empty for old runs)."""
        out: dict[str, list[dict[str, str]]] = {}
        for batch in (self.metadata() or {}).get("identities", []):
            for identity in batch.get("participants", []):
                out.setdefault(str(identity.get("site")), []).append(identity)
        return out

    @classmethod
    def create(cls, output_dir: Path, name: str, seed: int, config: dict[str, Any]) -> RunStore:
        """Make a fresh run folder and write the resolved config into it.

        Raises:
            RunError: ``name`` would put the folder outside ``output_dir`` (a separator or ``..``).
        """
        if Path(name).name != name or name in {"", ".", ".."} or "\\" in name:
            raise RunError(f"run: run.name {name!r} is not one folder name; drop /, \\ and .. from it")
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        root = Path(output_dir) / f"{name}-s{seed}-{stamp}"
        suffix = 1
        while root.exists():
            suffix += 1
            root = Path(output_dir) / f"{name}-s{seed}-{stamp}-{suffix}"
        root.mkdir(parents=True)
        store = cls(root)
        atomic_write_json(
            root / RUN_FILE,
            {"schema": RUN_SCHEMA, "run_id": root.name, "created": datetime.now(UTC).isoformat(timespec="seconds")},
        )
        atomic_write_text(root / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        return store

    @classmethod
    def open(cls, root: Path) -> RunStore:
        """An existing run folder.

        Raises:
            RunError: the folder does not exist or holds no config.yaml.
        """
        root = Path(root)
        if not (root / CONFIG_FILE).is_file():
            raise RunError(f"run: {root} is not a run folder (no {CONFIG_FILE}); pass runs/<run-id>")
        return cls(root)

    def config_dict(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / CONFIG_FILE).read_text())

    def client_dir(self, client_id: str) -> Path:
        return client_dir(self.root, client_id)

    def slm_dir(self, client_id: str) -> Path:
        """The client's SLM checkpoint (replaced atomically after each round)."""
        return self.client_dir(client_id) / SLM_DIR

    def ledger_path(self, client_id: str) -> Path:
        return self.client_dir(client_id) / LEDGER_FILE

    def synthetic_path(self, client_id: str) -> Path:
        return self.client_dir(client_id) / SYNTHETIC_FILE

    def slm_predictions_path(self, client_id: str, round_index: int) -> Path:
        """A client's SLM answers on its held-out split after ``round_index`` (in its own folder)."""
        return self.client_dir(client_id) / PREDICTIONS_DIR / f"round-{round_index}.jsonl"

    def llm_predictions_path(self, round_index: int) -> Path:
        """The LLM's answers on the evaluator's test split after ``round_index``."""
        return self.root / "server" / PREDICTIONS_DIR / f"round-{round_index}.jsonl"

    def llm_dir(self, round_index: int) -> Path:
        return self.root / "llm" / f"round-{round_index}"

    def event(self, kind: str, **fields: Any) -> None:
        append_jsonl(self.root / "events.jsonl", {"time": time.time(), "event": kind, **fields})

    def events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.root / "events.jsonl")

    def transcript(self, **entry: Any) -> None:
        """Log one message seen by the server: type, sender, recipient, round, size, sha256."""
        append_jsonl(self.root / "transcript.jsonl", entry)

    def record_round(self, row: dict[str, Any]) -> None:
        """Append a round's metrics (replacing any earlier row of that round) and refresh the CSV."""
        rows = [r for r in self.rounds() if r["round"] != row["round"]] + [row]
        rows.sort(key=lambda r: r["round"])
        lines = "".join(_json_line(r) for r in rows)
        atomic_write_text(self.root / "metrics.jsonl", lines)
        atomic_write_text(self.root / "metrics.csv", csv_text(rows))

    def rounds(self) -> list[dict[str, Any]]:
        return read_jsonl(self.root / "metrics.jsonl")

    def write_public_context(self, public_context: bytes, announcement: bytes, fingerprint: str) -> None:
        """Keep what the server holds of the CKKS keys: the public context and the dealer's
        signed announcement (audits check it has no secret key).

        ``server/ckks_public_context.bin`` is the current context; every context of the run (a
        resume or a rejoin redoes the key ceremony) is also kept as
        ``server/ckks_contexts/<fingerprint>.bin`` so each ``key_ceremony`` event can be checked.
        """
        atomic_write_bytes(self.root / "server" / "ckks_contexts" / f"{fingerprint}.bin", public_context)
        atomic_write_bytes(self.root / "server" / "ckks_public_context.bin", public_context)
        atomic_write_bytes(self.root / "server" / "ckks_announcement.json", announcement)

    def synthetic_batch_path(self, round_index: int) -> Path:
        return self.root / "server" / "synthetic" / f"round-{round_index}.jsonl"

    def write_synthetic_round(
        self,
        round_index: int,
        texts: Sequence[str],
        labels: Sequence[str],
        scores: Sequence[float],
        accepted: Sequence[bool],
    ) -> Path:
        """Keep a round's synthetic batch as a public server-side artefact (one JSON line per sample).

        ``scores`` are the released aggregate mean scores (what every client learns after
        decryption), never a client's own score vector. The file is replaced atomically, so a
        resumed round overwrites its earlier batch.
        """
        if not len(texts) == len(labels) == len(scores) == len(accepted):
            raise RunError(
                f"run: synthetic round {round_index} has {len(texts)} texts, {len(labels)} labels, "
                f"{len(scores)} scores and {len(accepted)} accept flags; they must be one per sample"
            )
        lines = "".join(
            json.dumps(
                {"index": i, "text": str(t), "label": str(y), "score": float(s), "accepted": bool(a)},
                ensure_ascii=False,
            )
            + "\n"
            for i, (t, y, s, a) in enumerate(zip(texts, labels, scores, accepted, strict=True))
        )
        path = self.synthetic_batch_path(round_index)
        atomic_write_text(path, lines)
        return path

    def synthetic_rounds(self) -> dict[int, list[dict[str, Any]]]:
        """Every kept synthetic batch, by round (empty when the run kept none)."""
        found: dict[int, list[dict[str, Any]]] = {}
        for path in (self.root / "server" / "synthetic").glob("round-*.jsonl"):
            number = path.stem.removeprefix("round-")
            if number.isdigit():
                found[int(number)] = read_jsonl(path)
        return dict(sorted(found.items()))

    def save_state(self, state: RunState) -> None:
        atomic_write_json(self.root / STATE_FILE, asdict(state))
        self.seal_manifest()

    def seal_manifest(self) -> None:
        """Rewrite ``manifest.json``: the kind and sha256 of every server-side file the run
        wrote. Call it after writing server files outside this store (reports, plots).

        With a signer (:meth:`sign_with`) the seal is written first, so the manifest lists it.
        """
        from crosslm_secure.manifest import write_manifest
        from crosslm_secure.seal import write_seal

        if self._signer is not None:
            write_seal(self.root, self.run_id, self._signer)
        write_manifest(self.root)

    def load_state(self) -> RunState | None:
        """The saved state, or None before round 0 completed.

        Raises:
            RunError: ``state.json`` is not valid JSON or misses a field.
        """
        path = self.root / STATE_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunError(f"run: {path} is not valid JSON ({exc}); restore it or start the run again") from None
        return RunState.from_dict(data)


def client_dir(root: Path, client_id: str) -> Path:
    """``<run>/clients/<id>``: everything a client keeps (its own state directory on a site)."""
    return Path(root) / CLIENTS_DIR / client_id


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, allow_nan=True) + "\n"
