"""Run a sweep's cells, each as its own ``crosslm run`` process, and keep going past failures.

Cell folder ``<cells_dir>/<cell-id>/``::

    cell.json     grid values, overrides, status, seconds, return code, error
    log.txt       everything the cell's processes printed (appended across attempts)
    runs/<id>/    the ordinary run folder (``crosslm run --set run.output_dir=<cell>/runs``)

A cell whose run finished is skipped; one that completed some rounds is resumed with
``crosslm run --resume``; one that never completed round 0 starts again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crosslm_secure.audit.base import load_result
from crosslm_secure.audit.registry import EXIT_FAIL, EXIT_PASS, EXIT_SELF_ATTESTED
from crosslm_secure.clitools import EXIT_STOPPED_EARLY
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_json, read_jsonl
from crosslm_secure.sweep.feasibility import check_cells_have_data
from crosslm_secure.sweep.spec import Cell, Sweep, job_dict, same_job

CELL_FILE = "cell.json"
LOG_FILE = "log.txt"
LOCK_FILE = ".lock"
CLI = "from crosslm_secure.cli import main; main()"
RunState = Literal["finished", "partial", "empty", "none"]


@dataclass
class CellOutcome:
    """What happened to one cell in this invocation."""

    cell: Cell
    folder: Path
    status: Literal["done", "skipped", "failed"]
    seconds: float = 0.0
    error: str | None = None
    run_dir: Path | None = None


def cell_folder(sweep: Sweep, cell: Cell) -> Path:
    """The cell's folder: one holding the same job (shared cells, or a cell from before a new config
    field was added), else a new folder named by the cell's grid values and config hash."""
    if not sweep.cells_dir.is_dir():
        return sweep.cells_dir / cell.cell_id
    exact = sorted(sweep.cells_dir.glob(f"*-{cell.config_hash}"))
    if exact:
        return exact[0]
    for folder in sorted(p for p in sweep.cells_dir.iterdir() if p.is_dir()):
        run_dir = cell_run_dir(folder)
        if run_dir is not None and cell.job and same_job(cell.job, job_dict(RunStore(run_dir).config_dict() or {})):
            return folder
    return sweep.cells_dir / cell.cell_id


def cell_run_dir(folder: Path) -> Path | None:
    """The run folder inside a cell folder (the newest, should there be several)."""
    runs = sorted(p for p in (folder / "runs").glob("*") if p.is_dir() and (p / "config.yaml").is_file())
    return runs[-1] if runs else None


def run_state(run_dir: Path | None) -> RunState:
    """finished (run_finished logged), partial (a round completed), empty (none did) or none."""
    if run_dir is None:
        return "none"
    events = read_jsonl(run_dir / "events.jsonl")
    if any(e.get("event") == "run_finished" for e in events):
        return "finished"
    return "partial" if (run_dir / "state.json").is_file() else "empty"


def cell_busy(folder: Path) -> bool:
    """True while a sweep process holds the cell's lock (the cell is running now)."""
    path = folder / LOCK_FILE
    if not path.is_file():
        return False
    with open(path) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def cell_command(sweep: Sweep, cell: Cell, folder: Path) -> tuple[list[str], RunState]:
    """The ``crosslm run`` argv for a cell given what its folder holds (clearing an empty run)."""
    run_dir = cell_run_dir(folder)
    state = run_state(run_dir)
    if state == "partial":
        return [sys.executable, "-c", CLI, "run", "--resume", str(run_dir)], state
    if state == "empty" and run_dir is not None:
        shutil.rmtree(run_dir)  # never completed round 0: nothing to resume, start it again
    argv = [sys.executable, "-c", CLI, "run", str(sweep.base_config)]
    for item in [
        *cell.overrides,
        f"run.output_dir={folder / 'runs'}",
        f"run.name={cell.slug}",
        "run.progress=false",
    ]:
        argv += ["--set", item]
    return argv, state


