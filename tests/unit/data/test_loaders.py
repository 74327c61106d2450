"""Loaders: embedded drug reviews, CSV/TSV, JSONL and hf_disk round trips, and every error."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from crosslm_secure.config import DataConfig, TaskConfig
from crosslm_secure.data.loaders import cap_train, load_labelled_data
from crosslm_secure.errors import DataError

TASK = TaskConfig()
LABELS = ["negative", "neutral", "positive"]


def _rows(n: int) -> list[dict[str, str]]:
    """``n`` rows cycling through the labels, texts naming their row."""
    return [{"id": str(i), "review": f"review number {i}", "rating": LABELS[i % 3]} for i in range(n)]


def _write_csv(path: Path, rows: list[dict[str, object]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_embedded_drug_reviews_load_clean_and_complete() -> None:
    train, test = load_labelled_data(DataConfig(), TASK, seed=0)
    assert (len(train), len(test)) == (600, 379)
    assert Counter(ex.label for ex in train) == {2: 385, 1: 54, 0: 161}
    assert train[0].uid == "embedded:train:0" and test[0].uid == "embedded:test:0"
    assert all("&#039;" not in ex.text and "&amp;" not in ex.text for ex in train + test)
    assert not any(ex.text.startswith('"') and ex.text.endswith('"') for ex in train)
    assert max(len(ex.text) for ex in train) <= DataConfig().max_text_chars
    assert any("I've" in ex.text for ex in test)  # &#039; became an apostrophe


def test_csv_without_test_path_holds_out_a_stratified_seeded_split(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "reviews.csv", _rows(90))
    cfg = DataConfig(source="csv", path=path, test_fraction=0.2)
    train, test = load_labelled_data(cfg, TASK, seed=3)
    assert (len(train), len(test)) == (72, 18)
    assert Counter(ex.label for ex in test) == {0: 6, 1: 6, 2: 6}
    assert {ex.uid for ex in train}.isdisjoint(ex.uid for ex in test)
    assert sorted(int(ex.uid.split(":")[-1]) for ex in train + test) == list(range(90))
    by_uid = {ex.uid: ex for ex in train + test}
    assert by_uid["csv:train:7"].text == "review number 7" and by_uid["csv:train:7"].label == 1
    again, _ = load_labelled_data(cfg, TASK, seed=3)
    other, _ = load_labelled_data(cfg, TASK, seed=4)
    assert again == train
    assert other != train


def test_tsv_with_separate_test_file_and_integer_labels(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "y": i % 3} for i in range(6)]
    train_path = _write_csv(tmp_path / "train.tsv", rows, delimiter="\t")
    test_path = _write_csv(tmp_path / "test.tsv", rows[:3], delimiter="\t")
    cfg = DataConfig(source="csv", path=train_path, test_path=test_path, text_column="text", label_column="y")
    train, test = load_labelled_data(cfg, TASK, seed=0)
    assert [ex.label for ex in train] == [0, 1, 2, 0, 1, 2]
    assert [ex.uid for ex in test] == ["csv:test:0", "csv:test:1", "csv:test:2"]


def test_jsonl_round_trip_with_names_in_any_case_and_text_cut(tmp_path: Path) -> None:
    rows = [
        {"review": "A" * 50, "rating": "Positive"},
        {"review": "  ", "rating": "negative"},  # empty text: skipped
        {"review": "meh", "rating": 1},
        {"review": "bad", "rating": "0"},
    ]
    path = _write_jsonl(tmp_path / "train.jsonl", rows)
    test_path = _write_jsonl(tmp_path / "test.jsonl", rows[2:])
    cfg = DataConfig(source="jsonl", path=path, test_path=test_path, max_text_chars=16)
    train, test = load_labelled_data(cfg, TASK, seed=0)
    assert [(ex.uid, ex.text, ex.label) for ex in train] == [
        ("jsonl:train:0", "A" * 16, 2),
        ("jsonl:train:2", "meh", 1),
        ("jsonl:train:3", "bad", 0),
    ]
    assert [ex.label for ex in test] == [1, 0]


def test_hf_disk_dataset_dict_with_class_labels(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"sentence": ["bad", "good", "awful"], "label": [0, 1, 0]}, features=features
            ),
            "test": datasets.Dataset.from_dict({"sentence": ["great"], "label": [1]}, features=features),
        }
    )
    splits.save_to_disk(str(tmp_path / "ds"))
    cfg = DataConfig(source="hf_disk", path=tmp_path / "ds", text_column="sentence", label_column="label")
    train, test = load_labelled_data(cfg, TASK, seed=0)
    # ClassLabel names map onto the task's labels by name, not by raw index.
    assert [(ex.text, ex.label) for ex in train] == [("bad", 0), ("good", 2), ("awful", 0)]
    assert [(ex.uid, ex.label) for ex in test] == [("hf_disk:test:0", 2)]


def test_hf_disk_single_dataset_is_held_out(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = _rows(30)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    cfg = DataConfig(source="hf_disk", path=tmp_path / "one", test_fraction=0.3)
    train, test = load_labelled_data(cfg, TASK, seed=0)
    assert (len(train), len(test)) == (21, 9)


def test_max_train_records_keeps_label_shares(tmp_path: Path) -> None:
    rows = [{"review": f"r{i}", "rating": "positive" if i < 60 else "negative"} for i in range(80)]
    path = _write_csv(tmp_path / "skewed.csv", rows)
    test_path = _write_csv(tmp_path / "test.csv", rows[:3])
    cfg = DataConfig(source="csv", path=path, test_path=test_path, max_train_records=20)
    train, _ = load_labelled_data(cfg, TASK, seed=1)
    assert Counter(ex.label for ex in train) == {2: 15, 0: 5}
    assert train == sorted(train, key=lambda ex: int(ex.uid.split(":")[-1]))
    # The audit reads the data once, uncapped, and caps it itself: it must get the same records.
    full, _ = load_labelled_data(cfg.model_copy(update={"max_train_records": None}), TASK, seed=1)
    assert len(full) == 80 and cap_train(full, cfg, seed=1) == train
    assert cap_train(full, cfg, seed=2) != train


def test_missing_file_is_named(tmp_path: Path) -> None:
    cfg = DataConfig(source="csv", path=tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"data.path .*nope\.csv is not a file; check the path"):
        load_labelled_data(cfg, TASK, seed=0)


def test_missing_hf_folder_is_named(tmp_path: Path) -> None:
    cfg = DataConfig(source="hf_disk", path=tmp_path / "absent")
    with pytest.raises(DataError, match=r"data.path .*absent is not a folder; give the folder datasets"):
        load_labelled_data(cfg, TASK, seed=0)


def test_missing_column_lists_the_columns_that_exist(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "cols.csv", _rows(9))
    cfg = DataConfig(source="csv", path=path, text_column="body")
    with pytest.raises(DataError) as caught:
        load_labelled_data(cfg, TASK, seed=0)
    message = str(caught.value)
    assert "'body'" in message and "'id', 'review', 'rating'" in message
    assert "data.text_column" in message


def test_unknown_label_names_it_and_the_known_labels(tmp_path: Path) -> None:
    rows = _rows(6) + [{"id": "6", "review": "hmm", "rating": "mixed"}]
    path = _write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError) as caught:
        load_labelled_data(DataConfig(source="csv", path=path), TASK, seed=0)
    message = str(caught.value)
    assert "'mixed'" in message and "row 6" in message
    assert "negative, neutral, positive" in message


def test_out_of_range_integer_label_is_refused(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ints.jsonl", [{"review": "x", "rating": 3}])
    with pytest.raises(DataError, match="label 3 .* not a task label"):
        load_labelled_data(DataConfig(source="jsonl", path=path), TASK, seed=0)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("review,rating\n")
    with pytest.raises(DataError, match="has no records"):
        load_labelled_data(DataConfig(source="csv", path=path), TASK, seed=0)


def test_too_few_records_to_hold_out(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "one.csv", _rows(1))
    with pytest.raises(DataError, match="too few records"):
        load_labelled_data(DataConfig(source="csv", path=path), TASK, seed=0)


def test_bad_jsonl_line_is_located(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"review": "ok", "rating": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2 is not a JSON object"):
        load_labelled_data(DataConfig(source="jsonl", path=path), TASK, seed=0)
