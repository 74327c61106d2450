"""Typed bodies of every protocol message, their named attachments, and their (de)serialization.

Each message type has a pydantic body model. Binary payloads (ciphertexts, signed replies, key
wraps) travel as the envelope's attachments; each body declares them by name in
``ATTACHMENTS``, and :func:`pack` / :func:`unpack` are the only code that maps names to
positions, so no caller indexes an envelope's blobs. ``protocols/messages.schema.json`` is generated
from these models (``crosslm protocol-schema``) and a test keeps the two identical, so the
published specification cannot drift from the code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crosslm_secure.data.records import Example, SyntheticSample
from crosslm_secure.errors import ProtocolError
from crosslm_secure.protocol.envelope import VERSION, Envelope

MAX_TEXT_CHARS = 20_000
MAX_SAMPLES = 100_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ATTACHMENTS: ClassVar[tuple[str, ...]] = ()
    """Names of the binary attachments in wire order; a last name starting with ``*`` takes
    every remaining attachment (zero or more) as a list."""


class WireSample(_Body):
    id: str = Field(max_length=128)
    text: str = Field(max_length=MAX_TEXT_CHARS)
    label: int = Field(ge=0)

    @classmethod
    def of(cls, sample: SyntheticSample) -> WireSample:
        return cls(id=sample.sample_id, text=sample.text, label=sample.intended_label)

    def as_sample(self) -> SyntheticSample:
        return SyntheticSample(sample_id=self.id, text=self.text, intended_label=self.label)

    def as_example(self) -> Example:
        return Example(uid=self.id, text=self.text, label=self.label)


class TrainRequest(_Body):
    """Server -> client: train on your private records for this round."""

    synthetic_through: int | None = Field(
        None,
        ge=0,
        description="join the synthetic samples kept through this round (this round's, with run.synthetic_timing: "
        "same_round, or same_round_after_first after round 1); null: those of earlier rounds only.",
    )


class TrainingStats(_Body):
    steps: int = Field(ge=0)
    examples: int = Field(ge=0)
    mean_loss: float | None = Field(None, description="null when no step ran.")
    seconds: float = Field(ge=0)


class EpsilonClaim(_Body):
    """The client's signed ledger entry for this round's training, as the server keeps it.

    ``signature`` is the ledger entry's own Ed25519 signature by the client over
    ``frame_fields("crosslm-ledger-entry-v2", client_id, ledger_hash)``; the entry's hash
    covers its run id, round, mechanism parameters, cumulative epsilon and chain position.
    """

    ledger_seq: int = Field(ge=0, description="Position of the entry in the client's ledger.")
    ledger_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="The entry's hash.")
    epsilon: float | None = Field(description="The entry's cumulative epsilon (budget accountant); null = inf.")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$", description="The client's signature of the entry.")


class TrainReply(_Body):
    """Client -> server: trained (with the cumulative epsilon) or declined (with the reason)."""

    status: Literal["ok", "declined"]
    reason: str | None = None
    stats: TrainingStats | None = None
    private: bool
    epsilon: float | None = Field(None, description="Cumulative record-level epsilon; null = not private (inf).")
    delta: float | None = None
    claim: EpsilonClaim | None = Field(
        None, description="The signed ledger entry of this round's training; the server's transcript keeps it."
    )


class ScoreRequest(_Body):
    """Server -> client: score these synthetic samples; the participant set is announced here."""

    participants: list[str] = Field(min_length=1)
    attempt: int = Field(0, ge=0)
    samples: list[WireSample] = Field(max_length=MAX_SAMPLES)


class ScoreReply(_Body):
    """Client -> server: ``contribution`` is this client's protected score vector."""

    ATTACHMENTS = ("contribution",)

    count: int = Field(ge=0)
    aggregator: str


class RevealRequest(_Body):
    """Server -> decryptor: the ``aggregate`` and every participant's signed ``score.reply``."""

    ATTACHMENTS = ("aggregate", "*signed_replies")

    participants: list[str] = Field(min_length=1)
    attempt: int = Field(0, ge=0)
    count: int = Field(ge=0)
    quorum: int = Field(ge=1)


class RevealReply(_Body):
    """Decryptor -> server: ``means`` holds the mean score per sample (float64, little-endian;
    :func:`encode_means`)."""

    ATTACHMENTS = ("means",)

    count: int = Field(ge=0)
    contributors: int = Field(ge=1)


