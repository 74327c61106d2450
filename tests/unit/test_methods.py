"""What a method accepts of a round's synthetic samples, given the feedback's choice."""

from __future__ import annotations

import numpy as np
import pytest

from crosslm_secure.methods import balanced_random_choice, method_for, shuffled_within_labels

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2])


def test_crosslm_accepts_the_feedbacks_choice_and_no_feedback_accepts_everything() -> None:
    feedback = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    assert method_for("crosslm").accepted(feedback, LABELS, seed=0).tolist() == feedback.tolist()
    assert method_for("crosslm_no_feedback").accepted(None, LABELS, seed=0).all()
    assert method_for("data_free_kd").accepted(None, LABELS, seed=0).all()


@pytest.mark.parametrize(("count", "per_label"), [(0, [0, 0, 0]), (3, [1, 1, 1]), (6, [3, 2, 1]), (8, [4, 3, 1])])
def test_a_random_choice_spreads_its_count_over_the_labels_as_far_as_they_allow(count: int, per_label: list) -> None:
    keep = balanced_random_choice(LABELS, count, np.random.default_rng(0))
    assert keep.sum() == count
    # Label 2 has one sample, so at 6 the labels 0 and 1 take its share: 3 and 2.
    assert sorted(np.bincount(LABELS[keep], minlength=3).tolist(), reverse=True) == per_label


def test_random_feedback_keeps_the_feedbacks_count_not_its_samples() -> None:
    feedback = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)  # three of label 0 only
    method = method_for("crosslm_random_feedback")
    chosen = [method.accepted(feedback, LABELS, seed=seed) for seed in range(20)]
    assert all(keep.sum() == 3 for keep in chosen)
    assert all(np.bincount(LABELS[keep], minlength=3).tolist() == [1, 1, 1] for keep in chosen)
    assert len({tuple(np.flatnonzero(keep)) for keep in chosen}) > 1  # the seed draws
    assert method.accepted(feedback, LABELS, seed=7).tolist() == method.accepted(feedback, LABELS, seed=7).tolist()


def test_shuffling_within_labels_keeps_each_labels_values_and_moves_them() -> None:
    values = np.arange(8, dtype=float) / 10
    moved = [shuffled_within_labels(values, LABELS, np.random.default_rng(seed)) for seed in range(10)]
    for shuffled in moved:
        for label in range(3):
            assert sorted(shuffled[LABELS == label]) == sorted(values[LABELS == label])
    assert any(not np.array_equal(shuffled, values) for shuffled in moved)


def test_only_random_feedback_shuffles_the_tuning_scores_and_only_when_every_sample_weighs() -> None:
    means = np.array([0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.6, 0.7])
    crosslm, random = method_for("crosslm"), method_for("crosslm_random_feedback")
    assert crosslm.tuning_scores(means, LABELS, weighting="every_sample", seed=0) is means
    assert method_for("crosslm_no_feedback").tuning_scores(None, LABELS, weighting="every_sample", seed=0) is None
    assert random.tuning_scores(means, LABELS, weighting="accepted", seed=0) is None
    draws = [random.tuning_scores(means, LABELS, weighting="every_sample", seed=seed) for seed in range(10)]
    assert all(sorted(d[LABELS == 0]) == sorted(means[LABELS == 0]) for d in draws)
    assert any(not np.array_equal(d, means) for d in draws)
    same = random.tuning_scores(means, LABELS, weighting="every_sample", seed=3)
    assert np.array_equal(same, draws[3])
