"""Ledger: hash chain, atomic idempotent appends, tamper and truncation detection."""

from __future__ import annotations

import json
import math
import os

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from crosslm_secure.privacy.accounting import MechanismBlock, epsilon
from crosslm_secure.privacy.ledger import Ledger, LedgerError, ledger_path, load_entries
from crosslm_secure.privacy.ledger_format import entry_hash

CLIENT = "client-1"
DELTA = 1e-5
Q = 0.05


def fixed_clock() -> str:
    return "2026-01-01T00:00:00+00:00"


def open_ledger(tmp_path) -> Ledger:
    return Ledger(ledger_path(tmp_path, CLIENT), client_id=CLIENT, clock=fixed_clock)


def record_round(ledger: Ledger, round_index: int, *, run_id: str = "run-a", steps: int = 20, **extra):
    return ledger.record_dp_sgd(
        run_id=run_id,
        round_index=round_index,
        sample_rate=Q,
        noise_multiplier=1.0,
        steps=steps,
        max_grad_norm=1.0,
        delta=DELTA,
        accountant="prv",
        epsilon_max=10.0,
        **extra,
    )


@pytest.fixture
def three_rounds(tmp_path) -> Ledger:
    ledger = open_ledger(tmp_path)
    for r in range(3):
        record_round(ledger, r)
    return ledger


def rewrite_line(path, index, change):
    lines = path.read_text().splitlines(keepends=True)
    raw = json.loads(lines[index])
    change(raw)
    lines[index] = json.dumps(raw, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))


def test_path_layout(tmp_path):
    assert ledger_path(tmp_path / "runs" / "r1", CLIENT) == (
        tmp_path / "runs" / "r1" / "clients" / CLIENT / "ledger.jsonl"
    )


def test_entries_round_trip_and_chain(three_rounds):
    reloaded = Ledger(three_rounds.path, client_id=CLIENT)
    assert reloaded.entries == three_rounds.entries
    assert [e.seq for e in reloaded.entries] == [0, 1, 2]
    assert reloaded.entries[1].prev_hash == reloaded.entries[0].hash
    assert reloaded.entries[0].prev_hash == "0" * 64


def test_cumulative_epsilon_equals_opacus_accountants_for_the_same_history(three_rounds):
    rdp, prv = RDPAccountant(), PRVAccountant()
    for _ in range(3 * 20):
        rdp.step(noise_multiplier=1.0, sample_rate=Q)
        prv.step(noise_multiplier=1.0, sample_rate=Q)
    last = three_rounds.entries[-1]
    assert last.epsilon["rdp"] == pytest.approx(rdp.get_epsilon(DELTA), rel=1e-12)
    assert last.epsilon["prv"] == pytest.approx(prv.get_epsilon(DELTA), rel=1e-9)
    assert last.spent() == last.epsilon["prv"]
    assert three_rounds.epsilon("rdp") == last.epsilon["rdp"]
    assert three_rounds.entries[0].epsilon["prv"] < last.epsilon["prv"]


def test_same_record_again_is_idempotent(three_rounds):
    before = three_rounds.path.read_bytes()
    again = record_round(three_rounds, 1)
    assert again == three_rounds.entries[1]
    assert len(three_rounds) == 3
    assert three_rounds.path.read_bytes() == before


def test_conflicting_record_for_a_round_is_refused(three_rounds):
    with pytest.raises(LedgerError, match="already recorded with different steps"):
        record_round(three_rounds, 1, steps=21)


def test_another_run_is_a_new_entry(three_rounds):
    record_round(three_rounds, 1, run_id="run-b")
    assert len(three_rounds) == 4


def test_score_release_is_accounted_at_client_level_apart_from_dp_sgd(three_rounds):
    record_level_before = three_rounds.epsilon("prv")
    entry = three_rounds.record_score_release(
        run_id="run-a",
        round_index=2,
        noise_std=4.0,
        sensitivity=0.5,
        count=1,
        delta=DELTA,
        accountant="prv",
        epsilon_max=10.0,
    )
    assert (entry.mechanism, entry.unit, entry.sample_rate, entry.steps) == (
        "gaussian-score-release",
        "client",
        1.0,
        1,
    )
    assert entry.noise_multiplier == 8.0
    assert entry.epsilon["rdp"] == pytest.approx(epsilon([MechanismBlock(8.0, 1.0, 1)], DELTA, "rdp"))
    assert three_rounds.epsilon("rdp", unit="client") == pytest.approx(entry.epsilon["rdp"])
    # the scores are post-processing of the DP model: the record-level epsilon does not move
    assert three_rounds.epsilon("prv") == record_level_before
    assert Ledger(three_rounds.path, client_id=CLIENT).entries[-1] == entry


def test_non_private_entry_makes_epsilon_infinite(tmp_path):
    ledger = open_ledger(tmp_path)
    entry = ledger.record_non_private(run_id="run-a", round_index=0, steps=5, accountant="prv", epsilon_max=10.0)
    assert math.isinf(entry.spent()) and ledger.non_private
    assert '"prv":"inf"' in ledger.path.read_text()  # strict JSON on disk
    assert math.isinf(Ledger(ledger.path, client_id=CLIENT).epsilon("rdp"))


def test_other_delta_is_refused(three_rounds):
    with pytest.raises(LedgerError, match="composed at one delta"):
        three_rounds.record_score_release(
            run_id="run-a",
            round_index=0,
            noise_std=1.0,
            sensitivity=1.0,
            count=1,
            delta=1e-6,
            accountant="prv",
            epsilon_max=10.0,
        )


