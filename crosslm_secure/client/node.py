"""A client silo's protocol handlers: bytes in, bytes out.

Private records are only ever touched here (SECURITY.md, "What crosses a silo boundary"). What leaves is: training
status and epsilon, the protected score vector, the mean scores when this client is the
round's decryptor, and held-out metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from crosslm_secure.aggregation.base import Aggregator
from crosslm_secure.aggregation.schemes import FeedbackKeys, FeedbackScheme
from crosslm_secure.client.scoring import score_samples
from crosslm_secure.client.trainer import SLMTrainer, TrainReport
from crosslm_secure.config import MIN_QUORUM, SLMConfig
from crosslm_secure.crypto.noise import ScoreRelease
from crosslm_secure.data.records import ClientData
from crosslm_secure.errors import CrossLMError, ProtocolError
from crosslm_secure.eval.predictions import Predictions
from crosslm_secure.eval.slm_eval import evaluate_slm
from crosslm_secure.privacy.ledger_format import entry_line
from crosslm_secure.protocol.envelope import Envelope, verify
from crosslm_secure.protocol.messages import (
    EnhanceReply,
    EnhanceRequest,
    EpsilonClaim,
    ErrorReply,
    EvaluateReply,
    EvaluateRequest,
    KeysDealReply,
    KeysDealRequest,
    KeysInstallReply,
    KeysInstallRequest,
    RevealReply,
    RevealRequest,
    ScoreReply,
    ScoreRequest,
    TrainingStats,
    TrainReply,
    TrainRequest,
    encode_means,
    finite_or_none,
    pack,
    unpack,
)
from crosslm_secure.protocol.party import Party

SERVER = "server"

Attachments = dict[str, Any]
"""A reply's attachments by name, as its message type declares them (``messages.pack``)."""


@dataclass
class SLM:
    """A client's small model and its tokenizer."""

    tokenizer: Any
    model: torch.nn.Module


