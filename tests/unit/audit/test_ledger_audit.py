"""The ledger audit re-verifies chains, recomputes epsilon with dp-accounting, and checks budgets."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import yaml

from crosslm_secure.audit.base import AuditError
from crosslm_secure.audit.ledger_audit import run_ledger_audit, seeded_noise_findings
from crosslm_secure.audit.ledger_epsilon import PLD_TOLERANCE, RDP_TOLERANCE, independent_epsilon
from crosslm_secure.config import config_from_dict
from crosslm_secure.privacy.accounting import MechanismBlock, epsilon
from crosslm_secure.privacy.ledger import Ledger
from tests.unit.audit.golden import assert_matches_golden


def _ledger(run: Path, client: str = "client-1") -> Path:
    return run / "clients" / client / "ledger.jsonl"


def _rehash(path: Path, edit) -> None:
    """Rewrite a ledger with ``edit`` applied to each entry and a consistent chain and head, as
    the format in privacy/ledger.py documents it (a forger who can rewrite the whole file)."""
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    prev = "0" * 64
    lines = []
    for entry in entries:
        edit(entry)
        entry["prev_hash"] = prev
        body = {k: v for k, v in entry.items() if k not in ("hash", "signature")}
        entry["hash"] = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        ).hexdigest()
        prev = entry["hash"]
        lines.append(json.dumps(entry, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n")
    path.write_text("".join(lines))
    path.with_name(path.name + ".head").write_text(json.dumps({"entries": len(lines), "hash": prev}) + "\n")


def test_independent_accountants_agree_with_opacus_within_the_stated_tolerance() -> None:
    history = [MechanismBlock(1.1, 0.08, 25), MechanismBlock(1.1, 0.08, 25)]
    rdp_ours, rdp_theirs = epsilon(history, 1e-5, "rdp"), independent_epsilon(history, 1e-5, "rdp")
    prv_ours, pld_theirs = epsilon(history, 1e-5, "prv"), independent_epsilon(history, 1e-5, "prv")
    assert abs(rdp_ours - rdp_theirs) / rdp_theirs < RDP_TOLERANCE
    assert abs(prv_ours - pld_theirs) / pld_theirs < PLD_TOLERANCE
    # a tenth more steps is a different history: well outside the tolerance
    more = independent_epsilon([MechanismBlock(1.1, 0.08, 55)], 1e-5, "rdp")
    assert abs(more - rdp_theirs) / rdp_theirs > RDP_TOLERANCE


def test_an_honest_run_passes_with_a_row_per_client(crosslm_run: Path) -> None:
    result = run_ledger_audit(crosslm_run, progress=False)
    assert result.verdict == "pass", result.findings
    table = result.tables[0]
    assert table.columns == ["client", "recorded eps", "recomputed eps", "rel. diff", "entries", "budget", "verdict"]
    assert [row[0] for row in table.rows] == ["client-1", "client-2"]
    for row in table.rows:
        recorded, recomputed = float(row[1]), float(row[2])
        assert 0 < recorded <= 10 and recomputed == pytest.approx(recorded, rel=PLD_TOLERANCE)
        assert row[-1] == "pass"
    assert result.numbers["recomputations"] >= 4 and result.numbers["recomputations_mismatched"] == 0
    assert result.numbers["epsilon_spent_max"] == pytest.approx(max(float(r[1]) for r in table.rows), rel=1e-3)
    assert result.figures == ["ledger_epsilon.png"] and (crosslm_run / "audit" / "ledger_epsilon.png").is_file()
    assert_matches_golden(crosslm_run, "ledger", "ledger_crosslm_run")


def test_a_tampered_ledger_fails_with_the_reason(crosslm_run: Path) -> None:
    path = _ledger(crosslm_run)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["noise_multiplier"] = entry["noise_multiplier"] * 3  # claim far more noise than was used
    lines[0] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    result = run_ledger_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert any(
        f.startswith("clients/client-1/ledger.jsonl: does not verify") and "line 1 was modified" in f
        for f in result.findings
    )
    assert {row[0]: row[-1] for row in result.tables[0].rows}["client-1"].startswith("fail")


def test_a_truncated_ledger_fails_with_the_reason(crosslm_run: Path) -> None:
    path = _ledger(crosslm_run, "client-2")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    result = run_ledger_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert any("client-2" in f and "truncated" in f for f in result.findings)


def test_a_rehashed_ledger_with_a_false_epsilon_is_caught_by_the_recomputation(crosslm_run: Path) -> None:
    def understate(entry: dict) -> None:
        if entry["unit"] == "record":
            entry["epsilon"] = {k: v / 2 for k, v in entry["epsilon"].items()}

    _rehash(_ledger(crosslm_run), understate)
    result = run_ledger_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert not any("hash chain" in f for f in result.findings)  # the forgery is chain-consistent
    assert any(f.startswith("clients/client-1/ledger.jsonl line 1: recorded prv epsilon") for f in result.findings)
    assert any(f.startswith("clients/client-1/ledger.jsonl line 1: recorded rdp epsilon") for f in result.findings)


def test_a_client_over_the_configured_budget_fails(crosslm_run: Path) -> None:
    config = yaml.safe_load((crosslm_run / "config.yaml").read_text())
    spent = max(
        json.loads(line)["epsilon"]["prv"]
        for line in _ledger(crosslm_run).read_text().splitlines()
        if json.loads(line)["unit"] == "record"
    )
    assert math.isfinite(spent)
    config["privacy"].update(target_epsilon=spent / 4, epsilon_max=spent / 2)
    (crosslm_run / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_ledger_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert result.numbers["clients_over_budget"] >= 1
    assert any("over its budget" in f for f in result.findings)
    assert any("was checked against epsilon_max" in f for f in result.findings)


def test_a_run_without_ledgers_cannot_be_audited(crosslm_run: Path) -> None:
    for path in (crosslm_run / "clients").glob("*/ledger.jsonl*"):
        path.unlink()
    with pytest.raises(AuditError, match="has no clients/\\*/ledger.jsonl"):
        run_ledger_audit(crosslm_run, progress=False)


def test_a_client_trained_without_dp_is_over_any_budget(crosslm_run: Path) -> None:
    path = _ledger(crosslm_run)
    path.unlink()
    path.with_name(path.name + ".head").unlink()
    Ledger(path, client_id="client-1").record_non_private(
        run_id=crosslm_run.name, round_index=1, steps=4, accountant="prv", epsilon_max=10.0
    )
    result = run_ledger_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert result.numbers["epsilon_spent_max"] == "inf" and result.numbers["clients_over_budget"] == 1
    assert any("client-1 trained on private data without DP (epsilon = inf)" in f for f in result.findings)
    assert {row[0]: row[1] for row in result.tables[0].rows}["client-1"] == "inf"


def test_a_config_with_seeded_noise_fails_even_where_no_ledger_entry_says_so() -> None:
    """A run whose ledgers hold no noisy release (or predate the field) is judged by its config too."""
    seeded = config_from_dict({"privacy": {"noise_source": "seeded"}})
    (finding,) = seeded_noise_findings(seeded, {"client-1": []})
    assert finding.startswith("config.yaml: research mode: the noise was seeded")
    assert seeded_noise_findings(config_from_dict({}), {"client-1": []}) == []
