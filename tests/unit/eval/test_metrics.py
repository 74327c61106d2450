"""Metrics against hand-computed values."""

from __future__ import annotations

import pytest

from crosslm_secure.eval.metrics import accuracy, macro_f1


def test_accuracy_by_hand() -> None:
    assert accuracy([0, 1, 2, 2], [0, 2, 2, 1]) == 0.5
    assert accuracy([1, 1, 1], [1, 1, 1]) == 1.0
    assert accuracy([], []) == 0.0


def test_macro_f1_by_hand() -> None:
    y_true = [0, 0, 1, 2, 2]
    y_pred = [0, 2, 2, 2, 1]
    # class 0: tp=1 fp=0 fn=1 -> F1 = 2/3
    # class 1: tp=0 fp=1 fn=1 -> F1 = 0
    # class 2: tp=1 fp=2 fn=1 -> F1 = 2/5
    assert macro_f1(y_true, y_pred, 3) == pytest.approx((2 / 3 + 0 + 2 / 5) / 3)


def test_macro_f1_counts_absent_classes_as_zero() -> None:
    assert macro_f1([0, 0], [0, 0], 2) == pytest.approx(0.5)
    assert macro_f1([0, 1], [0, 1], 2) == 1.0


def test_length_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        macro_f1([0, 1], [0, 1, 1], 2)
