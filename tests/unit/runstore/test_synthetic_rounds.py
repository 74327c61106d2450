"""A round's synthetic batch: one public line per sample, exactly five fields, replaced whole."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crosslm_secure.errors import RunError
from crosslm_secure.runstore import RunStore


def test_a_batch_is_written_with_exactly_the_public_fields(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "t", 0, {})
    path = store.write_synthetic_round(
        2, ["good film", "dull, «slow»"], ["positive", "negative"], np.array([0.91, 0.12]), np.array([True, False])
    )
    assert path == store.root / "server" / "synthetic" / "round-2.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {"index": 0, "text": "good film", "label": "positive", "score": 0.91, "accepted": True},
        {"index": 1, "text": "dull, «slow»", "label": "negative", "score": 0.12, "accepted": False},
    ]
    assert all(type(line["accepted"]) is bool and type(line["score"]) is float for line in lines)
    assert store.synthetic_rounds() == {2: lines}


def test_a_resumed_round_replaces_its_batch_and_rounds_come_in_order(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "t", 0, {})
    store.write_synthetic_round(10, ["a"], ["x"], [0.5], [True])
    store.write_synthetic_round(2, ["b", "c"], ["x", "y"], [0.1, 0.2], [False, True])
    store.write_synthetic_round(2, ["d"], ["y"], [0.3], [True])
    assert list(store.synthetic_rounds()) == [2, 10]
    assert [s["text"] for s in store.synthetic_rounds()[2]] == ["d"]
    assert sorted(p.name for p in (store.root / "server" / "synthetic").iterdir()) == [
        "round-10.jsonl",
        "round-2.jsonl",
    ]


def test_mismatched_lengths_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "t", 0, {})
    with pytest.raises(RunError, match="synthetic round 1 has 2 texts, 2 labels, 1 scores and 2 accept flags"):
        store.write_synthetic_round(1, ["a", "b"], ["x", "y"], [0.5], [True, False])
    assert store.synthetic_rounds() == {}
