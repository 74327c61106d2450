"""A deployed run that ended early exits 3 with its reason, as ``crosslm run`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from crosslm_secure.deploy.cli import _exit_if_stopped_early


def _run_with_events(root: Path, events: list[dict]) -> Path:
    root.mkdir()
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return root


def test_a_run_stopped_early_exits_3_and_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_with_events(tmp_path / "run", [{"event": "run_stopped", "round": 2, "reason": "quorum lost: 1 of 2"}])
    with pytest.raises(typer.Exit) as stopped:
        _exit_if_stopped_early(run)
    assert stopped.value.exit_code == 3
    assert "quorum lost: 1 of 2" in " ".join(capsys.readouterr().err.split())


def test_a_finished_run_does_not_exit(tmp_path: Path) -> None:
    run = _run_with_events(tmp_path / "run", [{"event": "run_finished", "completed_round": 2}])
    assert _exit_if_stopped_early(run) is None


def test_a_run_resumed_after_an_early_stop_that_then_finished_does_not_exit(tmp_path: Path) -> None:
    events = [
        {"event": "run_started", "round": 0},
        {"event": "run_stopped", "round": 1, "reason": "site lost"},
        {"event": "run_started", "round": 1},
        {"event": "run_finished", "completed_round": 2},
    ]
    assert _exit_if_stopped_early(_run_with_events(tmp_path / "run", events)) is None
