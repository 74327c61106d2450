"""The content-addressed result cache: hits, misses on a changed key, corrupt entries recomputed."""

from __future__ import annotations

from pathlib import Path

import pytest

from crosslm_secure.cache import CacheWarning, ContentCache, content_key, default_cache


class Counter:
    def __init__(self, value: object) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return self.value


def _entry(root: Path) -> Path:
    (path,) = [p for p in root.rglob("*.json")]
    return path


def test_second_call_with_the_same_key_is_a_hit(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    key = content_key("llm_task", "weights-sha", {"batch": 16}, "data-sha")
    compute = Counter({"accuracy": 0.46, "macro_f1": 0.335})
    assert cache.get_or_compute("llm_task", key, compute) == {"accuracy": 0.46, "macro_f1": 0.335}
    again = ContentCache(tmp_path)  # a later process
    assert again.get_or_compute("llm_task", key, compute) == {"accuracy": 0.46, "macro_f1": 0.335}
    assert compute.calls == 1
    assert (cache.misses, again.hits) == (1, 1)


def test_a_changed_weight_data_or_setting_is_a_miss(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    base = ("llm_task", "weights-sha", {"batch": 16, "max_length": 192}, "data-sha")
    changed = [
        ("llm_task", "other-weights", {"batch": 16, "max_length": 192}, "data-sha"),
        ("llm_task", "weights-sha", {"batch": 16, "max_length": 128}, "data-sha"),
        ("llm_task", "weights-sha", {"batch": 16, "max_length": 192}, "other-data"),
    ]
    cache.put("llm_task", content_key(*base), 1.0)
    for parts in changed:
        assert content_key(*parts) != content_key(*base)
        compute = Counter(2.0)
        assert cache.get_or_compute("llm_task", content_key(*parts), compute) == 2.0
        assert compute.calls == 1
    assert content_key("x", {"a": 1, "b": 2}) == content_key("x", {"b": 2, "a": 1})


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:-3],  # truncated
        lambda raw: raw.replace(b"23.22", b"99.99"),  # edited value, hash no longer matches
        lambda raw: b"not a cache entry",  # overwritten
        lambda raw: b"",  # empty
    ],
)
def test_a_corrupt_entry_is_recomputed_never_trusted(tmp_path: Path, damage) -> None:
    cache = ContentCache(tmp_path)
    key = content_key("llm_ppl", "weights-sha", 16, 128)
    cache.put("llm_perplexity", key, 23.22)
    path = _entry(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    compute = Counter(23.22)
    assert cache.get_or_compute("llm_perplexity", key, compute) == 23.22
    assert compute.calls == 1
    assert ContentCache(tmp_path).get("llm_perplexity", key) == 23.22  # rewritten whole


def test_an_entry_moved_under_another_key_is_refused(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    one, two = content_key("a"), content_key("b")
    cache.put("llm_task", one, {"accuracy": 1.0})
    source = _entry(tmp_path)
    target = source.parent.parent / two[:2] / f"{two}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)
    assert cache.get("llm_task", two) is None
    assert not target.exists()


def test_the_environment_chooses_the_folder_or_turns_the_cache_off(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CROSSLM_CACHE_DIR", str(tmp_path / "c"))
    cache = default_cache()
    assert cache is not None and cache.root == tmp_path / "c"
    monkeypatch.setenv("CROSSLM_CACHE_DIR", "off")
    assert default_cache() is None


def test_a_cache_that_cannot_be_written_warns_once_and_keeps_the_result(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    cache = ContentCache(blocker)
    compute = Counter({"macro_f1": 0.5})
    with pytest.warns(CacheWarning, match=r"result cache: cannot write under .*cache .*results are not kept"):
        assert cache.get_or_compute("llm_task", content_key("a"), compute) == {"macro_f1": 0.5}
        assert cache.get_or_compute("llm_task", content_key("a"), compute) == {"macro_f1": 0.5}
    assert compute.calls == 2 and len(cache.warned) == 1


def test_an_entry_that_cannot_be_read_is_recomputed_with_a_warning(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path)
    key = content_key("b")
    cache.put("llm_task", key, 1)
    entry = _entry(tmp_path)
    entry.unlink()
    entry.mkdir()  # reading it now fails with an OSError that is not "not found"
    with pytest.warns(CacheWarning, match=r"cannot read .* recomputing it"):
        assert cache.get("llm_task", key) is None
