"""Habits users bring from Flower, Hugging Face and MLflow: ``--version``, a run given the same way to
every command, help on every parameter, results on stdout (``--json`` where they are printed), and an
exit status that tells an early end from a finished run."""

from __future__ import annotations

import json
import sys
import types
from importlib import metadata
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from crosslm_secure.audit.base import CheckResult, save_result
from crosslm_secure.cli import app
from crosslm_secure.runstore import RunStore

ENV = {"COLUMNS": "200"}


def invoke(*args: str) -> click.testing.Result:
    return CliRunner(env=ENV).invoke(app, list(args))


def make_run(root: Path, name: str, *, dp: bool = True, f1: float = 0.6) -> Path:
    config = {
        "run": {"method": "crosslm"},
        "task": {"name": "drug review sentiment"},
        "data": {"source": "embedded", "embedded": "drug_reviews"},
        "privacy": {"dp": dp, "target_epsilon": 8.0},
    }
    store = RunStore.create(root, name, 0, config)
    store.record_round({"round": 0, "slm_macro_f1_mean": 0.3, "llm_macro_f1": 0.2})
    store.record_round(
        {"round": 1, "slm_macro_f1_mean": f1, "llm_macro_f1": 0.4, "epsilon/client-1": 7.5, "slm_macro_f1/client-1": f1}
    )
    return store.root


def test_version_prints_the_installed_package_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"crosslm-secure {metadata.version('crosslm-secure')}"


