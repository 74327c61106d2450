"""A deployed site's own labelled records (``crosslm deploy site --data FILE``).

The file stays on the site machine: it is read with the job's columns, text cut and task
labels, and split into the site's train and test sets the way the job's data is split
(``data.test_fraction`` held out, stratified by label, seeded by ``run.seed``). A datasets
folder with a ``test`` split of its own keeps that split instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from crosslm_secure.config import DataConfig, TaskConfig
from crosslm_secure.data.loaders import TooFewRecordsError, load_labelled_data, read_examples
from crosslm_secure.data.partition import MIN_TRAIN_PER_CLIENT
from crosslm_secure.data.records import ClientData, Example
from crosslm_secure.errors import DataError
from crosslm_secure.storage import atomic_write_json

SITE_SUFFIXES: dict[str, Literal["csv", "jsonl"]] = {".csv": "csv", ".tsv": "csv", ".tab": "csv", ".jsonl": "jsonl"}
"""File suffixes a site's data may have (any case) and the source that reads them; a folder is ``hf_disk``."""


def site_source(path: Path) -> Literal["csv", "jsonl", "hf_disk"]:
    """The ``data.source`` that reads ``path``: a folder is ``hf_disk``, a file goes by its suffix.

    Raises:
        DataError: ``path`` does not exist, or is a file with a suffix no loader reads.
    """
    path = Path(path)
    if path.is_dir():
        return "hf_disk"
    if not path.is_file():
        raise DataError(
            f"data: the site's data {path} not found; check --data (a .csv or .jsonl file or a datasets folder)"
        )
    source = SITE_SUFFIXES.get(path.suffix.lower())
    if source is None:
        raise DataError(
            f"data: cannot tell how to read the site's data {path} (suffix {path.suffix or 'none'!r}); "
            "give a .csv, .jsonl file or a datasets folder (written by datasets.save_to_disk)"
        )
    return source


def load_site_data(path: Path, data: DataConfig, task: TaskConfig, *, seed: int, client_id: str) -> ClientData:
    """Read one site's own records and split them into its train and test sets.

    Args:
        path: a ``.csv`` (``.tsv``/``.tab``: tab-separated) or ``.jsonl`` file, or a folder
            written by ``datasets.save_to_disk``.
        data: the job's data section; its ``text_column``, ``label_column``,
            ``max_text_chars`` and ``test_fraction`` apply, its ``path``/``source`` do not.
        task: the job's task (its labels give the class indices).
        seed: seeds the held-out split (the job's ``run.seed``).
        client_id: the site the records belong to.

    Returns:
        The site's ``ClientData``; every record is used (no ``max_train_records`` or ``max_test_records`` cap).

    Raises:
        DataError: the path is missing or of an unknown type, a column is missing, a label
            is not a task label, or there are too few records to train with DP and test.
    """
    path = Path(path)
    own = data.model_copy(
        update={
            "source": site_source(path),
            "path": path,
            "test_path": None,
            "max_train_records": None,
            "max_test_records": None,
        }
    )
    try:
        train, test = load_labelled_data(own, task, seed=seed, silo=True)
    except TooFewRecordsError as exc:
        raise _too_few(path, exc.records) from None
    if len(train) < MIN_TRAIN_PER_CLIENT:
        raise _too_few(path, len(train) + len(test))
    return ClientData(client_id=client_id, train=train, test=test)


def _too_few(path: Path, records: int) -> DataError:
    return DataError(
        f"data: the site's data {path} has {records} usable records, too few for a test split plus the "
        f"{MIN_TRAIN_PER_CLIENT} training records DP training needs; add records to the file"
    )


OWN_DATA_FILE = "own-data.json"
"""Written in ``clients/<site>/`` when a site trains on its own file: the audits that rebuild
the clients' silos from the job's data refuse such a client instead of attacking the wrong records."""


def own_data_marker(client_folder: Path) -> dict | None:
    """What a site recorded about its own data (file name, record counts), or None if it used its silo."""
    path = Path(client_folder) / OWN_DATA_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def mark_own_data(client_folder: Path, path: Path, client: ClientData) -> None:
    """Record in the site's state folder that it trains on its own file (its name and counts, no records)."""
    atomic_write_json(
        Path(client_folder) / OWN_DATA_FILE,
        {"file": Path(path).name, "train": len(client.train), "test": len(client.test)},
    )


def load_evaluator_set(path: Path, data: DataConfig, task: TaskConfig) -> list[Example]:
    """Every record of the coordinator's own labelled evaluator set (``DIR/server/eval.csv``), unsplit.

    Read with the job's columns, text cut and task labels, like a site's records.

    Raises:
        DataError: the file is missing or of an unknown type, a column is missing, a label is
            not a task label, or it holds no records.
    """
    path = Path(path)
    own = data.model_copy(
        update={"source": site_source(path), "path": path, "test_path": None, "max_test_records": None}
    )
    examples = read_examples(own, task)
    if not examples:
        raise DataError(f"data: the evaluator set {path} holds no records with text; add labelled records to it")
    return examples
