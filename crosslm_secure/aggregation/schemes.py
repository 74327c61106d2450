"""Feedback schemes: how score vectors are protected, summed and revealed, and their key set-up.

A scheme owns every side of itself: the server's aggregator, a client's aggregator, and the
key ceremony (if any) that turns the first into the second. The coordinator and the client
node ask the scheme that ``feedback.aggregator`` names and never import a concrete one, so
adding a scheme is one class here with ``@register`` plus its name in
``config.FeedbackConfig.aggregator`` (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from crosslm_secure.aggregation.base import Aggregator
from crosslm_secure.aggregation.ckks import CKKSAggregator
from crosslm_secure.aggregation.plaintext import PlaintextAggregator
from crosslm_secure.crypto.ceremony import accept_public_context, accept_secret_context, deal_context
from crosslm_secure.crypto.ckks import ScoreContext
from crosslm_secure.crypto.keys import ParticipantKeys, Registry
from crosslm_secure.errors import ConfigError, ProtocolError
from crosslm_secure.privacy.noise_source import NoiseStreams


@dataclass
class FeedbackKeys:
    """A client's material for a scheme's key set-up and aggregation (never leaves the client)."""

    keys: ParticipantKeys
    registry: Registry
    quorum: int
    noise_sigma: float
    noise: NoiseStreams | None = None
    """Where this client's score-release noise share comes from (``privacy.noise_source``); None: OS entropy."""


@dataclass(frozen=True)
class Dealt:
    """What a dealer's key set-up produces: its own aggregator, and what the server relays.

    ``announcement`` and ``public_context`` go to the server; ``wraps`` maps each other client
    to the secret material only it can open.
    """

    aggregator: Aggregator
    fingerprint: str
    announcement: bytes
    public_context: bytes
    wraps: dict[str, bytes]


@dataclass(frozen=True)
class ServerKeys:
    """The server's side of a finished key set-up: its aggregator and the public material to keep."""

    aggregator: Aggregator
    fingerprint: str
    public_context: bytes


class FeedbackScheme:
    """The interface; the base class is a scheme without key set-up."""

    name: ClassVar[str]
    protected: ClassVar[bool]
    """False when the server could read per-client scores (shown as "unprotected")."""
    needs_key_ceremony: ClassVar[bool] = False
    """True when a client must deal keys before anyone can score."""

    def server_aggregator(self) -> Aggregator | None:
        """The server's aggregator before any key set-up (None: it needs the ceremony first)."""
        return None

    def client_aggregator(self, keys: FeedbackKeys, *, run_id: str) -> Aggregator | None:
        """A client's aggregator before any key set-up (None: it needs the ceremony first)."""
        return None

    def deal(self, keys: FeedbackKeys, *, run_id: str, preset: str) -> Dealt:
        """Dealer client: make the run's keys and wrap them for every other client."""
        raise ProtocolError(f"feedback scheme {self.name!r} has no key ceremony; this site cannot deal keys")

    def install(self, keys: FeedbackKeys, *, run_id: str, announcement: bytes, wrap: bytes) -> tuple[Aggregator, str]:
        """Other clients: open the dealer's wrap; returns the aggregator and the key fingerprint."""
        raise ProtocolError(f"feedback scheme {self.name!r} has no key ceremony; there is no key to install")

    def accept(
        self, registry: Registry, *, run_id: str, quorum: int, announcement: bytes, public_context: bytes
    ) -> ServerKeys:
        """Server: check the dealer's announcement and keep only public material."""
        raise ProtocolError(f"feedback scheme {self.name!r} has no key ceremony; nothing was dealt")


SCHEMES: dict[str, type[FeedbackScheme]] = {}


def register(cls: type[FeedbackScheme]) -> type[FeedbackScheme]:
    """Make ``cls`` available under ``cls.name`` (the value of ``feedback.aggregator``)."""
    SCHEMES[cls.name] = cls
    return cls


def scheme_for(name: str) -> FeedbackScheme:
    """The scheme a config names.

    Raises:
        ConfigError: no scheme is registered under ``name``.
    """
    try:
        return SCHEMES[name]()
    except KeyError:
        raise ConfigError(
            f"config: feedback.aggregator {name!r} is not one of {sorted(SCHEMES)}; pick one of them"
        ) from None


@register
class PlaintextFeedback(FeedbackScheme):
    """No protection: kept to price the protection, and labelled unprotected everywhere."""

    name = PlaintextAggregator.name
    protected = False

    def server_aggregator(self) -> Aggregator:
        return PlaintextAggregator()

    def client_aggregator(self, keys: FeedbackKeys, *, run_id: str) -> Aggregator:
        return PlaintextAggregator()


@register
class CKKSFeedback(FeedbackScheme):
    """CKKS with pairwise masks and distributed noise; a client deals the keys, the server relays.

    The server ends up with the public context only, so it can add and never decrypt.
    """

    name = CKKSAggregator.name
    protected = True
    needs_key_ceremony = True

    def deal(self, keys: FeedbackKeys, *, run_id: str, preset: str) -> Dealt:
        dealt = deal_context(keys.keys, keys.registry, run_id=run_id, preset=preset)
        return Dealt(
            self._client(keys, dealt.secret_context, run_id),
            dealt.secret_context.fingerprint,
            dealt.announcement,
            dealt.public_context,
            dict(dealt.wrapped),
        )

    def install(self, keys: FeedbackKeys, *, run_id: str, announcement: bytes, wrap: bytes) -> tuple[Aggregator, str]:
        context = accept_secret_context(
            keys.keys, keys.registry, announcement=announcement, wrapped=wrap, run_id=run_id
        )
        return self._client(keys, context, run_id), context.fingerprint

    def accept(
        self, registry: Registry, *, run_id: str, quorum: int, announcement: bytes, public_context: bytes
    ) -> ServerKeys:
        context = accept_public_context(
            registry, announcement=announcement, public_context=public_context, run_id=run_id
        )
        aggregator = CKKSAggregator.for_server(context, registry, run_id=run_id, quorum=quorum)
        return ServerKeys(aggregator, context.fingerprint, context.to_bytes())

    @staticmethod
    def _client(keys: FeedbackKeys, context: ScoreContext, run_id: str) -> Aggregator:
        return CKKSAggregator.for_client(
            keys.keys,
            context,
            keys.registry,
            run_id=run_id,
            quorum=keys.quorum,
            noise_sigma=keys.noise_sigma,
            noise=keys.noise,
        )
