"""Where the randomness of the DP mechanisms comes from: the OS entropy pool, or the run seed.

``privacy.noise_source`` picks one for every draw that changes results: DP-SGD's Gaussian noise,
its Poisson sampling, the dropout of a private round, and each client's share of the score-release
noise.

* ``os`` (the default, and the only one a deployment accepts): each generator is seeded with fresh
  bits from the OS entropy pool (``secrets``), so no one, the config's readers included, can
  replay a draw. torch's generators take 63 of those bits (its seed is one 64-bit integer), numpy's
  score-release generator 128.
* ``seeded`` (research): each generator is seeded from a hash of (seed, party, round, attempt,
  purpose), so the same config and seed on the same machine draw the same numbers, and two methods
  run on one seed share their private-training noise (common random numbers). Anyone holding the
  config replays that noise and can subtract it: the DP guarantee is void. Deployments refuse it,
  every DP-SGD and score-release ledger entry records it, and the ledger audit fails such a run.

Nothing here ever seeds cryptographic material: keys, pairwise masks and CKKS encryption keep
their own randomness in both modes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from crosslm_secure.privacy.settings import NoiseSource

if TYPE_CHECKING:
    import torch

TORCH_SEED_BITS = 63
"""Bits a torch generator is seeded with (``manual_seed`` takes one 64-bit integer; 63 stay positive)."""
NUMPY_SEED_BITS = 128
"""Bits numpy's PCG64 generator for the score-release noise is seeded with."""
SEEDED_WARNING = (
    "research mode: the noise was seeded from the run seed (privacy.noise_source: seeded), so anyone "
    "holding the config can replay and remove it; these releases carry no privacy guarantee"
)
"""The ledger audit's sentence for a run whose noise was seeded."""


class Purpose(StrEnum):
    """What a stream of random numbers is for; each purpose draws from its own stream."""

    POISSON = "poisson-sampling"
    DP_NOISE = "dp-sgd-noise"
    DROPOUT = "dropout"
    SCORE_NOISE = "score-release-noise"


@dataclass(frozen=True)
class NoiseStreams:
    """One party's source of DP randomness.

    Args:
        source: ``os`` or ``seeded`` (``privacy.noise_source``).
        seed: the seed ``seeded`` streams derive from (unused with ``os``).
        party: the client the streams belong to; each client gets its own.
    """

    source: NoiseSource
    seed: int
    party: str

    @property
    def seeded(self) -> bool:
        return self.source == "seeded"

    def torch_generator(self, device: torch.device | str, *, round_index: int, purpose: Purpose) -> torch.Generator:
        """A torch generator on ``device`` for one round's ``purpose``."""
        import torch  # lazy: the feedback schemes import this module, and the reports that use them need no torch

        return torch.Generator(device=device).manual_seed(self._bits(TORCH_SEED_BITS, round_index, 0, purpose))

    def numpy_generator(self, *, round_index: int, attempt: int, purpose: Purpose) -> np.random.Generator:
        """A numpy generator for one aggregation attempt's ``purpose`` (a retried attempt draws anew)."""
        return np.random.default_rng(self._bits(NUMPY_SEED_BITS, round_index, attempt, purpose))

    def round_seed(self, round_index: int, purpose: Purpose) -> int | None:
        """A seed for torch's global generator (dropout) in ``seeded`` mode; None with ``os`` (left as it is)."""
        return self._bits(TORCH_SEED_BITS, round_index, 0, purpose) if self.seeded else None

    def _bits(self, bits: int, round_index: int, attempt: int, purpose: Purpose) -> int:
        if not self.seeded:
            return secrets.randbits(bits)
        return derived_seed(self.seed, self.party, round_index, attempt, purpose, bits=bits)


def derived_seed(seed: int, party: str, round_index: int, attempt: int, purpose: Purpose, *, bits: int) -> int:
    """``bits`` bits of SHA-256 over the stream's name: distinct names give independent-looking seeds."""
    name = json.dumps(["crosslm-noise/1", seed, party, round_index, attempt, str(purpose)], separators=(",", ":"))
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest(), "big")
    return digest >> (256 - bits)