def test_a_run_is_taken_positionally_or_with_run_on_every_command(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a")
    positional = invoke("budget", "plot", str(run))
    alias = invoke("budget", "plot", "--run", str(run))
    both = invoke("budget", "plot", str(run), "--run", str(run))
    assert "has no client ledgers" in positional.output  # the run was read, and found without ledgers
    assert positional.output == alias.output == both.output and positional.exit_code == alias.exit_code == 1
    for command in (["audit", "report"], ["audit", "ledger"], ["audit", "all"], ["runs", "show"], ["report"]):
        neither = invoke(*command)
        assert neither.exit_code == 2, (command, neither.output)
        assert "which run? give its folder" in neither.output, command
        differ = invoke(*command, str(run), "--run", str(tmp_path / "other"))
        assert differ.exit_code == 2 and "differ; give the run once" in differ.output, command


def test_audit_report_says_the_same_for_a_positional_run_and_for_run(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    assert invoke("audit", "report", missing).output == invoke("audit", "report", "--run", missing).output


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _commands(sub, (*path, name))
    return found


def test_every_parameter_of_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    commands = _commands(root)
    assert len(commands) > 30, "the walk found too few commands"
    lacking = [
        f"crosslm {' '.join(path)} {param.name}"
        for path, command in commands
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert lacking == []
    for path, _ in commands:
        shown = invoke(*path, "--help")
        assert shown.exit_code == 0, (path, shown.output)


def test_compare_prints_its_table_on_stdout_and_json_on_request(tmp_path: Path) -> None:
    first, second = make_run(tmp_path, "a", f1=0.6), make_run(tmp_path, "b", dp=False, f1=0.5)
    table = invoke("compare", str(first), str(second), "--out", str(tmp_path / "cmp"))
    assert table.exit_code == 0, table.output
    assert "SLM macro-F1 (mean, last round)" in table.stdout and "wrote " not in table.stdout
    as_json = invoke("compare", str(first), str(second), "--out", str(tmp_path / "cmp"), "--json")
    body = json.loads(as_json.stdout)
    assert [r["metrics"]["slm_macro_f1_mean"] for r in body["runs"]] == [0.6, 0.5]
    assert body["runs"][1]["deltas"]["slm_macro_f1_mean"] == pytest.approx(-0.1)
    assert body["config_differences"] == {"privacy.dp": ["True", "False"]}
    assert body["runs"][0]["metrics"]["epsilon_max"] == 7.5


def test_compare_json_is_strict_json_when_a_run_spent_infinite_epsilon(tmp_path: Path) -> None:
    plain = make_run(tmp_path, "plain", dp=False)
    RunStore(plain).record_round({"round": 1, "slm_macro_f1_mean": 0.5, "epsilon/client-1": float("inf")})
    shown = invoke("compare", str(plain), "--out", str(tmp_path / "cmp"), "--json")
    body = json.loads(shown.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert body["runs"][0]["metrics"]["epsilon_max"] == "inf"


def test_config_check_json_says_valid_or_why_not(tmp_path: Path) -> None:
    valid = invoke("config", "--check", "experiments/configs/default.yaml", "--json")
    assert valid.exit_code == 0, valid.output
    assert json.loads(valid.stdout) == {"config": "experiments/configs/default.yaml", "valid": True, "error": None}
    missing = invoke("config", "--check", str(tmp_path / "none.yaml"), "--json")
    assert missing.exit_code == 2
    body = json.loads(missing.stdout)
    assert body["valid"] is False and "not found" in body["error"]


def test_sweep_list_has_a_header_row_and_json() -> None:
    table = invoke("sweep", "list", "experiments/sweeps/smoke.yaml")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["STATE", "CELL", "FOLDER"] and len(lines) > 1
    cells = json.loads(invoke("sweep", "list", "experiments/sweeps/smoke.yaml", "--json").stdout)
    assert len(cells) == len(lines) - 1
    assert {"state", "folder", "values"} <= set(cells[0])


def test_runs_list_has_a_row_per_run_with_its_audit_verdict(tmp_path: Path) -> None:
    first, second = make_run(tmp_path, "a"), make_run(tmp_path, "b", dp=False, f1=0.5)
    save_result(first, CheckResult("ledger", "Ledger", "fail", "a ledger entry was altered"))
    (tmp_path / "not-a-run").mkdir()
    listed = invoke("runs", "list", str(tmp_path), "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["run_id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {first.name, second.name}
    row = rows[first.name]
    assert (row["method"], row["task"], row["data_source"]) == (
        "crosslm",
        "drug review sentiment",
        "embedded:drug_reviews",
    )
    assert (row["target_epsilon"], row["slm_macro_f1"], row["llm_macro_f1"]) == (8.0, 0.6, 0.4)
    assert row["audit"] == "FAIL" and row["created"]
    assert rows[second.name]["target_epsilon"] == "no DP" and rows[second.name]["audit"] is None
    table = invoke("runs", "list", str(tmp_path))
    assert first.name in table.stdout and "FAIL" in table.stdout


def test_runs_show_gives_the_clients_and_the_checks(tmp_path: Path) -> None:
    run = make_run(tmp_path, "a")
    save_result(run, CheckResult("ledger", "Ledger", "pass", "every entry verifies"))
    shown = json.loads(invoke("runs", "show", str(run), "--json").stdout)
    assert shown["clients"] == {"client-1": {"epsilon": 7.5, "slm_macro_f1": 0.6}}
    assert shown["checks"] == {"ledger": "self-attested"} and shown["audit"] == "INCOMPLETE"
    text = invoke("runs", "show", "--run", str(run))
    assert text.exit_code == 0 and "client client-1: epsilon 7.500" in text.stdout
    refused = invoke("runs", "list", str(tmp_path / "nowhere"))
    assert refused.exit_code == 2 and "is not a folder" in refused.output


@pytest.mark.parametrize(("stopped", "code"), [(None, 0), ("privacy budget exhausted for client-1", 3)])
def test_a_run_that_ends_early_exits_3_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped: str | None, code: int
) -> None:
    result = types.SimpleNamespace(
        outcome=types.SimpleNamespace(stopped_early=stopped), store=types.SimpleNamespace(root=tmp_path)
    )
    for name, functions in {"runner": ("run_job", "resume_job"), "party_run": ("run_sites", "resume_sites")}.items():
        fake = types.ModuleType(f"crosslm_secure.{name}")  # the job itself is not what this test is about
        for function in functions:
            setattr(fake, function, lambda *args, **kwargs: result)
        monkeypatch.setitem(sys.modules, f"crosslm_secure.{name}", fake)
    done = CliRunner(env=ENV).invoke(app, ["run", "experiments/configs/quick.yaml"])
    assert done.exit_code == code, done.output
    if stopped:
        assert f"run ended early: {stopped}" in done.stderr
    else:
        assert "ended early" not in done.output
    help_text = " ".join(invoke("run", "--help").output.split())
    assert "3: the run ended early" in help_text
