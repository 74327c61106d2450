"""Atomic writes leave old or new, never half; torn log lines are dropped, not misread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crosslm_secure import storage
from crosslm_secure.errors import RunError
from crosslm_secure.runstore import RunStore


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "secret.bin"
    storage.atomic_write_bytes(target, b"one", mode=0o600)
    storage.atomic_write_bytes(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert (target.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret.bin"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    storage.atomic_write_text(target, "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        storage.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_dir_replaces_a_folder_whole_or_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with storage.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("one")
    with storage.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("two")
    assert [p.name for p in target.iterdir()] == ["weights"] and (target / "weights").read_text() == "two"
    with pytest.raises(RuntimeError, match="crash"), storage.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("crash while writing")
    assert (target / "weights").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"], "no temp or old folder may be left behind"


def test_atomic_dir_fsyncs_every_new_file_before_the_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    target = tmp_path / "adapter"
    with storage.atomic_dir(target) as tmp:
        (tmp / "nested").mkdir()
        for name in ("weights", "nested/config"):
            (tmp / name).write_text(name)
    files = {str(tmp / "weights"), str(tmp / "nested" / "config")}
    assert files <= set(synced), synced  # fsynced while still in the temp folder, i.e. before the rename
    assert synced[-1] == str(tmp_path), "the parent is fsynced last, after the rename"


def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    storage.append_jsonl(log, {"a": 1})
    storage.append_jsonl(log, {"a": 2})
    with open(log, "a") as handle:
        handle.write('{"a": 3')  # crash mid-append
    assert storage.read_jsonl(log) == [{"a": 1}, {"a": 2}]


def test_run_store_records_rounds_idempotently(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "t", 0, {"run": {"name": "t"}})
    store.record_round({"round": 0, "x": 1.0})
    store.record_round({"round": 1, "x": 2.0})
    store.record_round({"round": 1, "x": 3.0, "y": 4})  # a resumed round replaces, not duplicates
    assert [r["x"] for r in store.rounds()] == [1.0, 3.0]
    assert (store.root / "metrics.csv").read_text().splitlines()[0] == "round,x,y"
    assert RunStore.open(store.root).config_dict() == {"run": {"name": "t"}}
    with pytest.raises(RunError, match="not a run folder"):
        RunStore.open(tmp_path / "missing")
