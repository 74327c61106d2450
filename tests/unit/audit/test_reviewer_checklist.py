"""What a reviewer checks before signing an audit report, item by item, on an honest run.

The run is the finished CKKS CrossLM run (conftest), copied under another folder name; the
protocol and ledger checks are real. The MIA and DP checks are stood in for by results shaped
like the real ones with the figures a reviewer misread: a server-LLM attack on 50 members and 50
non-members whose AUC interval is too wide to decide, and a white-box DP bound (every guess
right) above the bound an ideal mechanism at the claim would typically give.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crosslm_secure.audit import registry
from crosslm_secure.audit.base import CheckResult, Table, save_result
from crosslm_secure.audit.canaries import epsilon_lower_bound
from crosslm_secure.audit.mia import TABLE_COLUMNS
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.audit.whitebox import ceiling_bound
from crosslm_secure.cli import app
from crosslm_secure.report.budgets import run_budgets
from crosslm_secure.runstore import RunStore
from tests.unit.audit.auc_rows import auc_metrics

HERE = "tests.unit.audit.test_reviewer_checklist"
CANARIES, GUESSES, DELTA, CLAIMED = 384, 58, 1e-5, 7.99
WIDE_LLM = ("server LLM", "LOSS (LoRA round-1)", "50 / 50", "0.491 [0.383, 0.598]")


def shaped_mia(run_dir: Path, settings=None, *, progress: bool = True) -> CheckResult:
    """The real MIA table's columns: a decided SLM row and the too-wide server-LLM row."""
    columns = list(TABLE_COLUMNS)
    rows = [
        [
            "client-1 SLM",
            "LiRA",
            "1000 / 2000",
            "0.540 [0.525, 0.556]",
            "0.02 [0.01, 0.03]",
            "0.004 [0, 0.01]",
            "-",
            "8",
        ],
        [*WIDE_LLM, "0.0 [0.0, 0.1]", "n/a (<1000 non-members)", "-", "-"],
    ]
    intervals = [  # the saved intervals the report's marks read, written as the real check writes them
        auc_metrics(1000, 2000, 0.525, 0.556).row("client-1 SLM", "LiRA"),
        auc_metrics(50, 50, 0.383, 0.598).row(WIDE_LLM[0], WIDE_LLM[1]),
    ]
    result = CheckResult(
        "mia", "Membership inference", "pass", "Best SLM attack LiRA: mean AUC 0.540; no rule fired.",
        {"llm_auc": 0.491}, [Table("Membership inference (95% bootstrap intervals)", columns, rows)],
        details={"auc": intervals},
    )  # fmt: skip
    save_result(run_dir, result)
    return result


def shaped_whitebox_dp(run_dir: Path, settings=None, *, progress: bool = True) -> CheckResult:
    """The white-box DP result's numbers at epsilon 8: all 58 guesses right, so the bound is the most possible."""
    lower = epsilon_lower_bound(CANARIES, GUESSES, GUESSES, DELTA, 0.95)
    ceiling = ceiling_bound(CANARIES, GUESSES, CLAIMED, DELTA, 0.95)
    numbers = {
        "mode": "white-box", "client": "client-1", "canaries": CANARIES, "canaries_included": 190,
        "guesses": GUESSES, "correct": GUESSES, "empirical_epsilon_lower_bound": lower, "claimed_epsilon": CLAIMED,
        "ceiling_epsilon": ceiling, "confidence": 0.95, "delta": DELTA, "shift_ratio": 1.02, "mechanism_fail": False,
    }  # fmt: skip
    summary = (
        f"client-1 (white-box, gradient canaries): 58/58 guesses right -> epsilon >= {lower:.2f} (95%) vs claimed "
        f"{CLAIMED:.2f}; the method's ceiling for 384 canaries and 58 guesses at the claim is {ceiling:.2f}"
    )
    table = Table(
        "One-run DP audit, white-box", ["client", "eps lower bound", "ceiling"], [["client-1", "2.93", "2.45"]]
    )
    result = CheckResult("dp", "DP audit in one training run (white-box)", "pass", summary, numbers, [table])
    save_result(run_dir, result)
    return result


@pytest.fixture
def renamed_run(crosslm_run_template: Path, tmp_path: Path) -> Path:
    """A copy of the honest run under a folder name that is not its run id."""
    copy = tmp_path / "copied-for-review"
    shutil.copytree(crosslm_run_template, copy)
    return copy


