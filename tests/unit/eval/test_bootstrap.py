"""Percentile-bootstrap intervals of macro-F1: the point is the metric, pairs are matched by record."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from crosslm_secure.errors import RunError
from crosslm_secure.eval.bootstrap import macro_f1_interval, paired_difference
from crosslm_secure.eval.metrics import macro_f1
from crosslm_secure.eval.predictions import Predictions, read_predictions, write_predictions
from tests.unit.report.kept_runs import answers


def shuffled(p: Predictions, seed: int) -> Predictions:
    order = list(range(len(p)))
    random.Random(seed).shuffle(order)
    return Predictions(*(tuple(column[i] for i in order) for column in (p.records, p.labels, p.predicted)))


def test_the_interval_brackets_the_macro_f1_and_narrows_with_more_records() -> None:
    small, large = answers(60, 4), answers(600, 4)
    found = macro_f1_interval([small], 3)
    assert found.point == pytest.approx(macro_f1(small.labels, small.predicted, 3))
    assert found.low < found.point < found.high and found.n == 60
    wide, narrow = found.high - found.low, (lambda i: i.high - i.low)(macro_f1_interval([large], 3))
    assert narrow < wide / 2  # ten times the records: about a third of the width
    assert macro_f1_interval([small], 3) == found  # seeded: a rebuilt report shows the same interval


def test_the_mean_over_clients_resamples_each_client_and_averages_their_points() -> None:
    first, second = answers(90, 3, prefix="a"), answers(60, 10, prefix="b")
    found = macro_f1_interval([first, second], 3)
    points = [macro_f1(p.labels, p.predicted, 3) for p in (first, second)]
    assert found.point == pytest.approx(sum(points) / 2) and found.n == 150
    assert found.low < found.point < found.high


def test_the_paired_difference_matches_records_not_positions() -> None:
    better, worse = answers(300, 10), answers(300, 4, offset=1)
    difference = paired_difference([(better, worse)], 3)
    points = [macro_f1(p.labels, p.predicted, 3) for p in (better, worse)]
    assert difference.point == pytest.approx(points[0] - points[1])
    assert difference.low < difference.point < difference.high
    assert paired_difference([(better, shuffled(worse, 1))], 3) == difference
    # resampling the two runs apart would count the records' difficulty twice: pairing is narrower
    apart = [macro_f1_interval([p], 3) for p in (better, worse)]
    assert difference.high - difference.low < (apart[0].high - apart[0].low) + (apart[1].high - apart[1].low)


def test_a_pair_of_different_test_sets_is_refused() -> None:
    kept = answers(300, 5)
    other = Predictions(("another record",) + kept.records[1:], kept.labels, kept.predicted)
    with pytest.raises(ValueError, match="299 of 300 and 300 test records are shared"):
        paired_difference([(kept, other)], 3)


def test_predictions_round_trip_and_a_damaged_line_is_one_sentence(tmp_path: Path) -> None:
    kept = answers(7, 2)
    path = tmp_path / "server" / "predictions" / "round-1.jsonl"
    write_predictions(path, kept)
    assert read_predictions(path) == kept
    assert read_predictions(tmp_path / "missing.jsonl") is None
    path.write_text(path.read_text() + '{"record": "x", "label": "positive", "predicted": 1}\n')
    with pytest.raises(RunError, match="line 8 is not a prediction record"):
        read_predictions(path)
