"""Tiny run folders that kept per-record answers, for the report tests (no model runs)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from crosslm_secure.eval.metrics import accuracy, macro_f1
from crosslm_secure.eval.predictions import Predictions, write_predictions
from crosslm_secure.runstore import RunStore

LABELS = ["negative", "neutral", "positive"]
INTERVAL = re.compile(r"(\d\.\d{3}) \[(\d\.\d\d), (\d\.\d\d)\]")
"""A macro-F1 as the reports print it: ``0.827 [0.79, 0.86]``."""


def answers(n: int, wrong_every: int, *, offset: int = 0, prefix: str = "r") -> Predictions:
    """``n`` records cycling through the three labels; every ``wrong_every``-th answer is wrong."""
    labels = tuple(i % 3 for i in range(n))
    predicted = tuple((y + 1) % 3 if (i + offset) % wrong_every == 0 else y for i, y in enumerate(labels))
    return Predictions(tuple(f"{prefix}{i:04d}" for i in range(n)), labels, predicted)


def kept_run(
    root: Path, name: str, rounds: list[dict[str, Predictions]], config: dict[str, Any] | None = None
) -> RunStore:
    """A run whose round ``r`` kept the answers ``rounds[r]`` (key ``llm`` or a client id).

    Its metric rows hold the macro-F1 and accuracy of exactly those answers, as a run records them.
    """
    store = RunStore.create(root, name, 0, config or {})
    for round_index, evaluations in enumerate(rounds):
        row: dict[str, Any] = {"round": round_index, "seconds_round": 1.0}
        client_f1 = []
        for key, kept in evaluations.items():
            f1, acc = macro_f1(kept.labels, kept.predicted, 3), accuracy(kept.labels, kept.predicted)
            if key == "llm":
                row |= {"llm_macro_f1": f1, "llm_accuracy": acc}
                write_predictions(store.llm_predictions_path(round_index), kept)
            else:
                row |= {f"slm_macro_f1/{key}": f1, f"slm_accuracy/{key}": acc}
                client_f1.append(f1)
                write_predictions(store.slm_predictions_path(key, round_index), kept)
        if client_f1:
            row["slm_macro_f1_mean"] = sum(client_f1) / len(client_f1)
        store.record_round(row)
    return store


def two_kept_rounds() -> list[dict[str, Predictions]]:
    """Two rounds of an LLM (60 records) and two clients (30 each), every answer kept."""
    return [
        {"llm": answers(60, 3), "client-1": answers(30, 3, prefix="a"), "client-2": answers(30, 4, prefix="b")},
        {"llm": answers(60, 5), "client-1": answers(30, 6, prefix="a"), "client-2": answers(30, 8, prefix="b")},
    ]
