"""Refuse a sweep whose cells ask for more of the task's data than it has, before any cell runs.

A scarce-site cell (``partition.records_per_class``) needs that many training records of every
label for every client. A cell that asks for more would fail only when its turn comes, hours
into the sweep; this reads each task's label counts once and names the first such cell.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np

from crosslm_secure.config import Config, DataConfig, TaskConfig, config_from_dict
from crosslm_secure.data.loaders import load_labelled_data
from crosslm_secure.data.partition import scarce_refusal, scarce_shortfall
from crosslm_secure.errors import CrossLMError
from crosslm_secure.sweep.spec import Cell, Sweep, SweepError


def check_cells_have_data(sweep: Sweep, cells: list[Cell]) -> None:
    """Raise unless every scarce-site cell's task has enough training records of each label.

    Only cells that set ``partition.records_per_class`` are checked; each distinct dataset (data
    settings, labels, seed) is loaded once per process, so checking again before running is free.

    Raises:
        SweepError: a cell asks for more records of a label than its task has (one sentence
            naming the cell, the task, the label and the counts), or its data cannot be read.
    """
    for cell in cells:
        config = config_from_dict(cell.job)
        if config.partition.records_per_class is None:
            continue
        try:
            counts = _train_label_counts(*_data_key(config))
        except CrossLMError as exc:
            raise SweepError(f"sweep {sweep.path}: cell {cell.slug}: cannot read its data ({exc})") from None
        labels = np.repeat(np.arange(len(counts)), counts)
        short = scarce_shortfall(labels, len(counts), config.partition)
        if short is not None:
            label, count = short
            refusal = scarce_refusal(config.partition, config.task.labels[label], count)
            raise SweepError(
                f"sweep {sweep.path}: cell {cell.slug} (task {config.task.name!r}) is refused before any cell runs: "
                f"{refusal}"
            )


def _data_key(config: Config) -> tuple[str, str, int]:
    return config.data.model_dump_json(), json.dumps(config.task.model_dump(), sort_keys=True), config.run.seed


@cache
def _train_label_counts(data_json: str, task_json: str, seed: int) -> tuple[int, ...]:
    """Training records per label index of the task, after ``data.max_train_records``, as a run loads them."""
    task = TaskConfig.model_validate_json(task_json)
    train, _ = load_labelled_data(DataConfig.model_validate_json(data_json), task, seed=seed)
    return tuple(np.bincount([ex.label for ex in train], minlength=len(task.labels)).tolist())
