"""The allowlist of server-side files: every kind a run may hold, and ``manifest.json``.

A run folder's server-side files are everything outside ``clients/<id>/`` (each client's
silo) and ``audit/`` (the audit's own output). Each must match one :data:`KINDS` entry by
its path; the run store records each file's kind and sha256 in ``manifest.json``
(:func:`write_manifest`), and the protocol audit (audit/artefact_checks.py) refuses a file
that is not in the manifest, does not match its hash, or does not validate as its kind.

To add a server artefact, add one :class:`ArtefactKind` here with the glob of its path and
the schema its content must meet; nothing else needs to change.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crosslm_secure.storage import atomic_write_json

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = "crosslm-manifest/1"
SILO_FOLDERS = ("clients", "audit")
"""Top-level folders that are not server-side: client silos and the audit's output."""

Field = tuple[type, ...]
_INT: Field = (int,)
_NUMBER: Field = (int, float)
_STR: Field = (str,)
_BOOL: Field = (bool,)


@dataclass(frozen=True)
class ArtefactKind:
    """One kind of server-side file.

    Attributes:
        name: the kind recorded in the manifest.
        patterns: globs of paths relative to the run folder (``fnmatch``; ``*`` spans ``/``).
        format: how its content is validated: ``jsonl-rows`` (``row_fields``: exactly these
            fields, each of its types), ``aggregate-jsonl``/``aggregate-json``/``aggregate-csv``
            (records of aggregate numbers only), ``json``, ``yaml``, ``text``, ``html``, ``png``,
            ``safetensors-lora``, ``ckks-public-context``, ``transcript``, ``run-seal``.
        row_fields: for ``jsonl-rows`` and ``json-object``: field -> allowed types.
        release: a short note on why a per-sample field in it is an aggregate release.
        sealed: whether the coordinator's seal (``seal.py``) covers it; reports and plots that
            ``crosslm report`` rebuilds without the coordinator's key are not sealed.
    """

    name: str
    patterns: tuple[str, ...]
    format: str
    description: str
    row_fields: dict[str, Field] | None = None
    release: str = ""
    sealed: bool = True


KINDS: tuple[ArtefactKind, ...] = (
    ArtefactKind("run metadata", ("run.json",), "run-metadata", "run id and the sites' enrolled public keys"),
    ArtefactKind("config", ("config.yaml",), "yaml", "the resolved configuration"),
    ArtefactKind("events", ("events.jsonl",), "aggregate-jsonl", "what happened, when"),
    ArtefactKind("metrics", ("metrics.jsonl",), "aggregate-jsonl", "one row of aggregate metrics per round"),
    ArtefactKind("metrics table", ("metrics.csv",), "aggregate-csv", "metrics.jsonl as CSV"),
    ArtefactKind("transcript", ("transcript.jsonl",), "transcript", "the server's message log (wire-protocol.md)"),
    ArtefactKind(
        "state",
        ("state.json",),
        "json-object",
        "last completed round and the participant set (resume)",
        row_fields={"active": (list,), "completed_round": _INT, "dropped": (list,), "excluded": (dict,)},
    ),
    ArtefactKind("summary", ("summary.md",), "text", "the run's Markdown summary", sealed=False),
    ArtefactKind("report", ("report.html",), "html", "the run's HTML report", sealed=False),
    ArtefactKind("plot", ("plots/*.png",), "png", "a figure", sealed=False),
    ArtefactKind("plot page", ("plots/*.html",), "html", "an interactive figure", sealed=False),
    ArtefactKind(
        "seal", ("seal.json",), "run-seal", "the coordinator's signature over the sealed files' hashes", sealed=False
    ),
    ArtefactKind("adapter", ("llm/round-*/adapter_model.safetensors",), "safetensors-lora", "LLM LoRA weights"),
    ArtefactKind("adapter config", ("llm/round-*/adapter_config.json",), "json", "peft's adapter config"),
    ArtefactKind("adapter card", ("llm/round-*/README.md",), "text", "peft's model card"),
    ArtefactKind(
        "label bias",
        ("llm/round-*/label_bias.json",),
        "json-object",
        "label -> the offset the tuned LLM's answers add (tuning.label_bias), fitted on synthetic samples",
        row_fields={"bias": (dict,)},
    ),
    ArtefactKind(
        "public context",
        ("server/ckks_public_context.bin", "server/ckks_contexts/*.bin"),
        "ckks-public-context",
        "a CKKS context without secret or Galois keys",
    ),
    ArtefactKind(
        "announcement",
        ("server/ckks_announcement.json",),
        "json-object",
        "the dealer's signed context announcement",
        row_fields={"dealer": _STR, "fingerprint": _STR, "preset": _STR, "run_id": _STR, "signature": _STR},
    ),
    ArtefactKind(
        "synthetic release",
        ("server/synthetic/round-*.jsonl",),
        "jsonl-rows",
        "the round's synthetic samples with their released aggregate mean score",
        row_fields={"index": _INT, "text": _STR, "label": _STR, "score": _NUMBER, "accepted": _BOOL},
        release="score is the decrypted aggregate (mean over clients, DP-noised), the round's one release",
    ),
    ArtefactKind(
        "LLM predictions",
        ("server/predictions/round-*.jsonl",),
        "jsonl-rows",
        "the LLM's answer to each record of the evaluator's test split (the report's intervals)",
        row_fields={"record": _STR, "label": _INT, "predicted": _INT},
        release="the coordinator's own evaluator split: a record digest, its label, the LLM's answer; no client data",
    ),
)


def kind_named(name: str) -> ArtefactKind | None:
    return next((kind for kind in KINDS if kind.name == name), None)


def classify(relative: str) -> ArtefactKind | None:
    """The kind of a server-side file by its path relative to the run folder, or None."""
    return next((k for k in KINDS if any(fnmatch.fnmatchcase(relative, p) for p in k.patterns)), None)


def server_files(run_dir: Path) -> list[Path]:
    """Every server-side file of a run, sorted (symlinks are followed: what they point at is held)."""
    out = []
    for path in sorted(Path(run_dir).rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(run_dir)
        if relative.parts[0] in SILO_FOLDERS or relative.as_posix() == MANIFEST_FILE:
            continue
        out.append(path)
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(run_dir: Path) -> Path:
    """Record the kind and sha256 of every server-side file that matches a kind (atomically).

    A file matching no kind is left out on purpose: the audit then names it as unknown.
    """
    run_dir = Path(run_dir)
    files: dict[str, dict[str, Any]] = {}
    for path in server_files(run_dir):
        relative = path.relative_to(run_dir).as_posix()
        kind = classify(relative)
        if kind is not None:
            files[relative] = {"kind": kind.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    path = run_dir / MANIFEST_FILE
    atomic_write_json(path, {"schema": MANIFEST_SCHEMA, "files": files})
    return path


def read_manifest(run_dir: Path) -> dict[str, dict[str, Any]] | None:
    """``manifest.json``'s files (path -> kind, sha256, bytes); None when the run has none.

    Raises:
        ValueError: the manifest is not a crosslm manifest.
    """
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict) or raw.get("schema") != MANIFEST_SCHEMA or not isinstance(raw.get("files"), dict):
        raise ValueError(f"{MANIFEST_FILE} is not a {MANIFEST_SCHEMA} manifest")
    return raw["files"]
