"""Seeded noise streams are a pure function of (seed, party, round, attempt, purpose); os ones never repeat."""

from __future__ import annotations

import numpy as np
import torch

from crosslm_secure.privacy.noise_source import NoiseStreams, Purpose


def _draws(streams: NoiseStreams, round_index: int = 1, attempt: int = 0, purpose: Purpose = Purpose.SCORE_NOISE):
    return streams.numpy_generator(round_index=round_index, attempt=attempt, purpose=purpose).random(8)


def test_each_party_round_attempt_and_purpose_draws_from_its_own_seeded_stream() -> None:
    streams = NoiseStreams("seeded", 3, "client-1")
    first = _draws(streams)
    np.testing.assert_array_equal(first, _draws(NoiseStreams("seeded", 3, "client-1")))
    others = {
        "another seed": _draws(NoiseStreams("seeded", 4, "client-1")),
        "another party": _draws(NoiseStreams("seeded", 3, "client-2")),
        "another round": _draws(streams, round_index=2),
        "another attempt": _draws(streams, attempt=1),
        "another purpose": _draws(streams, purpose=Purpose.DP_NOISE),
    }
    assert [name for name, draws in others.items() if np.array_equal(draws, first)] == []


def test_torch_streams_and_the_dropout_seed_follow_the_source() -> None:
    def noise(streams: NoiseStreams) -> torch.Tensor:
        generator = streams.torch_generator("cpu", round_index=1, purpose=Purpose.DP_NOISE)
        return torch.randn(8, generator=generator)

    seeded = NoiseStreams("seeded", 3, "client-1")
    assert torch.equal(noise(seeded), noise(NoiseStreams("seeded", 3, "client-1")))
    assert seeded.round_seed(1, Purpose.DROPOUT) == NoiseStreams("seeded", 3, "client-1").round_seed(1, Purpose.DROPOUT)
    fresh = NoiseStreams("os", 3, "client-1")
    assert not torch.equal(noise(fresh), noise(fresh))
    assert not np.array_equal(_draws(fresh), _draws(fresh))
    assert fresh.round_seed(1, Purpose.DROPOUT) is None, "os leaves torch's global generator as it is"
