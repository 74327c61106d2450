"""Classification metrics as pure functions of label sequences."""

from __future__ import annotations

from collections.abc import Sequence


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Share of positions where prediction equals truth (0.0 for no examples)."""
    _check_lengths(y_true, y_pred)
    if not y_true:
        return 0.0
    return sum(int(t == p) for t, p in zip(y_true, y_pred, strict=True)) / len(y_true)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_labels: int) -> float:
    """Unweighted mean of per-class F1 over ``num_labels`` classes (absent classes count 0)."""
    _check_lengths(y_true, y_pred)
    scores = []
    for label in range(num_labels):
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == label and p == label)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != label and p == label)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == label and p != label)
        denominator = 2 * tp + fp + fn
        scores.append(0.0 if denominator == 0 else 2 * tp / denominator)
    return sum(scores) / num_labels


def _check_lengths(y_true: Sequence[int], y_pred: Sequence[int]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"metrics: {len(y_true)} labels but {len(y_pred)} predictions")
