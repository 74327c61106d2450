"""Acceptance adapts to the released aggregate and stays balanced per label."""

from __future__ import annotations

import numpy as np
import pytest

from crosslm_secure.config import FeedbackConfig
from crosslm_secure.errors import ProtocolError
from crosslm_secure.server.acceptance import accept_samples

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])


def test_adaptive_keeps_each_labels_top_share_above_chance_plus_margin() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.5, 0.2, 0.1, 0.39, 0.38, 0.37, 0.36])
    keep = accept_samples(scores, LABELS, 3, FeedbackConfig(accept_margin=0.04, accept_fraction=0.5, balance=False))
    # label 0: top half = 0.9, 0.8; label 1: 0.6, 0.5; label 2: top half 0.39, 0.38 are > 1/3 + 0.04
    assert np.flatnonzero(keep).tolist() == [0, 1, 4, 5, 8, 9]
    strict = accept_samples(scores, LABELS, 3, FeedbackConfig(accept_margin=0.05, accept_fraction=0.5, balance=False))
    assert np.flatnonzero(strict).tolist() == [0, 1, 4, 5, 8], "0.38 is not above 1/3 + 0.05"


def test_balance_keeps_the_best_k_of_every_label_that_has_any() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1])
    keep = accept_samples(scores, LABELS, 3, FeedbackConfig(accept_fraction=1.0))
    # label 0 has 4 above the floor, label 1 one, label 2 none: one each of labels 0 and 1
    assert np.flatnonzero(keep).tolist() == [0, 4]


def test_a_fixed_threshold_is_still_available() -> None:
    scores = np.array([0.9, 0.8, 0.1, 0.1, 0.6, 0.1, 0.1, 0.1, 0.5, 0.1, 0.1, 0.1])
    keep = accept_samples(scores, LABELS, 3, FeedbackConfig(threshold=0.5, balance=False))
    assert np.flatnonzero(keep).tolist() == [0, 1, 4, 8]


def test_flat_scores_accept_nothing() -> None:
    keep = accept_samples(np.full(12, 1 / 3), LABELS, 3, FeedbackConfig())
    assert not keep.any()


def test_noise_outside_0_1_is_clipped_not_trusted() -> None:
    scores = np.array([1.7, 0.9, 0.1, 0.1, 0.8, 0.7, 0.1, 0.1, 0.8, 0.7, 0.1, 0.1])
    keep = accept_samples(scores, LABELS, 3, FeedbackConfig(accept_fraction=0.5))
    assert np.flatnonzero(keep).tolist() == [0, 1, 4, 5, 8, 9]
    assert accept_samples(scores - 2.0, LABELS, 3, FeedbackConfig()).sum() == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_mean_is_refused_as_a_protocol_error(bad: float) -> None:
    scores = np.full(12, 0.5)
    scores[3] = bad
    with pytest.raises(ProtocolError, match="mean score of sample 3 is not a finite number") as refused:
        accept_samples(scores, LABELS, 3, FeedbackConfig())
    assert not isinstance(refused.value, ValueError)


def test_means_and_labels_of_different_lengths_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="11 mean scores for 12 samples") as refused:
        accept_samples(np.full(11, 0.5), LABELS, 3, FeedbackConfig())
    assert not isinstance(refused.value, ValueError)


@pytest.mark.parametrize(
    ("scores", "labels", "needle"),
    [
        (np.full(12, 0.5), np.array([0] * 11 + [3]), "sample 11 has label index 3, outside 0..2"),
        (np.full(12, 0.5), np.array([-1] + [0] * 11), "sample 0 has label index -1, outside 0..2"),
        (["high"] * 12, LABELS, "mean scores and labels must be numbers"),
        (np.full(12, 0.5), [2**70] * 12, "mean scores and labels must be numbers"),
    ],
)
def test_input_that_is_no_score_per_labelled_sample_is_a_protocol_error(scores, labels, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        accept_samples(scores, labels, 3, FeedbackConfig())