def test_tampered_entry_is_detected(three_rounds):
    rewrite_line(three_rounds.path, 1, lambda raw: raw["epsilon"].update(prv=0.01))
    with pytest.raises(LedgerError, match="line 2 was modified"):
        Ledger(three_rounds.path, client_id=CLIENT)


def test_rehashed_tampered_entry_breaks_the_chain(three_rounds):
    def forge(raw):
        raw["steps"] = 1
        body = {k: v for k, v in raw.items() if k not in ("hash", "signature")}
        raw["hash"] = entry_hash(body)

    rewrite_line(three_rounds.path, 1, forge)
    with pytest.raises(LedgerError, match="line 3 does not follow line 2"):
        Ledger(three_rounds.path, client_id=CLIENT)


def test_removed_middle_entry_is_detected(three_rounds):
    lines = three_rounds.path.read_text().splitlines(keepends=True)
    three_rounds.path.write_text(lines[0] + lines[2])
    with pytest.raises(LedgerError, match="hash chain broken"):
        load_entries(three_rounds.path)


def test_dropped_last_entry_is_detected(three_rounds):
    lines = three_rounds.path.read_text().splitlines(keepends=True)
    three_rounds.path.write_text("".join(lines[:2]))
    with pytest.raises(LedgerError, match="truncated: its head records 3 entries"):
        load_entries(three_rounds.path)


def test_partial_last_line_is_detected(three_rounds):
    text = three_rounds.path.read_text()
    three_rounds.path.write_text(text[:-40])
    with pytest.raises(LedgerError, match="truncated"):
        load_entries(three_rounds.path)


def test_entry_of_another_client_is_refused(three_rounds):
    with pytest.raises(LedgerError, match="belongs to client-1, not client-2"):
        Ledger(three_rounds.path, client_id="client-2")


def test_crash_between_ledger_and_head_is_recovered(three_rounds):
    head_before = three_rounds.head_path.read_text()
    record_round(three_rounds, 3)
    three_rounds.head_path.write_text(head_before)  # as if the head rename never happened
    reopened = Ledger(three_rounds.path, client_id=CLIENT)
    assert len(reopened) == 4
    record_round(reopened, 4)
    assert json.loads(reopened.head_path.read_text())["entries"] == 5
    assert len(Ledger(reopened.path, client_id=CLIENT)) == 5


def test_failed_write_leaves_the_old_ledger(three_rounds, monkeypatch):
    before = three_rounds.path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        record_round(three_rounds, 3)
    monkeypatch.undo()
    assert three_rounds.path.read_bytes() == before
    assert [p for p in os.listdir(three_rounds.path.parent) if p.endswith(".tmp")] == []
    assert len(Ledger(three_rounds.path, client_id=CLIENT)) == 3


def test_missing_ledger_is_empty(tmp_path):
    ledger = open_ledger(tmp_path)
    assert len(ledger) == 0 and ledger.epsilon("prv") == 0.0 and ledger.delta is None


def test_a_retried_aggregation_is_a_second_release(three_rounds):
    common = dict(
        run_id="run-a", round_index=2, sensitivity=1.0, count=1, delta=DELTA, accountant="rdp", epsilon_max=10.0
    )
    first = three_rounds.record_score_release(noise_std=4.0, attempt=0, **common)
    again = three_rounds.record_score_release(noise_std=4.0, attempt=0, **common)
    retry = three_rounds.record_score_release(noise_std=3.0, attempt=1, **common)
    assert again == first and retry != first
    assert retry.epsilon["rdp"] > first.epsilon["rdp"]
    assert len([e for e in three_rounds.entries if e.unit == "client"]) == 2
    # both releases survive a reopen: the file's key includes the attempt, as find's does
    assert Ledger(three_rounds.path, client_id=CLIENT).entries == three_rounds.entries


def test_a_file_that_repeats_a_release_is_refused(three_rounds, monkeypatch):
    monkeypatch.setattr(three_rounds, "find", lambda *key: None)  # a writer that skipped the check
    record_round(three_rounds, 1, steps=21)
    monkeypatch.undo()
    with pytest.raises(LedgerError, match=r"line 4 repeats \('run-a', 1, 'dp-sgd', 0\)"):
        load_entries(three_rounds.path)


def test_each_release_records_its_noise_source_and_an_older_entry_without_one_reads_as_os(tmp_path):
    ledger = open_ledger(tmp_path)
    record_round(ledger, 0)
    record_round(ledger, 1, noise_source="seeded")
    ledger.record_score_release(
        run_id="run-a",
        round_index=1,
        noise_std=4.0,
        sensitivity=0.5,
        count=1,
        delta=DELTA,
        accountant="prv",
        epsilon_max=10.0,
        noise_source="seeded",
    )
    assert [e.noise_source for e in Ledger(ledger.path, client_id=CLIENT).entries] == ["os", "seeded", "seeded"]

    older = open_ledger(tmp_path / "older")
    record_round(older, 0, noise_source="seeded")

    def as_written_before(raw):  # the field did not exist yet: details without it, hash and head to match
        del raw["details"]["noise_source"]
        raw["hash"] = entry_hash({k: v for k, v in raw.items() if k not in ("hash", "signature")})
        older.head_path.write_text(json.dumps({"entries": 1, "hash": raw["hash"]}) + "\n")

    rewrite_line(older.path, 0, as_written_before)
    (entry,) = Ledger(older.path, client_id=CLIENT).entries
    assert "noise_source" not in entry.details and entry.noise_source == "os"