@pytest.fixture
def shaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.CHECKS, "mia", (HERE, "shaped_mia"))
    monkeypatch.setitem(registry.CHECKS, "dp", (HERE, "shaped_whitebox_dp"))


def test_the_report_of_an_honest_run_has_everything_a_reviewer_signs(
    renamed_run: Path, registry_file: Path, shaped: None
) -> None:
    args = ["audit", "all", str(renamed_run), "--no-progress", "--registry", str(registry_file)]
    done = CliRunner().invoke(app, [*args, "--set", "audit.mia_max_auc=0.65", "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)  # the per-check lines went to stderr
    assert out["overall"] == "PASS" and out["exit_code"] == 0 and "protocol: PASS" in done.stderr
    mia = json.loads((renamed_run / "audit" / "mia.json").read_text())
    assert mia["settings"]["mia_max_auc"] == 0.65 and mia["overrides"] == ["audit.mia_max_auc=0.65"]
    assert [c["overrides"] for c in out["checks"]] == [["audit.mia_max_auc=0.65"]] * 4
    undecided = {c["check"]: c["not_resolvable"] for c in out["checks"]}
    assert len(undecided["mia"]) == 1 and undecided["mia"][0].startswith("server LLM LOSS (LoRA round-1) AUC: ")
    assert len(undecided["dp"]) == 1 and undecided["protocol"] == undecided["ledger"] == []
    md = (renamed_run / "audit" / "report.md").read_text()
    page = (renamed_run / "audit" / "report.html").read_text()
    first = md.split("## Verdict\n", 1)[0]
    run_id = RunStore(renamed_run).run_id
    assert run_id != renamed_run.name and md.startswith(f"# Audit report: {run_id}\n")
    assert f"<h1>Audit report: {run_id}</h1>" in page and '<section id="scope">' in page
    assert "Audited: mia (" in first and "Not audited: " in first and '"Audit threat model"' in first
    assert "The overall verdict is PASS:" in first
    assert (
        "| audit.mia_max_auc | 0.65 (mia) | OVERRIDDEN by --set audit.mia_max_auc=0.65; the run's config says 0.6 |"
        in first
    )
    assert f"Pinned: registry {registry_file}" in first
    assert "| base LLM | tiny-llm (" in first and "| base SLM | tiny-bert (" in first
    config = run_config(renamed_run)
    for budget in run_budgets(renamed_run):
        spent = f"{budget.epsilon_spent:.3f} of budget {budget.epsilon_max:g}"
        assert f"| {budget.client_id} | {config.privacy.target_epsilon:g} | {spent} | {budget.delta:.1e} |" in first
    assert "Reviewer name: ____" in first and "Date: ____" in first
    for name in ("mia", "dp", "protocol", "ledger"):
        digest = hashlib.sha256((renamed_run / "audit" / f"{name}.json").read_bytes()).hexdigest()
        assert f"| audit/{name}.json | {digest} |" in first
    assert "0.215 wide, more than the 0.15 between chance (0.5) and the limit 0.65" in md
    assert "Not resolvable, so not a pass: server LLM LOSS (LoRA round-1) AUC" in md
    assert "| mia | PASS | Best SLM attack LiRA: mean AUC 0.540; no rule fired. Not resolvable: 1 figure(s)," in md
    summary = {line.split("**")[1]: line for line in md.splitlines() if line.startswith("- **")}
    assert "Ran with --set audit.mia_max_auc=0.65" in summary["mia"] and "Ran with --set" not in summary["ledger"]
    # The white-box DP bounds: the bound (every guess right) never reads as exceeding a "ceiling".
    dp_row = next(line for line in md.splitlines() if line.startswith("| dp | PASS |"))
    lower = epsilon_lower_bound(CANARIES, GUESSES, GUESSES, DELTA, 0.95)
    assert "ceiling" not in dp_row and f"all guesses right {lower:.2f} (the most these canaries can show)" in dp_row
    assert "| client | eps lower bound | expected bound at the claim |" in md
    assert f"- Most these canaries can certify {lower:.2f}: the bound with all 58 guesses right" in md
    assert f"here the bound {lower:.2f} is above it because 58 guesses were right" in md
    assert f"epsilon lower bound: even all 58 guesses right certify only {lower:.2f}, not above the claimed 7.99" in md
