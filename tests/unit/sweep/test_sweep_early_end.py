"""A cell whose run ended early (``crosslm run`` exit 3: budget spent, too few clients) is a result of
the grid, kept as done; only another exit status makes a cell failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crosslm_secure.clitools import EXIT_STOPPED_EARLY
from crosslm_secure.sweep.execute import run_cell
from crosslm_secure.sweep.spec import load_sweep

SMOKE = Path(__file__).resolve().parents[3] / "experiments" / "sweeps" / "smoke.yaml"


class FinishedRunExiting:
    """Stands in for the ``crosslm run`` process: writes a finished run folder, then exits with ``code``."""

    def __init__(self, code: int) -> None:
        self.code = code

    def run(self, argv: list[str], log: Path, timeout: float | None) -> tuple[int, bool]:
        if "audit" in argv:
            return 0, False
        run = log.parent / "runs" / "cell-s0"
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text("run: {name: cell}\n")
        event = {"event": "run_finished", "stopped_early": "privacy budget exhausted for client-1"}
        (run / "events.jsonl").write_text(json.dumps(event) + "\n")
        log.write_text("error: the run could not finish\n")
        return self.code, False


@pytest.mark.parametrize(("code", "status"), [(0, "done"), (EXIT_STOPPED_EARLY, "done"), (1, "failed")])
def test_a_run_that_ended_early_is_a_done_cell(tmp_path: Path, code: int, status: str) -> None:
    sweep = load_sweep(SMOKE, output_dir=tmp_path)
    outcome = run_cell(sweep, sweep.cells()[0], FinishedRunExiting(code))
    assert outcome.status == status, outcome.error
