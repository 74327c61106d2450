"""The synthetic store survives a restart, replaces a re-run round, and refuses a corrupt file."""

from __future__ import annotations

import pytest

from crosslm_secure.client.synthetic_store import SyntheticStore
from crosslm_secure.data.records import Example
from crosslm_secure.errors import DataError


def ex(uid: str, label: int = 0) -> Example:
    return Example(uid=uid, text=f"text of {uid}", label=label)


def test_samples_survive_a_restart_and_a_rerun_round_replaces_its_entry(tmp_path) -> None:
    path = tmp_path / "synthetic.json"
    store = SyntheticStore(path)
    store.keep(1, [ex("a"), ex("b", 1)])
    store.keep(2, [ex("c")])
    store.keep(2, [ex("d", 1), ex("a")])  # round 2 ran again after a crash
    reopened = SyntheticStore(path)
    assert [e.uid for e in reopened.before(3)] == ["a", "b", "d"]
    assert [e.uid for e in reopened.before(2)] == ["a", "b"]
    assert reopened.before(3)[1] == ex("b", 1)


def test_a_corrupt_store_is_one_sentence_naming_the_file(tmp_path) -> None:
    path = tmp_path / "synthetic.json"
    path.write_text('{"1": [{"uid": "a"}]}')
    with pytest.raises(DataError, match="synthetic.json is unreadable; delete it"):
        SyntheticStore(path)
