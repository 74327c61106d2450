"""The server's side of the feedback: the key ceremony, and scores summed blind then revealed.

Whatever the scheme, the server only relays and adds: a client deals the keys (if the scheme
has any), every participant protects its scores, the server combines the contributions, and
the round's decryptor (a client, rotating) checks the sum against every signed contribution
before it returns the mean score per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np

from crosslm_secure.aggregation.base import Aggregator
from crosslm_secure.aggregation.schemes import FeedbackScheme
from crosslm_secure.config import Config
from crosslm_secure.crypto.keys import Registry
from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.errors import CryptoError, ProtocolError
from crosslm_secure.protocol.messages import (
    KeysDealReply,
    KeysDealRequest,
    KeysInstallReply,
    KeysInstallRequest,
    RevealReply,
    RevealRequest,
    ScoreReply,
    ScoreRequest,
    WireSample,
    decode_means,
)
from crosslm_secure.runstore import RunStore
from crosslm_secure.server.membership import Membership
from crosslm_secure.server.messaging import Messenger, Request

Phases = Callable[[str], AbstractContextManager[None]]
"""``phases(name)`` times a block of the round under ``name``."""


class FeedbackRounds:
    """Runs the key ceremony and each round's blind aggregation for the coordinator.

    Args:
        config: the validated job configuration.
        scheme: the run's feedback scheme.
        registry: every party's enrolled public keys.
        messenger: the server's typed exchange with the clients.
        members: who takes part (failures exclude clients here).
        store: the run folder.
    """

    def __init__(
        self,
        config: Config,
        scheme: FeedbackScheme,
        registry: Registry,
        messenger: Messenger,
        members: Membership,
        store: RunStore,
    ) -> None:
        self.config = config
        self.scheme = scheme
        self.registry = registry
        self.messenger = messenger
        self.members = members
        self.store = store
        self.aggregator: Aggregator | None = scheme.server_aggregator()

    def key_ceremony(self, round_index: int) -> str | None:
        """A client deals the keys; the server relays wraps it cannot open and keeps only public
        material. Tries the next client if a dealer fails. Returns why the run must stop, or None."""
        for dealer in list(self.members.active):
            request = Request(KeysDealRequest(preset=self.config.feedback.ckks_preset))
            reply = self.messenger.ask(dealer, request, round_index, KeysDealReply)
            if reply is None:
                continue
            announcement = reply.attachments["announcement"]
            try:
                server_keys = self.scheme.accept(
                    self.registry,
                    run_id=self.store.run_id,
                    quorum=self.config.run.decryption_quorum(),
                    announcement=announcement,
                    public_context=reply.attachments["public_context"],
                )
            except (CryptoError, ProtocolError) as exc:
                self.members.exclude(dealer, f"dealt an unacceptable context: {exc}")
                continue
            self.aggregator = server_keys.aggregator
            self.store.write_public_context(server_keys.public_context, announcement, server_keys.fingerprint)
            wrapped = dict(zip(reply.body.recipients, reply.attachments["wraps"], strict=False))
            if len(wrapped) != len(reply.attachments["wraps"]) or len(wrapped) != len(reply.body.recipients):
                self.members.exclude(dealer, "sent a different number of key wraps and recipients")
                continue
            installs = {}
            for name in [n for n in self.members.active if n != dealer]:
                if name not in wrapped:
                    self.members.exclude(name, f"dealer {dealer} made no key wrap for it")
                    continue
                installs[name] = Request(KeysInstallRequest(), {"announcement": announcement, "wrap": wrapped[name]})
            for name, installed in self.messenger.ask_all(installs, round_index, KeysInstallReply).items():
                if installed.body.fingerprint != server_keys.fingerprint:
                    self.members.exclude(name, "installed a context other than the announced one")
            self.store.event(
                "key_ceremony", dealer=dealer, fingerprint=server_keys.fingerprint, clients=self.members.active
            )
            return self.members.quorum_reason(round_index)
        return f"key ceremony: no client could deal a CKKS context; excluded: {self.members.excluded}"

    def aggregate(self, round_index: int, samples: Sequence[SyntheticSample], phases: Phases) -> np.ndarray | None:
        """Collect protected scores, combine blind, have a client decrypt the mean.

        The participant set is announced in the request; if anyone drops, the whole
        aggregation restarts with the rest (fresh masks), up to ``feedback.max_attempts``.
        """
        wire = [WireSample.of(s) for s in samples]
        quorum = self.config.run.decryption_quorum()
        for attempt in range(self.config.feedback.max_attempts):
            participants = list(self.members.active)
            if len(participants) < quorum:
                reason = f"{len(participants)} participant(s), fewer than the decryption quorum of {quorum}"
                self.store.event("aggregation_skipped", round=round_index, attempt=attempt, reason=reason)
                return None
            request = Request(ScoreRequest(participants=participants, attempt=attempt, samples=wire))
            with phases("score"):
                signed, contributions = self._collect(round_index, participants, request, len(samples))
            if len(signed) != len(participants):
                self.store.event("aggregation_restart", round=round_index, attempt=attempt, left=self.members.active)
                continue
            with phases("aggregate"):
                aggregate = self._server_aggregator().combine(contributions)
            with phases("reveal"):
                means = self._reveal(round_index, attempt, participants, aggregate, signed, len(samples))
            if means is not None:
                return means
        self.store.event("aggregation_failed", round=round_index)
        return None

    def _collect(
        self, round_index: int, participants: list[str], request: Request, count: int
    ) -> tuple[list[bytes], list[bytes]]:
        """Every participant's signed score reply and its contribution (the wrong count excludes)."""
        signed: list[bytes] = []
        contributions: list[bytes] = []
        replies = self.messenger.ask_all(dict.fromkeys(participants, request), round_index, ScoreReply)
        for name, reply in replies.items():
            if reply.body.count != count:
                self.members.exclude(name, f"sent {reply.body.count} scores for {count} samples")
                continue
            signed.append(reply.raw)
            contributions.append(reply.attachments["contribution"])
        return signed, contributions

    def _reveal(
        self,
        round_index: int,
        attempt: int,
        participants: list[str],
        aggregate: bytes,
        signed: list[bytes],
        count: int,
    ) -> np.ndarray | None:
        decryptor = participants[(round_index + attempt) % len(participants)]
        quorum = self.config.run.decryption_quorum()
        body = RevealRequest(participants=participants, attempt=attempt, count=count, quorum=quorum)
        request = Request(body, {"aggregate": aggregate, "signed_replies": signed})
        reply = self.messenger.ask(decryptor, request, round_index, RevealReply)
        if reply is None:
            return None
        try:
            if reply.body.count != count:
                raise ProtocolError(f"reveal.reply: {reply.body.count} means for {count} samples")
            means = decode_means(reply.attachments["means"], count, noise_sigma=self.config.feedback.noise_sigma)
        except ProtocolError as exc:  # the next attempt has another decryptor (fresh masks)
            self.members.exclude(decryptor, f"returned a malformed aggregate: {exc}")
            return None
        self.store.event("revealed", round=round_index, decryptor=decryptor, contributors=reply.body.contributors)
        return means

    def _server_aggregator(self) -> Aggregator:
        if self.aggregator is None:
            raise ProtocolError("aggregate: no key ceremony has run; the server has no aggregator for this scheme")
        return self.aggregator

    @property
    def name(self) -> str:
        return self.scheme.name
