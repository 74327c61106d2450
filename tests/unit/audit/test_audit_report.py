"""``crosslm audit``, the ``audits/`` scripts and the report: verdicts, provenance, exit codes.

The membership-inference and DP checks belong to another module with its own tests; here they
are stood in for by small checks registered under their names, so these tests stay fast and
say exactly what the report does with a pass, a fail and a check that cannot run.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crosslm_secure.audit import registry
from crosslm_secure.audit.base import AuditError, CheckResult, Table, save_result
from crosslm_secure.audit.cli import script_main
from crosslm_secure.audit.runinfo import audit_settings
from crosslm_secure.cli import app
from crosslm_secure.config import config_from_dict, config_to_dict
from crosslm_secure.crypto.ckks import ScoreContext

REPO = Path(__file__).resolve().parents[3]
HERE = "tests.unit.audit.test_audit_report"


def _saved(run_dir: Path, result: CheckResult) -> CheckResult:
    """Like every real check, a stand-in saves its own result."""
    save_result(run_dir, result)
    return result


def passing_mia(run_dir: Path, settings=None, *, progress: bool = True) -> CheckResult:
    return _saved(
        run_dir,
        CheckResult(
            "mia",
            "Membership inference (stand-in)",
            "pass",
            "AUC 0.51 at chance.",
            {"slm_auc_mean": 0.51},
            [Table("attacks", ["target", "AUC"], [["client-1", "0.51"]])],
        ),
    )


def failing_dp(run_dir: Path, settings=None, *, progress: bool = True) -> CheckResult:
    result = CheckResult(
        "dp", "One-run DP (stand-in)", "fail", "Empirical epsilon 9.1 > 8.", findings=["eps_lb 9.1 > 8"]
    )
    return _saved(run_dir, result)


def passing_dp(run_dir: Path, settings=None, *, progress: bool = True) -> CheckResult:
    return _saved(run_dir, CheckResult("dp", "One-run DP (stand-in)", "pass", "Empirical epsilon 0.4 <= 8."))


def unrunnable_mia(run_dir: Path, settings=None, *, progress: bool = True) -> CheckResult:
    raise AuditError("audit mia: the run has no population records; rerun with data.max_train_records lowered")


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch):
    """Register stand-ins for mia/dp; returns a setter to swap them."""

    def use(mia: str = "passing_mia", dp: str = "passing_dp") -> None:
        monkeypatch.setitem(registry.CHECKS, "mia", (HERE, mia))
        monkeypatch.setitem(registry.CHECKS, "dp", (HERE, dp))

    use()
    return use


def audit(*args: str):
    return CliRunner().invoke(app, ["audit", *args])


def test_audit_all_passes_and_writes_a_self_contained_report(crosslm_run: Path, registry_file: Path, stand_ins) -> None:
    result = audit("all", "--run", str(crosslm_run), "--no-progress", "--registry", str(registry_file))
    assert result.exit_code == 0, result.output
    md = (crosslm_run / "audit" / "report.md").read_text()
    page = (crosslm_run / "audit" / "report.html").read_text()
    assert "**Overall verdict: PASS**" in md
    for name in ("mia", "dp", "protocol", "ledger"):
        assert f"| {name} | PASS |" in md and (crosslm_run / "audit" / f"{name}.json").is_file()
    resolved = config_to_dict(config_from_dict(yaml.safe_load((crosslm_run / "config.yaml").read_text())))
    config_hash = hashlib.sha256(json.dumps(resolved, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert config_hash in md and config_hash in page
    digest = hashlib.sha256()
    for weights in sorted((crosslm_run / "clients" / "client-1" / "slm").glob("*.safetensors")):
        digest.update(weights.name.encode() + b"\0" + hashlib.sha256(weights.read_bytes()).digest())
    expected = digest.hexdigest()
    assert f"| SLM checkpoint client-1 | clients/client-1/slm | {expected} |" in md
    assert "LLM LoRA adapter (last round) | llm/round-1" in md
    assert f"crosslm audit all --run {crosslm_run} --registry {registry_file}" in md
    assert "Server artefacts: every file" in md
    assert "dp-accounting " in md and "tenseal " in md  # tool versions
    assert "![ledger_epsilon.png](ledger_epsilon.png)" in md
    assert page.count("data:image/png;base64,") == 1
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page


def test_a_planted_secret_key_fails_the_gate_and_names_the_file(crosslm_run: Path, stand_ins) -> None:
    (crosslm_run / "server" / "stash.bin").write_bytes(ScoreContext.create("n4096").to_bytes())
    result = audit("all", "--run", str(crosslm_run), "--no-progress")
    assert result.exit_code == 1, result.output
    md = (crosslm_run / "audit" / "report.md").read_text()
    assert "**Overall verdict: FAIL**" in md and "| protocol | FAIL |" in md
    assert "- server/stash.bin: contains a crosslm CKKS context flagged SECRET at byte 0" in md


def test_a_failing_and_an_unrunnable_check_are_rows_and_the_report_rebuilds(crosslm_run: Path, stand_ins) -> None:
    stand_ins(mia="unrunnable_mia", dp="failing_dp")
    result = audit("all", "--run", str(crosslm_run), "--no-progress")
    assert result.exit_code == 1, result.output  # the overall verdict: a failed check is a FAIL
    assert "overall: FAIL" in result.output
    md = (crosslm_run / "audit" / "report.md").read_text()
    assert "| mia | ERROR | audit mia: the run has no population records;" in md
    assert "## mia: ERROR" in md and "| dp | FAIL |" in md and "- eps_lb 9.1 > 8" in md
    (crosslm_run / "audit" / "report.md").unlink()
    rebuilt = audit("report", "--run", str(crosslm_run))
    assert rebuilt.exit_code == 1, rebuilt.output
    assert "| mia | ERROR |" in (crosslm_run / "audit" / "report.md").read_text()
    stand_ins(mia="passing_mia", dp="failing_dp")
    assert audit("mia", "--run", str(crosslm_run), "--no-progress").exit_code == 0
    again = audit("report", "--run", str(crosslm_run))
    assert again.exit_code == 1, again.output
    md = (crosslm_run / "audit" / "report.md").read_text()
    assert "| mia | PASS |" in md and "ERROR" not in md


def test_single_checks_settings_and_bad_input_exit_codes(
    crosslm_run: Path, registry_file: Path, tmp_path: Path
) -> None:
    one = audit(
        "ledger", "--run", str(crosslm_run), "--no-progress", "--registry", str(registry_file), "--set", "audit.seed=7"
    )
    assert one.exit_code == 0, one.output
    assert one.output.startswith("ledger: PASS: 2 of 2 ledgers verify")
    saved = json.loads((crosslm_run / "audit" / "ledger.json").read_text())
    assert saved["verdict"] == "pass" and saved["overrides"] == ["audit.seed=7"] and saved["settings"]["seed"] == 7
    report = audit("report", "--run", str(crosslm_run))
    assert report.exit_code == 2 and "overall: INCOMPLETE" in report.output  # exit codes are the verdict's
    as_json = audit("report", str(crosslm_run), "--json")
    assert as_json.exit_code == 2 and json.loads(as_json.stdout)["overall"] == "INCOMPLETE"
    assert json.loads(as_json.stdout)["exit_code"] == 2 and "overall: INCOMPLETE" in as_json.stderr
    md = (crosslm_run / "audit" / "report.md").read_text()
    assert f"| mia | NOT RUN | not run yet; to run it: crosslm audit mia {crosslm_run} |" in md
    assert "`" not in md.split("## Provenance", 1)[0] and "<run>" not in md
    outside = audit("protocol", "--run", str(crosslm_run), "--set", "privacy.epsilon_max=100")
    assert outside.exit_code == 2 and "only audit.<field>=<value> is allowed" in outside.output
    assert audit_settings(crosslm_run, ["audit.reference_models=4"]).reference_models == 4
    bad_value = audit("protocol", "--run", str(crosslm_run), "--set", "audit.confidence=2")
    assert bad_value.exit_code == 2 and "audit.confidence" in bad_value.output
    missing = audit("all", "--run", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "is not a run folder" in missing.output
    empty = audit("report", "--run", str(tmp_path / "nope"))
    assert empty.exit_code == 2


def test_the_audits_scripts_run_as_python_files_with_the_same_exit_codes(
    crosslm_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = subprocess.run(
        [sys.executable, "audits/protocol.py", "--run", str(crosslm_run), "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 3, ok.stderr  # passed, on the keys the run folder names itself
    assert ok.stdout.startswith("protocol: SELF-ATTESTED") and "pass --registry FILE" in ok.stdout
    (crosslm_run / "clients" / "client-2" / "ledger.jsonl.head").unlink()
    bad = script_main("ledger", ["--run", str(crosslm_run), "--no-progress"])
    assert bad == 1
    assert "clients/client-2/ledger.jsonl: does not verify" in capsys.readouterr().out
    assert script_main("ledger", ["--run", str(crosslm_run), "--no-progress", "--json"]) == 1
    printed = capsys.readouterr()
    (check,) = json.loads(printed.out)["checks"]
    assert check["verdict"] == "fail" and any("client-2/ledger.jsonl: does not verify" in f for f in check["findings"])
    assert printed.err.startswith("ledger: FAIL")
