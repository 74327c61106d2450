"""summary.md of a run: macro-F1 leads the headline and every table with its interval, accuracy stands beside it."""

from __future__ import annotations

import math
from pathlib import Path

from crosslm_secure.audit.artefact_checks import validate
from crosslm_secure.config import config_from_dict
from crosslm_secure.manifest import kind_named
from crosslm_secure.privacy.ledger import Ledger, ledger_path
from crosslm_secure.report.run_setup import setup_items
from crosslm_secure.report.summary import write_report
from crosslm_secure.runstore import RunStore
from tests.unit.report.kept_runs import INTERVAL, answers, kept_run, two_kept_rounds

ROUND0 = {
    "round": 0,
    "active_clients": 2,
    "slm_macro_f1_mean": 0.25,
    "slm_accuracy_mean": 0.64,
    "llm_macro_f1": 0.30,
    "llm_accuracy": 0.50,
    "slm_macro_f1/client-1": 0.24,
    "slm_macro_f1/client-2": 0.26,
    "slm_accuracy/client-1": 0.63,
    "slm_accuracy/client-2": 0.65,
    "seconds_round": 10.0,
}
ROUND1 = {
    **ROUND0,
    "round": 1,
    "slm_macro_f1_mean": 0.40,
    "slm_accuracy_mean": 0.62,
    "llm_macro_f1": 0.45,
    "llm_accuracy": 0.55,
    "slm_macro_f1/client-1": 0.38,
    "slm_accuracy/client-1": 0.61,
    "synthetic_generated": 36,
    "synthetic_accepted": 12,
    "synthetic_mean_score": 0.41,
    "seconds_round": 30.0,
}


def summary(tmp_path: Path, rows: list[dict]) -> str:
    store = RunStore.create(tmp_path, "t", 0, {})
    for row in rows:
        store.record_round(row)
    write_report(store, config_from_dict({}), None)
    return (store.root / "summary.md").read_text()


def section(text: str, title: str) -> list[str]:
    """The lines of one ``## title`` section."""
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : None if end < 0 else end].splitlines()


def test_the_headline_gives_macro_f1_changes_before_accuracy(tmp_path: Path) -> None:
    headline = [line for line in section(summary(tmp_path, [ROUND0, ROUND1]), "Headline") if line.startswith("- ")]
    assert headline[:4] == [
        "- Mean client SLM macro-F1: 0.250 (round 0) -> 0.400 (round 1), +15.0 points",
        "- LLM task macro-F1: 0.300 (round 0) -> 0.450 (round 1), +15.0 points",
        "- Mean client SLM accuracy: 0.640 (round 0) -> 0.620 (round 1), -2.0 points",
        "- LLM task accuracy: 0.500 (round 0) -> 0.550 (round 1), +5.0 points",
    ]


def test_the_round_table_puts_macro_f1_before_accuracy(tmp_path: Path) -> None:
    table = [line for line in section(summary(tmp_path, [ROUND0, ROUND1]), "Metrics per round") if line.startswith("|")]
    assert table[0] == (
        "| round | clients | SLM macro-F1 (mean) | SLM acc (mean) | LLM macro-F1 | LLM acc | synthetic kept "
        "| generated | mean score | seconds |"
    )
    assert table[2] == "| 0 | 2 | 0.250 | 0.640 | 0.300 | 0.500 |  |  |  | 10 |"
    assert table[3] == "| 1 | 2 | 0.400 | 0.620 | 0.450 | 0.550 | 12 | 36 | 0.410 | 30 |"
    assert not any("judge" in line for line in table)  # the rounds carry no judge numbers


def test_judge_agreement_and_the_threshold_are_shown_when_the_rounds_carry_them(tmp_path: Path) -> None:
    judged = {
        **ROUND1,
        "synthetic_accept_threshold": 0.4,
        "synthetic_judge_agreement_accepted": 0.75,
        "synthetic_judge_agreement_rejected": math.nan,  # nothing was dropped
    }
    table = [line for line in section(summary(tmp_path, [ROUND0, judged]), "Metrics per round") if line.startswith("|")]
    assert table[0].endswith(
        "| synthetic kept | generated | threshold | mean score | judge agrees (kept) | judge agrees (dropped) "
        "| seconds |"
    )
    assert table[3].endswith("| 12 | 36 | 0.400 | 0.410 | 0.750 |  | 30 |")