class _Processes:
    """Child processes started by this sweep, so an interrupt stops exactly those."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen] = set()
        self.stopping = False

    def run(self, argv: list[str], log: Path, timeout: float | None) -> tuple[int, bool]:
        """Run argv with output appended to ``log``; returns (return code, timed out)."""
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"\n$ {' '.join(argv[3:] if argv[1] == '-c' else argv)}\n")
            handle.flush()
            env = {
                **os.environ,
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                "COLUMNS": "200",
            }
            with self._lock:
                if self.stopping:
                    return 130, False
                process = subprocess.Popen(
                    argv, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
                self._live.add(process)
            try:
                return process.wait(timeout=timeout), False
            except subprocess.TimeoutExpired:
                _stop(process)
                return process.wait(), True
            finally:
                with self._lock:
                    self._live.discard(process)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            for process in self._live:
                _stop(process)


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: the cell and nothing else
    except ProcessLookupError:
        pass


def run_cell(sweep: Sweep, cell: Cell, processes: _Processes) -> CellOutcome:
    """Run (or skip, or resume) one cell, then its audits; never raises for a failing cell.

    A lock on the cell folder keeps two sweeps sharing a cells folder from running one cell twice.
    """
    folder = cell_folder(sweep, cell)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = "another sweep process is running this cell; re-run this sweep when it is done"
            return CellOutcome(cell, folder, "failed", error=busy)
        return _run_locked_cell(sweep, cell, folder, processes)


def _run_locked_cell(sweep: Sweep, cell: Cell, folder: Path, processes: _Processes) -> CellOutcome:
    record = read_cell_record(folder) | {
        "cell": folder.name,
        "sweep": sweep.spec.name,
        "values": cell.values,
        "overrides": cell.overrides,
        "config_hash": cell.config_hash,
    }
    log = folder / LOG_FILE
    if run_state(cell_run_dir(folder)) == "finished":
        error = _run_audits(sweep, folder, processes, log)
        _write_record(folder, record | {"status": "done", "audit_error": error})
        return CellOutcome(cell, folder, "skipped", run_dir=cell_run_dir(folder), error=error)

    argv, state = cell_command(sweep, cell, folder)
    record |= {"status": "running", "started": time.time(), "attempts": record.get("attempts", 0) + 1}
    _write_record(folder, record)
    start = time.perf_counter()
    timeout = sweep.spec.cell_timeout_minutes * 60 if sweep.spec.cell_timeout_minutes else None
    code, timed_out = processes.run(argv, log, timeout)
    seconds = time.perf_counter() - start
    run_dir = cell_run_dir(folder)
    # A run that ended early (its budget spent, too few clients) is a result of the grid, not a failure.
    finished = code in (0, EXIT_STOPPED_EARLY) and run_state(run_dir) == "finished"
    error = None
    if not finished:
        if timed_out:
            error = f"stopped after {sweep.spec.cell_timeout_minutes:g} min; re-run the sweep to resume it"
        else:
            error = f"exit code {code}: {_last_error(log)}"
    else:
        error = _run_audits(sweep, folder, processes, log)
    seconds_total = record.get("seconds", 0.0) + seconds
    record |= {
        "status": "done" if finished else "failed",
        "finished": time.time(),
        "seconds": round(seconds_total, 1),
        "seconds_last_attempt": round(seconds, 1),
        "resumed": state == "partial",
        "returncode": code,
        "error": None if finished else error,
        "audit_error": error if finished else None,
    }
    _write_record(folder, record)
    return CellOutcome(
        cell, folder, "done" if finished else "failed", seconds, error if not finished else None, run_dir
    )


def _run_audits(sweep: Sweep, folder: Path, processes: _Processes, log: Path) -> str | None:
    """Run each configured audit the cell's run lacks; the first that could not run, as one line, else None.

    An audit that ran and failed its verdict (exit code 1, e.g. a no-DP cell's MIA) is a result,
    kept in ``audit/<name>.json`` and in ``results.csv``, not an error; so is a pass on the run's
    own keys (exit code 3, SELF-ATTESTED: a sweep pins no registry).
    """
    run_dir = cell_run_dir(folder)
    for name in sweep.spec.audits:
        if run_dir is None or load_result(run_dir, name) is not None:
            continue
        code, _ = processes.run([sys.executable, "-c", CLI, "audit", name, "--run", str(run_dir)], log, None)
        if code not in (EXIT_PASS, EXIT_FAIL, EXIT_SELF_ATTESTED) or load_result(run_dir, name) is None:
            return f"audit {name} exit code {code}: {_last_error(log)}"
    return None


def _guarded_cell(sweep: Sweep, cell: Cell, processes: _Processes) -> CellOutcome:
    """run_cell, with an unexpected error in the sweep's own code recorded as that cell's failure."""
    try:
        return run_cell(sweep, cell, processes)
    except Exception as exc:  # one broken cell must not stop the others
        return CellOutcome(cell, cell_folder(sweep, cell), "failed", error=f"{type(exc).__name__}: {exc}")


def run_sweep(
    sweep: Sweep,
    *,
    max_parallel: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[CellOutcome]:
    """Run every cell not finished yet, ``max_parallel`` at a time; failures are recorded, not raised.

    Raises:
        SweepError: a cell asks for more training records of a label than its task has
            (:func:`~crosslm_secure.sweep.feasibility.check_cells_have_data`); then no cell runs.
    """
    cells = sweep.cells()
    check_cells_have_data(sweep, cells)
    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    workers = max_parallel or sweep.spec.max_parallel
    processes = _Processes()
    outcomes: list[CellOutcome] = []
    bar = _progress(progress, len(cells), sweep.spec.name)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(_guarded_cell, sweep, cell, processes) for cell in cells]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            log(_outcome_line(outcome))
            bar.advance()
    except BaseException:  # Ctrl-C: stop the running cells (they resume on re-run) and start no more
        processes.stop_all()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
    order = {cell.cell_id: i for i, cell in enumerate(cells)}
    outcomes.sort(key=lambda o: order[o.cell.cell_id])
    atomic_write_json(sweep.output_dir / "status.json", status_json(outcomes))
    return outcomes


def status_json(outcomes: list[CellOutcome]) -> dict[str, Any]:
    return {
        "cells": [
            {
                "cell": o.folder.name,
                "status": o.status,
                "seconds": round(o.seconds, 1),
                "error": o.error,
                "run": None if o.run_dir is None else str(o.run_dir),
            }
            for o in outcomes
        ],
        "failed": sum(o.status == "failed" for o in outcomes),
        "time": time.time(),
    }


def _outcome_line(o: CellOutcome) -> str:
    if o.status == "skipped":
        return f"skipped {o.folder.name} (finished earlier)"
    if o.status == "failed":
        return f"FAILED  {o.folder.name} after {o.seconds:.0f}s: {o.error} (log: {o.folder / LOG_FILE})"
    return f"done    {o.folder.name} in {o.seconds:.0f}s"


def _last_error(log: Path) -> str:
    """The most telling part of a failed cell's log: its last `error:` message, else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    commands = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    lines = lines[commands[-1] + 1 :] if commands else lines  # the last attempt only
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if starts:
        return " ".join(lines[starts[-1] :])[:400]  # a long message may have been wrapped
    for line in reversed(lines):
        if "Error" in line.split(":", 1)[0]:
            return line[:400]
    return lines[-1][:400] if lines else "no output"


def read_cell_record(folder: Path) -> dict[str, Any]:
    """The cell's ``cell.json`` ({} when it is missing or unreadable)."""
    path = folder / CELL_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def _write_record(folder: Path, record: dict[str, Any]) -> None:
    atomic_write_json(folder / CELL_FILE, record)


class _NoBar:
    def advance(self) -> None:
        pass

    def close(self) -> None:
        pass


class _RichBar:
    def __init__(self, total: int, name: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn(f"sweep {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
        )
        self._task = self._progress.add_task("cells", total=total)
        self._progress.start()

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()


def _progress(enabled: bool, total: int, name: str) -> _NoBar | _RichBar:
    return _RichBar(total, name) if enabled else _NoBar()
