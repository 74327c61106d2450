"""The coordinator's copy of a site's ledger: appended only when the chain continues and the site signed."""

from __future__ import annotations

from pathlib import Path

import pytest

from crosslm_secure.crypto.keys import ParticipantKeys
from crosslm_secure.privacy.ledger import Ledger, LedgerError
from crosslm_secure.privacy.ledger_copy import extend_copy, held_entries
from crosslm_secure.privacy.ledger_format import entry_line, load_entries

CLIENT = "client-1"


def site_ledger(path: Path, keys: ParticipantKeys, rounds: int) -> Ledger:
    ledger = Ledger(path, client_id=CLIENT, signer=keys)
    for r in range(rounds):
        ledger.record_dp_sgd(
            run_id="run-a",
            round_index=r + 1,
            sample_rate=1.0,
            noise_multiplier=2.0,
            steps=10,
            max_grad_norm=1.0,
            delta=1e-5,
            accountant="prv",
            epsilon_max=10.0,
        )
    return ledger


@pytest.fixture
def keys() -> ParticipantKeys:
    return ParticipantKeys.generate(CLIENT)


def test_entries_sent_in_two_batches_make_the_site_s_ledger(tmp_path: Path, keys: ParticipantKeys) -> None:
    own = site_ledger(tmp_path / "site" / "ledger.jsonl", keys, 3)
    copy = tmp_path / "server" / "ledger.jsonl"
    lines = [entry_line(e) for e in own.entries]
    assert extend_copy(copy, CLIENT, lines[:1], keys.public()) == 1
    assert extend_copy(copy, CLIENT, lines[held_entries(copy, CLIENT) :], keys.public()) == 3
    assert copy.read_text() == own.path.read_text()
    assert [e.hash for e in load_entries(copy, client_id=CLIENT, finished=True)] == [e.hash for e in own.entries]


def test_entries_signed_by_another_key_are_refused_and_the_copy_kept(tmp_path: Path, keys: ParticipantKeys) -> None:
    own = site_ledger(tmp_path / "site" / "ledger.jsonl", keys, 2)
    copy = tmp_path / "server" / "ledger.jsonl"
    extend_copy(copy, CLIENT, [entry_line(own.entries[0])], keys.public())
    before = copy.read_bytes()
    impostor = ParticipantKeys.generate(CLIENT)
    with pytest.raises(LedgerError, match="does not verify as client-1's enrolled key.*keeps its 1 entries"):
        extend_copy(copy, CLIENT, [entry_line(own.entries[1])], impostor.public())
    assert copy.read_bytes() == before


def test_entries_that_skip_one_are_refused(tmp_path: Path, keys: ParticipantKeys) -> None:
    own = site_ledger(tmp_path / "site" / "ledger.jsonl", keys, 3)
    copy = tmp_path / "server" / "ledger.jsonl"
    extend_copy(copy, CLIENT, [entry_line(own.entries[0])], keys.public())
    with pytest.raises(LedgerError, match="hash chain broken"):
        extend_copy(copy, CLIENT, [entry_line(own.entries[2])], keys.public())
    assert held_entries(copy, CLIENT) == 1


def test_an_edited_entry_is_refused(tmp_path: Path, keys: ParticipantKeys) -> None:
    own = site_ledger(tmp_path / "site" / "ledger.jsonl", keys, 1)
    line = entry_line(own.entries[0]).replace('"steps":10', '"steps":5')
    with pytest.raises(LedgerError, match="was modified"):
        extend_copy(tmp_path / "server" / "ledger.jsonl", CLIENT, [line], keys.public())
    assert not (tmp_path / "server" / "ledger.jsonl").exists()
