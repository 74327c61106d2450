"""Per-record predictions of one evaluation: what a report's intervals and paired comparisons use.

Each record is named by a short digest of its uid and text, so two runs can be checked to have
been evaluated on the same test records without the file holding the text. A client's file stays
in its own folder (``clients/<id>/predictions/``); the LLM's, on the coordinator's own evaluator
split, is a server artefact (``server/predictions/``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crosslm_secure.data.records import Example
from crosslm_secure.errors import RunError
from crosslm_secure.storage import atomic_write_text

ROW_FIELDS = ("record", "label", "predicted")
"""The fields of one line of a predictions file, in order."""


def record_id(example: Example) -> str:
    """A record's name in a predictions file: 16 hex digits of sha256(uid, text)."""
    return hashlib.sha256(f"{example.uid}\0{example.text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Predictions:
    """One evaluation: per test record its id, true label and predicted label (same order)."""

    records: tuple[str, ...]
    labels: tuple[int, ...]
    predicted: tuple[int, ...]

    @classmethod
    def of(cls, examples: Sequence[Example], predicted: Sequence[int]) -> Predictions:
        if len(examples) != len(predicted):
            raise ValueError(f"predictions: {len(examples)} records but {len(predicted)} predictions")
        return cls(
            tuple(record_id(e) for e in examples), tuple(e.label for e in examples), tuple(int(p) for p in predicted)
        )

    def __len__(self) -> int:
        return len(self.records)


def write_predictions(path: Path, predictions: Predictions) -> None:
    """Replace ``path`` atomically with one JSON line per record."""
    lines = [
        json.dumps({"record": r, "label": y, "predicted": p}, sort_keys=True)
        for r, y, p in zip(predictions.records, predictions.labels, predictions.predicted, strict=True)
    ]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


def read_predictions(path: Path) -> Predictions | None:
    """The predictions in ``path``; None when the file does not exist (a run that kept none).

    Raises:
        RunError: a line is not a record with a string id and integer labels.
    """
    path = Path(path)
    if not path.is_file():
        return None
    records, labels, predicted = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and isinstance(row.get("record"), str)
            ok = ok and all(isinstance(row.get(k), int) and not isinstance(row.get(k), bool) for k in ROW_FIELDS[1:])
        except ValueError:
            ok = False
        if not ok:
            raise RunError(
                f"{path}: line {number} is not a prediction record (record, label, predicted); "
                "restore the file or rerun the evaluation"
            )
        records.append(row["record"])
        labels.append(row["label"])
        predicted.append(row["predicted"])
    return Predictions(tuple(records), tuple(labels), tuple(predicted))
