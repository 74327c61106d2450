"""The run folder ``runs/<run-id>/`` (DESIGN.md §4) and everything written into it.

Layout::

    config.yaml          the resolved configuration
    events.jsonl         what happened, when (phase starts/ends, dropouts, declines)
    metrics.jsonl/.csv   one row per round (round 0 = before any training)
    transcript.jsonl     the server's message log: types, sizes and hashes only
    state.json           last completed round (for resume)
    llm/round-N/         LoRA adapters
    server/synthetic/round-N.jsonl  the round's synthetic batch: text, intended label,
                         released aggregate score, accepted (public, server-side)
    clients/<id>/        per-client SLM checkpoint and privacy ledger
    plots/, summary.md   what people look at
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from crosslm_secure.errors import RunError
from crosslm_secure.storage import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    csv_text,
    read_jsonl,
)

CONFIG_FILE = "config.yaml"


class RunStore:
    """One run folder. Every write is atomic (whole files) or durable (appended lines)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def run_id(self) -> str:
        return self.root.name

    @classmethod
    def create(cls, output_dir: Path, name: str, seed: int, config: dict[str, Any]) -> RunStore:
        """Make a fresh run folder and write the resolved config into it."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        root = Path(output_dir) / f"{name}-s{seed}-{stamp}"
        suffix = 1
        while root.exists():
            suffix += 1
            root = Path(output_dir) / f"{name}-s{seed}-{stamp}-{suffix}"
        root.mkdir(parents=True)
        store = cls(root)
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
        return self.root / "clients" / client_id

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

    def synthetic_path(self, round_index: int) -> Path:
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
        path = self.synthetic_path(round_index)
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

    def save_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.root / "state.json", state)

    def load_state(self) -> dict[str, Any] | None:
        path = self.root / "state.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, allow_nan=True) + "\n"
