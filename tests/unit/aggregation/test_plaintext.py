"""The plaintext aggregator is the reference the protected ones must match."""

import numpy as np
import pytest

from crosslm_secure.aggregation.plaintext import PlaintextAggregator
from crosslm_secure.errors import ProtocolError


def test_mean_of_contributions() -> None:
    agg = PlaintextAggregator()
    scores = [np.array([0.1, 0.9, 0.5]), np.array([0.3, 0.7, 0.0])]
    blobs = [agg.protect(s, round_index=1, participants=["a", "b"]).contribution for s in scores]
    means = agg.reveal(agg.combine(blobs), blobs, count=3)
    np.testing.assert_allclose(means, [0.2, 0.8, 0.25])
    assert agg.protected is False


def test_mismatched_or_truncated_contributions_are_refused() -> None:
    agg = PlaintextAggregator()
    a = agg.protect(np.zeros(3), round_index=1, participants=["a"]).contribution
    b = agg.protect(np.zeros(4), round_index=1, participants=["a"]).contribution
    with pytest.raises(ProtocolError, match="different lengths"):
        agg.combine([a, b])
    with pytest.raises(ProtocolError, match="truncated"):
        agg.combine([a[:-1]])
    with pytest.raises(ProtocolError, match="expected 4"):
        agg.reveal(agg.combine([a]), [a], count=4)
    with pytest.raises(ProtocolError, match="not the sum"):
        agg.reveal(agg.combine([a]), [agg.protect(np.ones(3), round_index=1, participants=["a"]).contribution], count=3)