def test_the_client_table_puts_macro_f1_first(tmp_path: Path) -> None:
    clients = section(summary(tmp_path, [ROUND0, ROUND1]), "Clients after round 1")
    assert clients[2] == "| client | macro-F1 | accuracy | epsilon |"
    assert clients[4:6] == ["| client-1 | 0.380 | 0.610 | n/a |", "| client-2 | 0.260 | 0.650 | n/a |"]


def test_no_round_means_no_headline_numbers(tmp_path: Path) -> None:
    text = summary(tmp_path, [])
    assert section(text, "Headline")[2] == "No round completed."
    assert "## Clients after" not in text and "| round |" not in text


def test_macro_f1_carries_its_interval_in_the_headline_and_every_table(tmp_path: Path) -> None:
    store = kept_run(tmp_path, "kept", two_kept_rounds())
    write_report(store, config_from_dict({}), None)
    text = (store.root / "summary.md").read_text()
    headline = [line for line in section(text, "Headline") if "macro-F1" in line]
    assert [len(INTERVAL.findall(line)) for line in headline] == [2, 2]
    table = [line for line in section(text, "Metrics per round") if line.startswith("| 1 |")]
    clients = [line for line in section(text, "Clients after round 1") if line.startswith("| client-")]
    found = INTERVAL.findall(table[0]) + [m for line in clients for m in INTERVAL.findall(line)]
    assert len(found) == 4  # round 1's SLM mean and LLM, and each client
    assert all(float(low) <= float(point) <= float(high) and low < high for point, low, high in found)
    assert "95% percentile-bootstrap interval over the test records" in text


def test_the_setup_section_is_the_one_the_page_shows(tmp_path: Path) -> None:
    store = kept_run(tmp_path, "kept", [{"llm": answers(45, 3)}], {"run": {"seed": 3}})
    store.event("data", llm_test=45)
    config = config_from_dict({"run": {"seed": 3}})
    write_report(store, config, None)
    setup = section((store.root / "summary.md").read_text(), "Set-up")
    expected = [f"- {name}: {value}" for name, value in setup_items(store, config, store.rounds())]
    assert setup[2 : 2 + len(expected)] == expected
    assert "- seed: 3" in expected and "- evaluation n (test records): LLM 45 (evaluator's split)" in expected


def test_reports_of_a_many_client_run_pass_the_protocol_audits_text_checks(tmp_path: Path) -> None:
    """Intervals put three numbers in a cell; no line may read as a vector (the audit would fail the run)."""
    clients = [f"client-{i}" for i in range(1, 13)]
    rounds = [
        {"llm": answers(90, 3 + r)} | {c: answers(30, 3 + r + i, prefix=c) for i, c in enumerate(clients)}
        for r in range(3)
    ]
    raw = {"partition": {"clients": 12}}
    store = kept_run(tmp_path, "many", rounds, raw)
    per_label = {"negative": 10, "neutral": 10, "positive": 10}
    store.event(
        "data", llm_test=90, clients={c: {"train": 30, "test": 30, "train_by_label": per_label} for c in clients}
    )
    for client in clients:  # ledgers, so no message quotes the (long) folder path
        ledger = Ledger(ledger_path(store.root, client), client_id=client)
        ledger.record_non_private(run_id=store.run_id, round_index=1, steps=10, accountant="rdp", epsilon_max=9.0)
    baseline = kept_run(tmp_path, "base", rounds[:1], raw)
    write_report(store, config_from_dict(raw), None, baseline=baseline)
    for name, kind in (("summary.md", "summary"), ("report.html", "report")):
        data = (store.root / name).read_bytes()
        assert len(INTERVAL.findall(data.decode())) > 12 * 3
        assert validate(kind_named(kind), data, clients) == [], name
