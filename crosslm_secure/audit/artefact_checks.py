"""The allowlist half of the protocol audit: every server-side file is in the manifest, unchanged,
and valid as the kind it declares (crosslm_secure/manifest.py holds the kinds).

Validation is by format: JSONL rows with only their allowed fields and types; aggregate logs
whose values are single numbers, short words or small mappings (no numeric list, list of
lists, numeric strings, encoded blobs, or mappings the size of a sample set); PNGs that end
at ``IEND``; safetensors that hold only LoRA tensors; CKKS contexts that load as public.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import re
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from crosslm_secure.audit.transcript_checks import SubCheck, transcript_row_problems
from crosslm_secure.manifest import (
    MANIFEST_FILE,
    ArtefactKind,
    classify,
    kind_named,
    read_manifest,
    server_files,
    sha256_file,
)

MAX_MAPPING = 32
"""Largest nested mapping an aggregate log may hold (a per-sample mapping is larger)."""
MAX_NUMBERS_IN_TEXT = 8
"""A string field holding more numbers than this is a vector written as text."""
MAX_NUMBERS_PER_LINE = 24
MAX_NUMBER_COLUMN = 24
"""A presentation file with more consecutive lines holding one lone number each is a vector."""
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![A-Za-z0-9_])")
"""A number standing on its own (digits inside a hex digest or a name are not numbers)."""
_BLOB = re.compile(r"[A-Za-z0-9+/_=-]{80,}")
_LORA_TENSOR = re.compile(r"^base_model\.model\.[A-Za-z0-9_.]+\.lora_(A|B)(\.[A-Za-z0-9_]+)?\.weight$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_PNG_TEXT_LIMIT = 2048
_HEX = re.compile(r"^[0-9a-f]+$")


def check_manifest(run_dir: Path, client_ids: list[str]) -> SubCheck:
    """Every server-side file is listed in ``manifest.json`` with its hash, and valid as its kind."""
    check = SubCheck("every server artefact is in the manifest and valid as its kind")
    try:
        manifest = read_manifest(run_dir)
    except ValueError as exc:
        check.findings.append(f"{MANIFEST_FILE}: {exc}; the server's files cannot be shown to be allowed")
        return check
    if manifest is None:
        check.findings.append(
            f"{MANIFEST_FILE}: missing; the run predates the manifest of server artefacts, so its files cannot "
            "be checked against an allowlist; re-run it with this version"
        )
        return check
    files = server_files(run_dir)
    present = {p.relative_to(run_dir).as_posix(): p for p in files}
    for name in sorted(set(manifest) - set(present)):
        check.findings.append(f"{name}: listed in {MANIFEST_FILE} but missing")
    for name, path in present.items():
        entry = manifest.get(name)
        declared = classify(name)
        if entry is None:
            what = f"matches kind {declared.name!r}" if declared else "matches no allowed kind"
            check.findings.append(f"{name}: not in {MANIFEST_FILE} ({what}); an unknown server-side file")
            continue
        kind = kind_named(str(entry.get("kind")))
        if kind is None or declared is None or kind.name != declared.name:
            check.findings.append(f"{name}: declared as {entry.get('kind')!r}, which its path does not allow")
            continue
        if sha256_file(path) != entry.get("sha256"):
            check.findings.append(f"{name}: its sha256 differs from {MANIFEST_FILE}; changed after the run wrote it")
        check.findings += [f"{name}: {problem}" for problem in validate(kind, path.read_bytes(), client_ids)]
    check.evidence = f"{len(present)} server files against {len(manifest)} manifest entries; each validated by kind"
    return check


def validate(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    """Why ``data`` is not a valid file of ``kind`` (empty when it is)."""
    validator = _VALIDATORS[kind.format]
    try:
        return validator(kind, data, client_ids)
    except (ValueError, UnicodeDecodeError, yaml.YAMLError, struct.error) as exc:
        return [f"is not a valid {kind.name} ({kind.description}): {str(exc)[:120]}"]


# -- records of aggregate numbers --------------------------------------------------------------


def aggregate_value_problems(record: Any, client_ids: list[str]) -> list[str]:
    """Why a log record holds more than aggregate numbers (empty when it does not)."""
    problems = []
    for key, value in _walk(record):
        if isinstance(value, list):
            numbers = [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
            nested = [v for v in value if isinstance(v, list | dict)]
            numeric = [v for v in value if isinstance(v, str) and _NUMBER.fullmatch(v.strip())]
            if numbers:
                problems.append(f"{key!r} is a list of {len(numbers)} numbers; only aggregate numbers are allowed")
            if nested:
                problems.append(f"{key!r} is a list of {len(nested)} lists or mappings; only aggregates are allowed")
            if len(numeric) >= 2:
                problems.append(f"{key!r} is a list of {len(numeric)} numeric strings")
        elif isinstance(value, dict) and key and len(value) > MAX_MAPPING:
            problems.append(f"{key!r} is a mapping of {len(value)} entries (more than {MAX_MAPPING}): per-sample data")
        elif isinstance(value, str):
            problems += [f"{key!r} {p}" for p in _string_problems(value)]
        leaf = key.rsplit(".", 1)[-1].lower()
        if "score" in leaf and any(client in key for client in client_ids):
            problems.append(f"{key!r} is a per-client score field")
    return problems


def _string_problems(value: str) -> list[str]:
    out = []
    count = len(_NUMBER.findall(value))
    if count > MAX_NUMBERS_IN_TEXT:
        out.append(f"holds {count} numbers in one string (a vector written as text)")
    if _BLOB.search(value) and not (len(value) in (64, 128) and _HEX.match(value)):
        out.append("holds an encoded blob (80+ characters of base64/hex)")
    return out


def _walk(value: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                yield from ((k, v) for k, v in _walk(item, prefix) if k != prefix or v is not item)


def _rows(data: bytes) -> list[tuple[int, Any]]:
    out = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if line.strip():
            out.append((number, json.loads(line)))
    return out


def _aggregate_jsonl(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    problems = []
    for number, row in _rows(data):
        if not isinstance(row, dict):
            problems.append(f"line {number} is a {type(row).__name__}, not a record")
            continue
        problems += [f"line {number}: {p}" for p in aggregate_value_problems(row, client_ids)]
    return problems


def _aggregate_csv(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    problems = []
    for number, row in enumerate(csv.DictReader(io.StringIO(data.decode("utf-8"))), start=2):
        if None in row:
            problems.append(f"line {number} has more cells than the header")
        for key, cell in row.items():
            if isinstance(cell, str) and (cell.startswith(("[", "{")) or _string_problems(cell)):
                problems.append(f"line {number}: column {key!r} holds more than one aggregate number")
    return problems


def _transcript(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    return [f"line {n}: {p}" for n, row in _rows(data) for p in transcript_row_problems(row)]


def _json_object(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    raw = json.loads(data.decode("utf-8"))
    fields = kind.row_fields or {}
    if not isinstance(raw, dict):
        return [f"is a {type(raw).__name__}, not a {kind.name} object"]
    problems = _field_problems(raw, fields)
    for key in ("active", "dropped"):
        if isinstance(raw.get(key), list) and not all(isinstance(v, str) for v in raw[key]):
            problems.append(f"field {key!r} holds something other than client names")
    if isinstance(raw.get("excluded"), dict) and not all(isinstance(v, str) for v in raw["excluded"].values()):
        problems.append("field 'excluded' maps clients to something other than a reason")
    return problems + aggregate_value_problems(raw, client_ids)


def _field_problems(row: dict[str, Any], fields: dict[str, tuple[type, ...]]) -> list[str]:
    problems = [f"has field {key!r}, which its kind does not allow" for key in row if key not in fields]
    for key, kinds in fields.items():
        if key not in row:
            problems.append(f"lacks field {key!r}")
        elif not isinstance(row[key], kinds) or (isinstance(row[key], bool) and bool not in kinds):
            problems.append(f"field {key!r} is a {type(row[key]).__name__}, not {'/'.join(k.__name__ for k in kinds)}")
    return problems


def _jsonl_rows(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    problems = []
    for number, row in _rows(data):
        if not isinstance(row, dict):
            problems.append(f"line {number} is not a record")
            continue
        problems += [f"line {number} {p}" for p in _field_problems(row, kind.row_fields or {})]
    return problems


def _json(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    return aggregate_value_problems(json.loads(data.decode("utf-8")), client_ids)


def _yaml(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    raw = yaml.safe_load(data.decode("utf-8"))
    return [] if isinstance(raw, dict) else ["is not a YAML mapping"]


def _run_metadata(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    from crosslm_secure.crypto.keys import PublicIdentity
    from crosslm_secure.errors import CryptoError
    from crosslm_secure.runstore import PARTIES_SIMULATED, PARTIES_SITES

    raw = json.loads(data.decode("utf-8"))
    if not isinstance(raw, dict):
        return ["is not a JSON object"]
    problems = _field_problems(
        {k: v for k, v in raw.items() if k not in ("identities", "parties")},
        {"schema": (str,), "run_id": (str,), "created": (str,)},
    )
    if "parties" in raw and raw["parties"] not in (PARTIES_SIMULATED, PARTIES_SITES):
        problems.append("says the data was held by parties other than the two kinds a run records")
    for batch in raw.get("identities", []):
        if not isinstance(batch, dict) or set(batch) != {"first_round", "participants"}:
            problems.append("has an identities entry other than {first_round, participants}")
            continue
        for identity in batch["participants"]:
            try:
                if set(identity) - {"site", "role", "signing_public", "exchange_public", "fingerprint"}:
                    raise CryptoError("unexpected fields")
                PublicIdentity.from_dict(identity)
            except (CryptoError, TypeError) as exc:
                problems.append(f"holds an identity that is not a public identity ({exc})")
    return problems


_SIGNED_FIELDS = ("schema", "kind", "signer", "body", "sha256", "signature")


def _run_seal(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    """A signed seal (seal.py) holds a run id, a time and path -> sha256 of sealed files, nothing else."""
    from crosslm_secure.seal import SEAL_SCHEMA, SERVER_LEDGER_COPIES

    raw = json.loads(data.decode("utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("body"), dict):
        return ["is not a signed document with a body"]
    body = raw["body"]
    problems = _field_problems(raw, {name: (dict,) if name == "body" else (str,) for name in _SIGNED_FIELDS})
    problems += _field_problems(body, {"schema": (str,), "run_id": (str,), "files": (dict,), "sealed": (str,)})
    if body.get("schema") != SEAL_SCHEMA:
        problems.append(f"body is not a {SEAL_SCHEMA} seal")
    if not re.fullmatch(r"[0-9a-f]{128}", str(raw.get("signature"))):
        problems.append("its signature is not an Ed25519 signature in hex")
    for path, digest in dict(body.get("files") or {}).items():
        kind_of = classify(str(path))
        sealable = (kind_of is not None and kind_of.sealed) or fnmatch.fnmatchcase(str(path), SERVER_LEDGER_COPIES)
        if not sealable or not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            problems.append(f"seals {str(path)[:80]!r}, which is not a sealed file with a sha256")
    return problems


def _text(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    return _text_problems(data.decode("utf-8"))


def _text_problems(text: str, *, bare_column_only: bool = False) -> list[str]:
    """Lines with too many numbers, long runs of lines that each hold a lone number or two, encoded blobs.

    ``bare_column_only``: only lines that hold nothing but numbers extend a column (a page's table
    rows pair each number with words: a synthetic sample and its aggregate score)."""
    problems = []
    column = 0
    for number, line in enumerate(text.splitlines(), start=1):
        count = len(_NUMBER.findall(line))
        if count > MAX_NUMBERS_PER_LINE:
            problems.append(f"line {number} holds {count} numbers (a vector written as text)")
        bare = not _NUMBER.sub(" ", line).strip(" \t,;|[]()")
        counts = 1 <= count <= 2 and (bare or not bare_column_only)
        column = column + 1 if counts else 0
        if column == MAX_NUMBER_COLUMN + 1:
            problems.append(f"lines {number - MAX_NUMBER_COLUMN}-{number} hold a column of numbers (a vector)")
        if _BLOB.search(line):
            problems.append(f"line {number} holds an encoded blob (80+ characters of base64/hex)")
    return problems


_DATA_PNG = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


_HTML_CODE = re.compile(r"<(style|script)\b.*?</\1\s*>", re.S | re.I)
_HTML_BREAK = re.compile(r"</(tr|p|li|h[1-6]|div|caption|summary|pre|table|section)\s*>|<br\s*/?>", re.I)
_HTML_TAG = re.compile(r"<[^>]*>")


def _html(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    """Embedded figures are checked as PNGs; the page's text is checked as its reader sees it: one
    line per table row or block (a page writes whole tables on one source line), style sheets
    and scripts set aside."""
    import base64
    import html

    text = data.decode("utf-8")
    problems = []
    for match in _DATA_PNG.finditer(text):
        problems += [f"an embedded image {p}" for p in _png(kind, base64.b64decode(match.group(1)), client_ids)]
    text = _HTML_CODE.sub(" ", _DATA_PNG.sub("data:image/png;base64,", text))
    visible = html.unescape(_HTML_TAG.sub(" ", _HTML_BREAK.sub("\n", text)))
    return problems + _text_problems(visible, bare_column_only=True)


def _png(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    if not data.startswith(_PNG_SIGNATURE):
        return ["is not a PNG (no PNG signature)"]
    at, text_bytes = len(_PNG_SIGNATURE), 0
    while at + 8 <= len(data):
        length, chunk = struct.unpack(">I4s", data[at : at + 8])
        at += 12 + length
        if chunk in _PNG_TEXT_CHUNKS:
            text_bytes += length
        if chunk == b"IEND":
            if at != len(data):
                return [f"has {len(data) - at} bytes after its IEND chunk"]
            if text_bytes > _PNG_TEXT_LIMIT:
                return [f"carries {text_bytes} bytes of text chunks (a figure needs a few)"]
            return []
    return ["does not end with an IEND chunk (truncated or not a PNG)"]


def _safetensors_lora(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size].decode("utf-8"))
    problems = []
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            if any(not isinstance(v, str) or len(v) > 64 for v in tensor.values()):
                problems.append("has metadata values beyond short strings")
            continue
        if not _LORA_TENSOR.match(name):
            problems.append(f"holds tensor {name!r}, which is not a LoRA adapter weight")
        if len(tensor.get("shape", [])) != 2:
            problems.append(f"tensor {name!r} is not a 2-D LoRA matrix")
        end = max(end, int(tensor["data_offsets"][1]))
    if 8 + size + end != len(data):
        problems.append(f"has {len(data) - 8 - size - end} bytes outside its tensors")
    return problems


def _public_context(kind: ArtefactKind, data: bytes, client_ids: list[str]) -> list[str]:
    from crosslm_secure.crypto.ckks import ScoreContext
    from crosslm_secure.errors import CryptoError

    try:
        context = ScoreContext.from_bytes(data)
    except CryptoError as exc:
        return [f"does not load as a crosslm CKKS context ({exc})"]
    problems = []
    if context.has_secret_key:
        problems.append("holds a CKKS SECRET key")
    if context.has_galois_keys:
        problems.append("carries Galois keys")
    if context.to_bytes() != data:
        problems.append("carries bytes beyond its public context")
    return problems


_VALIDATORS: dict[str, Callable[[ArtefactKind, bytes, list[str]], list[str]]] = {
    "run-metadata": _run_metadata,
    "run-seal": _run_seal,
    "yaml": _yaml,
    "aggregate-jsonl": _aggregate_jsonl,
    "aggregate-csv": _aggregate_csv,
    "transcript": _transcript,
    "json-object": _json_object,
    "jsonl-rows": _jsonl_rows,
    "json": _json,
    "text": _text,
    "html": _html,
    "png": _png,
    "safetensors-lora": _safetensors_lora,
    "ckks-public-context": _public_context,
}