class ClientNode:
    """Answers the server's requests for one silo.

    Args:
        party: this client's protocol identity (signs replies, verifies requests).
        data: the silo's private train split and held-out test split.
        slm: the silo's small model.
        trainer: private (DP) or plain trainer.
        feedback: the run's feedback scheme (builds this client's aggregator, deals or installs keys).
        feedback_keys: this client's keys, registry, quorum and noise for that scheme.
        settings: the SLM settings of this site.
        num_labels: number of task labels.
        device: where the SLM runs.
        on_round_end: called with (round, slm) after evaluation, e.g. to checkpoint.
        on_release: called with (round, attempt, release) after a noised score vector left, so the
            client's ledger records it.
        on_evaluated: called with (round, predictions) after evaluation, so the client keeps its
            answer per held-out record (for intervals in the report); they never leave the silo.
    """

    def __init__(
        self,
        party: Party,
        data: ClientData,
        slm: SLM,
        trainer: SLMTrainer,
        feedback: FeedbackScheme,
        feedback_keys: FeedbackKeys,
        settings: SLMConfig,
        num_labels: int,
        device: torch.device,
        on_round_end: Callable[[int, SLM], None] | None = None,
        on_release: Callable[[int, int, ScoreRelease], None] | None = None,
        on_evaluated: Callable[[int, Predictions], None] | None = None,
    ) -> None:
        self.party = party
        self.data = data
        self.slm = slm
        self.trainer = trainer
        self.feedback = feedback
        self.feedback_keys = feedback_keys
        self.aggregator: Aggregator | None = feedback.client_aggregator(feedback_keys, run_id=party.run_id)
        self.settings = settings
        self.num_labels = num_labels
        self.device = device
        self.on_round_end = on_round_end
        self.on_release = on_release
        self.on_evaluated = on_evaluated
        self.round = 0
        self.epsilon = 0.0 if trainer.private else float("inf")
        self._handlers: dict[str, Callable[[Envelope, Any], tuple[Any, Attachments]]] = {
            "train.request": self._train,
            "score.request": self._score,
            "reveal.request": self._reveal,
            "enhance.request": self._enhance,
            "evaluate.request": self._evaluate,
            "keys.deal": self._deal_keys,
            "keys.install": self._install_keys,
        }

    @property
    def client_id(self) -> str:
        return self.party.name

    def handle(self, message: bytes) -> bytes:
        """Verify a request, act on it, and return a signed reply (an ``error`` on refusal)."""
        round_index = self.round
        try:
            envelope, body = self.party.open(message)
            round_index = envelope.round
            if envelope.sender != SERVER:
                raise ProtocolError(f"{self.client_id}: requests must come from the server, not {envelope.sender!r}")
            if envelope.round < self.round:
                raise ProtocolError(
                    f"{self.client_id}: {envelope.type} is for round {envelope.round}, but round "
                    f"{self.round} has started; refused"
                )
            handler = self._handlers.get(envelope.type)
            if handler is None:
                raise ProtocolError(f"{self.client_id}: {envelope.type!r} is not a request a client answers")
            self.round = envelope.round
            reply, attachments = handler(envelope, body)
            blobs = pack(reply, **attachments)
        except CrossLMError as exc:
            return self.party.seal(SERVER, round_index, ErrorReply(reason=str(exc)))
        return self.party.seal(SERVER, envelope.round, reply, blobs)

    def _train(self, envelope: Envelope, body: TrainRequest) -> tuple[Any, Attachments]:
        reason = self.trainer.decline_reason(envelope.round)
        if reason is not None:
            return TrainReply(status="declined", reason=reason, private=self.trainer.private), {}
        if body.synthetic_through is not None and body.synthetic_through > envelope.round:
            raise ProtocolError(
                f"{self.client_id}: round {envelope.round} asks to train on synthetic samples of round "
                f"{body.synthetic_through}, a later one; refusing"
            )
        report = self.trainer.train_private(
            self.slm.model,
            self.slm.tokenizer,
            self.data.train,
            round_index=envelope.round,
            through=body.synthetic_through,
        )
        self.epsilon = report.epsilon
        return (
            TrainReply(
                status="ok",
                stats=_stats(report),
                private=self.trainer.private,
                epsilon=finite_or_none(report.epsilon),
                delta=report.details.get("delta"),
                claim=_claim(report.details, report.epsilon),
            ),
            {},
        )

    def _score(self, envelope: Envelope, body: ScoreRequest) -> tuple[Any, Attachments]:
        if self.client_id not in body.participants:
            raise ProtocolError(f"{self.client_id}: not in the announced participant set; refusing to score")
        samples = [sample.as_sample() for sample in body.samples]
        for sample in samples:
            if sample.intended_label >= self.num_labels:
                raise ProtocolError(
                    f"{self.client_id}: sample {sample.sample_id} has label {sample.intended_label}, "
                    f"but the task has {self.num_labels} labels"
                )
        scores = score_samples(
            self.slm.tokenizer,
            self.slm.model,
            samples,
            max_length=self.settings.max_length,
            batch_size=self.settings.eval_batch_size,
            device=self.device,
            calibrate=self.settings.calibration == "temperature",
        )
        aggregator = self._aggregator()
        protected = aggregator.protect(
            scores, round_index=envelope.round, participants=body.participants, attempt=body.attempt
        )
        release = protected.release
        if self.on_release is not None and release is not None and release.sigma_total > 0:
            self.on_release(envelope.round, body.attempt, release)
        return ScoreReply(count=len(samples), aggregator=aggregator.name), {"contribution": protected.contribution}

    def _reveal(self, envelope: Envelope, body: RevealRequest) -> tuple[Any, Attachments]:
        attached = unpack(envelope)
        contributions = self._verified_contributions(envelope, body, attached["signed_replies"])
        means = self._aggregator().reveal(
            attached["aggregate"],
            contributions,
            count=body.count,
            round_index=envelope.round,
            participants=body.participants,
            attempt=body.attempt,
        )
        return RevealReply(count=body.count, contributors=len(contributions)), {"means": encode_means(means)}

    def _verified_contributions(self, envelope: Envelope, body: RevealRequest, signed: Sequence[bytes]) -> list[bytes]:
        """Check every contribution is a signed score reply of this round from an announced participant."""
        announced = set(body.participants)
        if len(announced) != len(body.participants):
            raise ProtocolError(f"{self.client_id}: the participant set lists a client twice; refusing to decrypt")
        quorum = self.feedback_keys.quorum  # this site's own config decides, not the server's word
        if body.quorum != quorum:
            raise ProtocolError(
                f"{self.client_id}: the server announced a quorum of {body.quorum}, but this site's config gives "
                f"{quorum} (run.min_clients, at least {MIN_QUORUM}); the two configs differ, refusing to decrypt"
            )
        if len(announced) < quorum:
            raise ProtocolError(
                f"{self.client_id}: {len(announced)} participants is below the quorum of {quorum}; refusing to decrypt"
            )
        seen: dict[str, bytes] = {}
        for message in signed:
            reply = verify(message, self.party.directory)
            if reply.type != "score.reply" or reply.recipient != SERVER:
                raise ProtocolError(f"{self.client_id}: a contribution is a {reply.type}, not a score.reply")
            if reply.run_id != self.party.run_id or reply.round != envelope.round:
                raise ProtocolError(
                    f"{self.client_id}: a contribution from {reply.sender} belongs to another run or round; refusing"
                )
            if reply.sender not in announced:
                raise ProtocolError(f"{self.client_id}: {reply.sender} contributed but was not announced; refusing")
            if reply.sender in seen:
                raise ProtocolError(f"{self.client_id}: {reply.sender} contributed twice; refusing to decrypt")
            seen[reply.sender] = unpack(reply)["contribution"]
        missing = announced - set(seen)
        if missing:
            raise ProtocolError(
                f"{self.client_id}: contributions of {sorted(missing)} are missing from the aggregate; "
                "refusing to decrypt"
            )
        return [seen[name] for name in body.participants]

    def _aggregator(self) -> Aggregator:
        if self.aggregator is None:
            raise ProtocolError(f"{self.client_id}: no feedback key is installed yet; the key ceremony must run first")
        return self.aggregator

    def _deal_keys(self, envelope: Envelope, body: KeysDealRequest) -> tuple[Any, Attachments]:
        """Dealer: make the run's feedback keys, keep the secret, wrap it for every other client."""
        dealt = self.feedback.deal(self.feedback_keys, run_id=self.party.run_id, preset=body.preset)
        self.aggregator = dealt.aggregator
        recipients = sorted(dealt.wraps)
        return KeysDealReply(recipients=recipients, fingerprint=dealt.fingerprint), {
            "announcement": dealt.announcement,
            "public_context": dealt.public_context,
            "wraps": [dealt.wraps[name] for name in recipients],
        }

    def _install_keys(self, envelope: Envelope, body: KeysInstallRequest) -> tuple[Any, Attachments]:
        """Open the dealer's wrap (relayed by the server, which cannot read it)."""
        attached = unpack(envelope)
        self.aggregator, fingerprint = self.feedback.install(
            self.feedback_keys, run_id=self.party.run_id, announcement=attached["announcement"], wrap=attached["wrap"]
        )
        return KeysInstallReply(fingerprint=fingerprint), {}

    def _enhance(self, envelope: Envelope, body: EnhanceRequest) -> tuple[Any, Attachments]:
        examples = [sample.as_example() for sample in body.samples]
        report = self.trainer.train_public(self.slm.model, self.slm.tokenizer, examples, round_index=envelope.round)
        return EnhanceReply(stats=_stats(report)), {}

    def _evaluate(self, envelope: Envelope, body: EvaluateRequest) -> tuple[Any, Attachments]:
        metrics = evaluate_slm(
            self.slm.tokenizer,
            self.slm.model,
            self.data.test,
            num_labels=self.num_labels,
            max_length=self.settings.max_length,
            batch_size=self.settings.eval_batch_size,
            device=self.device,
        )
        if self.on_evaluated is not None:
            self.on_evaluated(envelope.round, Predictions.of(self.data.test, metrics["predicted"]))
        if self.on_round_end is not None:
            self.on_round_end(envelope.round, self.slm)
        shared = [] if body.ledger_from is None else self.trainer.ledger.entries[body.ledger_from :]
        return (
            EvaluateReply(
                accuracy=metrics["accuracy"],
                macro_f1=metrics["macro_f1"],
                n=metrics["n"],
                epsilon=finite_or_none(self.epsilon),
                ledger=[entry_line(entry) for entry in shared],
            ),
            {},
        )


def _stats(report: TrainReport) -> TrainingStats:
    return TrainingStats(
        steps=report.steps,
        examples=report.examples_seen,
        mean_loss=None if math.isnan(report.mean_loss) else report.mean_loss,
        seconds=report.seconds,
    )


def _claim(details: dict[str, Any], epsilon: float) -> EpsilonClaim | None:
    """The round's signed ledger entry as a claim the server keeps (None when nothing was recorded)."""
    if not details.get("ledger_signature") or not details.get("ledger_hash"):
        return None
    return EpsilonClaim(
        ledger_seq=int(details["ledger_seq"]),
        ledger_hash=str(details["ledger_hash"]),
        epsilon=finite_or_none(epsilon),
        signature=str(details["ledger_signature"]),
    )
