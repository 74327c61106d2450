"""Ambiguous data files are refused with one sentence instead of being read some silent way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crosslm_secure.config import DataConfig, TaskConfig
from crosslm_secure.data.loaders import load_labelled_data
from crosslm_secure.data.site import load_site_data
from crosslm_secure.errors import DataError

TASK = TaskConfig()
GOOD_ROWS = "".join(f"review {i},{['negative', 'neutral', 'positive'][i % 3]}\n" for i in range(30))


def _load(path: Path, source: str, **extra: object) -> None:
    load_labelled_data(DataConfig(source=source, path=path, **extra), TASK, seed=0)


def _refused(path: Path, source: str, needle: str, **extra: object) -> None:
    with pytest.raises(DataError) as caught:
        _load(path, source, **extra)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_duplicated_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("review,rating,review\n" + "".join(f"a {i},positive,b {i}\n" for i in range(30)))
    _refused(path, "csv", "has the column 'review' more than once")


@pytest.mark.parametrize(("line", "cells"), [("extra text,positive,surplus\n", 3), ("only text\n", 1)])
def test_a_ragged_row_is_refused_with_its_line(tmp_path: Path, line: str, cells: int) -> None:
    path = tmp_path / "r.csv"
    path.write_text("review,rating\n" + GOOD_ROWS + line)
    _refused(path, "csv", f"line 32 has {cells} cells but the header has 2")


def test_a_non_ascii_digit_label_is_not_read_as_an_index(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("review,rating\n" + GOOD_ROWS + "arabic one,\u0661\n")
    _refused(path, "csv", "label '\u0661'")


def test_ascii_index_labels_still_load(tmp_path: Path) -> None:
    path = tmp_path / "i.csv"
    path.write_text("review,rating\n" + "".join(f"review {i},{i % 3}\n" for i in range(30)))
    train, test = load_labelled_data(DataConfig(source="csv", path=path), TASK, seed=0)
    assert {ex.label for ex in train + test} == {0, 1, 2}


def test_a_nul_byte_in_the_text_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("review,rating\n" + GOOD_ROWS + "bad\x00text,positive\n")
    _refused(path, "csv", "holds a NUL byte")


@pytest.mark.parametrize("value", [["a", "list"], {"a": "dict"}, 7])
def test_json_non_string_text_is_refused(tmp_path: Path, value: object) -> None:
    rows = [{"review": f"review {i}", "rating": "positive"} for i in range(30)] + [{"review": value, "rating": "good"}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    _refused(path, "jsonl", f"is a {type(value).__name__}, not a string")


def test_a_json_object_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    path.write_text('{"review": "one", "review": "two", "rating": "positive"}\n')
    _refused(path, "jsonl", "line 1 has the key 'review' more than once")


def test_a_file_over_max_file_mb_is_refused_with_its_size_and_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("review,rating\n" + GOOD_ROWS * 1_000)  # about 0.55 MB
    _refused(path, "csv", "over data.max_file_mb (0.5 MB); loading takes about 6x", max_file_mb=0.5)
    _load(path, "csv", max_file_mb=1)


def _jsonl(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(f"{row}\n" for row in rows), encoding="utf-8")
    return path


GOOD_JSON_ROWS = [json.dumps({"review": f"review {i}", "rating": ["negative", "positive"][i % 2]}) for i in range(30)]


def test_a_json_label_too_long_for_an_integer_is_refused(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "long.jsonl", [*GOOD_JSON_ROWS, '{"review": "x", "rating": ' + "9" * 5_000 + "}"])
    _refused(path, "jsonl", "line 31 holds a number too long to read")


@pytest.mark.parametrize("label", ["9" * 5_000, "--1", "-+1"])
def test_a_csv_label_that_is_no_index_is_refused_as_a_label(tmp_path: Path, label: str) -> None:
    path = tmp_path / "long.csv"
    path.write_text("review,rating\n" + GOOD_ROWS + f"x,{label}\n")
    _refused(path, "csv", "is not a task label")


def test_a_train_file_with_a_single_label_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("review,rating\n" + "".join(f"review {i},positive\n" for i in range(30)))
    _refused(path, "csv", "holds only the label 'positive'")


@pytest.mark.parametrize("header", ["review,,rating", "review,rating,", " ,review,rating"])
def test_a_csv_column_with_an_empty_name_is_refused(tmp_path: Path, header: str) -> None:
    path = tmp_path / "e.csv"
    cells = header.count(",") + 1
    path.write_text(
        header + "\n" + "".join(",".join([f"review {i}"] + ["positive"] * (cells - 1)) + "\n" for i in range(30))
    )
    _refused(path, "csv", "has a column with an empty name")


def test_a_json_key_with_an_empty_name_is_refused(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "e.jsonl", [*GOOD_JSON_ROWS, '{"review": "x", "rating": "positive", "": 1}'])
    _refused(path, "jsonl", "line 31 has a key with an empty name")


@pytest.mark.parametrize(
    "row",
    [
        '{"review": "half \\ud800 a pair", "rating": "positive"}',
        '{"review": "fine", "rating": "positive\\udc00"}',
        '{"review": "fine", "rating": "positive", "note\\ud800": 1}',
    ],
)
def test_a_lone_surrogate_in_json_is_refused(tmp_path: Path, row: str) -> None:
    path = _jsonl(tmp_path / "s.jsonl", [*GOOD_JSON_ROWS, row])
    _refused(path, "jsonl", "line 31 holds a lone surrogate")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.binary(max_size=200))
def test_any_bytes_after_good_rows_load_or_raise_a_data_error(tmp_path: Path, tail: bytes) -> None:
    for source, name, good in (
        ("csv", "f.csv", ("review,rating\n" + GOOD_ROWS).encode()),
        ("jsonl", "f.jsonl", "".join(f"{row}\n" for row in GOOD_JSON_ROWS).encode()),
    ):
        path = tmp_path / name
        path.write_bytes(good + tail)
        try:
            _load(path, source)
        except DataError as refused:
            assert "\n" not in str(refused) and len(str(refused)) < 1_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ),
    key=st.sampled_from(["review", "rating", "", "other"]),
)
def test_any_json_value_in_any_column_loads_or_raises_a_data_error(tmp_path: Path, key: str, value: object) -> None:
    row = {"review": "text", "rating": "positive"} | {key: value}
    path = _jsonl(tmp_path / "v.jsonl", [*GOOD_JSON_ROWS, json.dumps(row)])
    try:
        _load(path, "jsonl")
    except DataError as refused:
        assert "\n" not in str(refused) and len(str(refused)) < 1_000


def test_one_site_s_own_file_may_hold_a_single_label(tmp_path: Path) -> None:
    # Label skew across sites is the federated case: a clinic may see one outcome only.
    path = tmp_path / "site.csv"
    path.write_text("review,rating\n" + "".join(f"review {i},positive\n" for i in range(30)))
    client = load_site_data(path, DataConfig(), TASK, seed=0, client_id="client-1")
    assert {ex.label for ex in client.train + client.test} == {2}


def test_a_missing_column_among_many_is_refused_in_a_short_sentence(tmp_path: Path) -> None:
    columns = [f"column_with_a_rather_long_name_{i}" * 3 for i in range(500)]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(columns) + "\n" + ",".join(["x"] * 500) + "\n")
    with pytest.raises(DataError) as caught:
        _load(path, "csv")
    message = str(caught.value)
    assert "column 'review' is not in" in message and "(500 in all)" in message and len(message) < 600


def test_a_huge_label_is_quoted_short(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "big-label.jsonl", [*GOOD_JSON_ROWS, json.dumps({"review": "x", "rating": "y" * 100_000})])
    with pytest.raises(DataError) as caught:
        _load(path, "jsonl")
    assert "is not a task label" in str(caught.value) and len(str(caught.value)) < 600
