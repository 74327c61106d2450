"""CKKS aggregation: clients add noise + pairwise masks and encrypt; the server adds blind.

One object per party, built with the constructor for its role:

* ``CKKSAggregator.for_client``: holds the secret context, its signing key and its pairwise
  mask secrets. ``protect`` -> signed contribution. The round's decryptor is a client, and
  its ``reveal`` checks the server's sum against the signed contributions before decrypting it.
* ``CKKSAggregator.for_server``: holds only the public context and the registry.
  ``combine`` -> the homomorphic sum; ``protect`` and ``reveal`` refuse with a sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from crosslm_secure.aggregation.base import Protected
from crosslm_secure.config import MIN_QUORUM
from crosslm_secure.crypto.ckks import ScoreContext, add, encrypt_scores
from crosslm_secure.crypto.keys import ParticipantKeys, Registry
from crosslm_secure.crypto.masks import client_mask, mask_scale, pairwise_secrets
from crosslm_secure.crypto.noise import noise_share, release_parameters
from crosslm_secure.crypto.verify import SignedContribution, check_contribution, verify_and_decrypt
from crosslm_secure.errors import CryptoError, ProtocolError
from crosslm_secure.privacy.noise_source import NoiseStreams, Purpose

Role = Literal["client", "server"]


class CKKSAggregator:
    """The ``Aggregator`` protocol over CKKS with pairwise masks and distributed DP noise."""

    name = "ckks"
    protected = True

    def __init__(
        self,
        *,
        role: Role,
        run_id: str,
        context: ScoreContext,
        registry: Registry,
        keys: ParticipantKeys | None = None,
        quorum: int = MIN_QUORUM,
        noise_sigma: float = 0.0,
        rng: np.random.Generator | None = None,
        noise: NoiseStreams | None = None,
    ) -> None:
        if quorum < MIN_QUORUM:
            raise CryptoError(
                f"aggregator: quorum must be >= {MIN_QUORUM} (got {quorum}); one contributor is no aggregate"
            )
        if role == "server" and not context.is_public:
            raise CryptoError("aggregator: the server's context holds a secret key; give it context.public() only")
        if role == "client" and (context.is_public or keys is None):
            raise CryptoError("aggregator: a client needs the secret context and its participant keys")
        self.role = role
        self.run_id = run_id
        self.registry = registry
        self.quorum = quorum
        self.noise_sigma = noise_sigma
        self._context = context
        self._public = context.public()
        self._keys = keys
        self._pair_secrets = pairwise_secrets(keys, registry.clients()) if keys is not None else {}
        self._rng = rng
        self._noise = noise
        self._round: tuple[int, int, tuple[str, ...]] | None = None

    @classmethod
    def for_client(
        cls,
        keys: ParticipantKeys,
        context: ScoreContext,
        registry: Registry,
        *,
        run_id: str,
        quorum: int = MIN_QUORUM,
        noise_sigma: float = 0.0,
        rng: np.random.Generator | None = None,
        noise: NoiseStreams | None = None,
    ) -> CKKSAggregator:
        """A client (and potential decryptor); ``noise_sigma`` is the total std in the sum.

        Its noise share is drawn from ``rng`` (tests), else from ``noise`` (``privacy.noise_source``:
        one stream per round and attempt), else from OS entropy.
        """
        return cls(
            role="client",
            run_id=run_id,
            context=context,
            registry=registry,
            keys=keys,
            quorum=quorum,
            noise_sigma=noise_sigma,
            rng=rng,
            noise=noise,
        )

    @classmethod
    def for_server(
        cls, context: ScoreContext, registry: Registry, *, run_id: str, quorum: int = MIN_QUORUM
    ) -> CKKSAggregator:
        """The server: public context only, so it can add and never decrypt."""
        return cls(role="server", run_id=run_id, context=context, registry=registry, quorum=quorum)

    @property
    def context(self) -> ScoreContext:
        return self._context

    def protect(
        self,
        scores: np.ndarray,
        *,
        round_index: int,
        participants: Sequence[str],
        attempt: int = 0,
    ) -> Protected:
        """Clip to [0, 1], add the noise share and masks, encrypt, sign; the release says what noise
        this client added (for its ledger; ``sigma_total`` 0 means none).

        Raises:
            CryptoError: called on the server, or this client is not a participant.
            ProtocolError: fewer participants than the quorum, or non-finite scores.
        """
        if self.role != "client" or self._keys is None:
            raise CryptoError("aggregator: the server cannot protect scores; it holds only the public context")
        members = tuple(sorted(set(participants)))
        if len(members) < self.quorum:
            raise ProtocolError(f"aggregator: {len(members)} participants is below the quorum of {self.quorum}")
        values = np.asarray(scores, dtype=np.float64).ravel()
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ProtocolError("aggregator: scores must be a non-empty vector of finite numbers")
        release = release_parameters(sigma_total=self.noise_sigma, contributors=len(members), count=values.size)
        masked = (
            np.clip(values, 0.0, 1.0)
            + noise_share(release, self._share_rng(round_index, attempt))
            + client_mask(
                self._keys.site,
                self._pair_secrets,
                run_id=self.run_id,
                round_index=round_index,
                attempt=attempt,
                participants=members,
                count=values.size,
                scale=mask_scale(self._context.preset, len(members)),
            )
        )
        ciphertext = encrypt_scores(self._context, masked)
        contribution = SignedContribution.create(
            self._keys,
            self._context,
            ciphertext,
            run_id=self.run_id,
            round_index=round_index,
            attempt=attempt,
            participants=members,
        )
        self._round = (round_index, attempt, members)
        return Protected(contribution.to_bytes(), release)

    def _share_rng(self, round_index: int, attempt: int) -> np.random.Generator | None:
        if self._rng is not None or self._noise is None:
            return self._rng
        return self._noise.numpy_generator(round_index=round_index, attempt=attempt, purpose=Purpose.SCORE_NOISE)

    def combine(self, contributions: Sequence[bytes]) -> bytes:
        """Check each signed contribution and add them blind (public context only).

        Returns the sum's score blob; the decryptor gets the contributions themselves from
        the signed ``score.reply`` messages, so they are not repeated here.

        Raises:
            ProtocolError: none given, contributions of different rounds/sets/lengths, or duplicates.
            CryptoError: unknown signer, bad signature, foreign context.
        """
        if not contributions:
            raise ProtocolError("aggregate: no contributions to combine; at least one client must score")
        first = SignedContribution.from_bytes(contributions[0])
        seen: set[str] = set()
        ciphertexts = []
        for blob in contributions:
            item = check_contribution(
                self._public,
                self.registry,
                blob,
                run_id=self.run_id,
                round_index=first.round_index,
                attempt=first.attempt,
                participants=first.participants,
                count=first.count,
            )
            if item.sender in seen:
                raise ProtocolError(f"aggregate: {item.sender} contributed twice this round")
            seen.add(item.sender)
            ciphertexts.append(item.ciphertext)
        return add(self._public, ciphertexts)

    def reveal(
        self,
        aggregate: bytes,
        contributions: Sequence[bytes],
        *,
        count: int,
        round_index: int | None = None,
        participants: Sequence[str] | None = None,
        attempt: int | None = None,
    ) -> np.ndarray:
        """Decryptor: check ``aggregate`` is the sum of the signed ``contributions``, then
        return the mean score per sample.

        The round, attempt and participant set default to those of this client's last
        ``protect`` (the decryptor is a participant); pass them to check another round.

        Raises:
            CryptoError: called on the server, or verification fails.
            ProtocolError: the contributions are not exactly one per announced participant.
        """
        if self.role != "client":
            raise CryptoError("aggregator: the server cannot reveal; it holds no secret key and never decrypts")
        if round_index is None or participants is None:
            if self._round is None:
                raise ProtocolError("aggregator: reveal needs round_index and participants (or a prior protect)")
            round_index, last_attempt, members = self._round
            attempt = last_attempt if attempt is None else attempt
        else:
            members = tuple(sorted(set(participants)))
        return verify_and_decrypt(
            self._context,
            self.registry,
            aggregate,
            contributions,
            run_id=self.run_id,
            round_index=round_index,
            attempt=attempt or 0,
            participants=members,
            quorum=self.quorum,
            count=count,
        )

    def __repr__(self) -> str:
        who = self._keys.site if self._keys else "server"
        return f"CKKSAggregator({who}, {self.role}, {self._context!r})"