class EnhanceRequest(_Body):
    """Server -> client: accepted synthetic samples to train on (public data)."""

    samples: list[WireSample] = Field(max_length=MAX_SAMPLES)


class EnhanceReply(_Body):
    stats: TrainingStats


MAX_LEDGER_LINES = 10_000
MAX_LEDGER_LINE_CHARS = 20_000


class EvaluateRequest(_Body):
    """Server -> client: evaluate your SLM on your held-out split.

    With ``ledger_from`` set, also send your ledger's entries from that position on: the
    server keeps a copy of every site's ledger (sites that keep their state on their own
    machines); a site's copy and the server's are compared at the site's audit."""

    ledger_from: int | None = Field(
        None, ge=0, description="Entries of your ledger the server already holds; null = send none."
    )


class EvaluateReply(_Body):
    accuracy: float = Field(ge=0, le=1)
    macro_f1: float = Field(ge=0, le=1)
    n: int = Field(ge=0)
    epsilon: float | None = None
    ledger: list[str] = Field(
        default_factory=list,
        max_length=MAX_LEDGER_LINES,
        description="The requested ledger entries, one signed JSON line each, in order.",
    )


class KeysDealRequest(_Body):
    """Server -> dealer client: create the run's CKKS context and wrap it for each other client."""

    preset: str = Field(max_length=32)


class KeysDealReply(_Body):
    """Dealer -> server: the signed ``announcement``, the ``public_context`` (no Galois keys), and
    the secret context wrapped to each of ``recipients`` (``wraps``, same order)."""

    ATTACHMENTS = ("announcement", "public_context", "*wraps")

    recipients: list[str]
    fingerprint: str = Field(max_length=128)


class KeysInstallRequest(_Body):
    """Server -> client: relays the dealer's ``announcement`` and the ``wrap`` for this client only."""

    ATTACHMENTS = ("announcement", "wrap")


class KeysInstallReply(_Body):
    fingerprint: str = Field(max_length=128)


class ErrorReply(_Body):
    """Any party -> sender: the request was refused; ``reason`` says why."""

    reason: str = Field(max_length=2000)


BODIES: dict[str, type[_Body]] = {
    "train.request": TrainRequest,
    "train.reply": TrainReply,
    "score.request": ScoreRequest,
    "score.reply": ScoreReply,
    "reveal.request": RevealRequest,
    "reveal.reply": RevealReply,
    "enhance.request": EnhanceRequest,
    "enhance.reply": EnhanceReply,
    "evaluate.request": EvaluateRequest,
    "evaluate.reply": EvaluateReply,
    "keys.deal": KeysDealRequest,
    "keys.dealt": KeysDealReply,
    "keys.install": KeysInstallRequest,
    "keys.installed": KeysInstallReply,
    "error": ErrorReply,
}
TYPE_OF: dict[type[_Body], str] = {body: name for name, body in BODIES.items()}


def type_name(body: _Body) -> str:
    return TYPE_OF[type(body)]


def body_dict(body: _Body) -> dict[str, Any]:
    return body.model_dump(mode="json")


