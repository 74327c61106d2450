"""Macro-F1 with its 95% interval for every evaluation a run kept answers for.

An evaluation is a metric-row key: ``llm_macro_f1`` (the LLM on the evaluator's split,
``server/predictions/``), ``slm_macro_f1/<client>`` (that client's SLM on its held-out split,
``clients/<id>/predictions/``) and ``slm_macro_f1_mean`` (the mean over the round's clients,
each client's records resampled on their own). A run that kept no answers for an evaluation
(made before they were kept, or a site that keeps its own folder) shows the point alone.
"""

from __future__ import annotations

import math
from typing import Any

from crosslm_secure.eval.bootstrap import Interval, macro_f1_interval
from crosslm_secure.eval.predictions import Predictions, read_predictions
from crosslm_secure.runstore import RunStore

LLM_KEY = "llm_macro_f1"
MEAN_KEY = "slm_macro_f1_mean"
CLIENT_PREFIX = "slm_macro_f1/"
NOTE = (
    "Brackets: 95% percentile-bootstrap interval over the test records (1,000 seeded resamples); "
    "the SLM mean resamples each client's held-out records on their own."
)


class RunIntervals:
    """Intervals of one run's evaluations, computed on first use and kept.

    Args:
        store: the run folder.
        num_labels: classes of the task (macro-F1 averages over all of them).
    """

    def __init__(self, store: RunStore, num_labels: int) -> None:
        self.store = store
        self.num_labels = num_labels
        self._answers: dict[tuple[int, str], Predictions | None] = {}
        self._intervals: dict[tuple[int, str], Interval | None] = {}

    def answers(self, round_index: int, key: str) -> Predictions | None:
        """The stored answers behind ``key`` in ``round_index`` (None: not kept, or a mean)."""
        if (round_index, key) not in self._answers:
            if key == LLM_KEY:
                path = self.store.llm_predictions_path(round_index)
            elif key.startswith(CLIENT_PREFIX):
                path = self.store.slm_predictions_path(key.removeprefix(CLIENT_PREFIX), round_index)
            else:
                return None
            found = read_predictions(path)
            self._answers[(round_index, key)] = found if found is not None and len(found) else None
        return self._answers[(round_index, key)]

    def interval(self, row: dict[str, Any], key: str) -> Interval | None:
        """The interval of ``row[key]``; None when its answers were not kept."""
        round_index = int(row["round"])
        if (round_index, key) not in self._intervals:
            parts = [self.answers(round_index, k) for k in evaluation_parts(row, key)]
            kept = [p for p in parts if p is not None]
            found = None
            if parts and len(kept) == len(parts):
                found = macro_f1_interval(kept, self.num_labels)
            self._intervals[(round_index, key)] = found
        return self._intervals[(round_index, key)]

    def text(self, row: dict[str, Any], key: str) -> str:
        """``0.827 [0.79, 0.86]``; the point alone without kept answers; empty without a value."""
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        found = self.interval(row, key)
        return f"{value:.3f}" if found is None else found.text()


def evaluation_parts(row: dict[str, Any], key: str) -> list[str]:
    """The evaluations a macro-F1 key is made of: the mean is made of the row's clients."""
    if key == MEAN_KEY:
        return sorted(k for k in row if k.startswith(CLIENT_PREFIX))
    return [key] if key in row else []