def decode_body(envelope: Envelope) -> Any:
    """Validate an envelope's body against its type's schema.

    Raises:
        ProtocolError: unknown type or a body that does not match the schema.
    """
    model = BODIES.get(envelope.type)
    if model is None:
        raise ProtocolError(f"message: unknown type {envelope.type!r} from {envelope.sender}; refused")
    try:
        return model.model_validate(envelope.body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ProtocolError(
            f"message {envelope.type} from {envelope.sender}: field {where}: {first['msg']}; refused"
        ) from None


def pack(body: _Body, **attachments: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    """The attachments of ``body``'s message in wire order, from their names.

    Raises:
        ProtocolError: a declared attachment is missing or an undeclared one is given (a bug in
            the sender, so it never leaves).
    """
    names = type(body).ATTACHMENTS
    plain = [name.lstrip("*") for name in names]
    if set(attachments) != set(plain):
        raise ProtocolError(f"message {type_name(body)}: attachments {sorted(attachments)} given, {plain} declared")
    blobs: list[bytes] = []
    for name in names:
        value = attachments[name.lstrip("*")]
        if name.startswith("*"):
            blobs.extend(bytes(v) for v in value)
        else:
            blobs.append(bytes(value))  # type: ignore[arg-type]
    return tuple(blobs)


def unpack(envelope: Envelope) -> dict[str, Any]:
    """An envelope's attachments by name (a ``*`` name maps to a list of bytes).

    Raises:
        ProtocolError: the message carries fewer or more attachments than its type declares.
    """
    model = BODIES.get(envelope.type)
    if model is None:
        raise ProtocolError(f"message: unknown type {envelope.type!r} from {envelope.sender}; refused")
    names = model.ATTACHMENTS
    blobs = list(envelope.blobs)
    variadic = bool(names) and names[-1].startswith("*")
    fixed = names[:-1] if variadic else names
    if len(blobs) < len(fixed) or (not variadic and len(blobs) != len(fixed)):
        raise ProtocolError(
            f"message {envelope.type} from {envelope.sender}: carries {len(blobs)} attachment(s), "
            f"expected {list(names) or 'none'}; refused"
        )
    found: dict[str, Any] = dict(zip(fixed, blobs, strict=False))
    if variadic:
        found[names[-1][1:]] = blobs[len(fixed) :]
    return found


def encode_means(values: np.ndarray) -> bytes:
    """Mean scores as the ``means`` attachment: float64, little-endian."""
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


MEAN_SCORE_NOISE_STDS = 10
"""How many standard deviations of the feedback noise an honest mean may stray outside [0, 1]."""


def mean_score_range(noise_sigma: float) -> tuple[float, float]:
    """The values an honest decryption of a mean score can take: ``[0, 1]`` widened by ``1 + 10 * noise_sigma``.

    A mean score is the mean of the participants' probabilities (each in [0, 1]) plus the
    feedback noise, whose standard deviation is ``noise_sigma`` in the sum and smaller in the
    mean; CKKS adds an error of about 1e-6. The margin of 1 covers the decryption error by
    orders of magnitude and ``10 * noise_sigma`` ten standard deviations of the noise in the
    sum (a chance of about 1e-23 per sample), so a mean outside it was not decrypted honestly.
    """
    slack = 1.0 + MEAN_SCORE_NOISE_STDS * noise_sigma
    return -slack, 1.0 + slack


def decode_means(blob: bytes, count: int, *, noise_sigma: float) -> np.ndarray:
    """The ``means`` attachment back as ``count`` mean scores.

    Args:
        blob: the attachment, ``count`` little-endian float64 values.
        count: samples in the round.
        noise_sigma: the feedback noise in the sum (``feedback.noise_sigma``); sets the
            range of :func:`mean_score_range`.

    Raises:
        ProtocolError: the attachment does not hold exactly ``count`` float64 values, or one
            of them is not finite or lies outside what an honest decryption can give.
    """
    if len(blob) != 8 * count:
        raise ProtocolError(f"reveal.reply: holds {len(blob)} bytes, expected {count} float64 mean scores")
    means = np.frombuffer(blob, dtype="<f8").copy()
    bad = np.flatnonzero(~np.isfinite(means))
    if bad.size:
        raise ProtocolError(
            f"reveal.reply: mean score {float(means[bad[0]]):g} of sample {bad[0]} is not a finite number "
            f"({bad.size} such); the decryptor's result is refused"
        )
    low, high = mean_score_range(noise_sigma)
    outside = np.flatnonzero((means < low) | (means > high))
    if outside.size:
        raise ProtocolError(
            f"reveal.reply: mean score {float(means[outside[0]]):g} of sample {outside[0]} is outside "
            f"[{low:g}, {high:g}] ({outside.size} such), the range of a mean of probabilities in [0, 1] plus the "
            f"feedback noise (noise_sigma {noise_sigma:g}, {MEAN_SCORE_NOISE_STDS} standard deviations); "
            "the decryptor's result is refused"
        )
    return means


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: a non-private epsilon travels as null."""
    return None if math.isinf(value) else float(value)


def schema_document() -> str:
    """The JSON Schema of every message body, as published in ``protocols/``."""
    schemas = {
        name: model.model_json_schema() | {"x-attachments": list(model.ATTACHMENTS)}
        for name, model in sorted(BODIES.items())
    }
    return json.dumps({"wire_version": VERSION, "messages": schemas}, indent=2, sort_keys=True) + "\n"
