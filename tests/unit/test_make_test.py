"""`make test` sets up what the tests need on a bare machine, Chromium included; CI only calls it.

The real Makefile runs with fake ``apt-get``, ``python`` and ``make`` that log their calls, on a
PATH that holds nothing else, so the test sees what would be installed and run, in order.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")


def _fake(folder: Path, name: str, log: Path, exit_code: int = 0) -> None:
    tool = folder / name
    tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit {exit_code}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)


def _make_test(tmp_path: Path, *, chromium: bool, apt_exit: int = 0) -> tuple[int, list[str]]:
    """``make test`` with a set-up .venv (a stamp and a fake python) and a PATH of fakes only."""
    assert MAKE, "make is needed to test the Makefile"
    tools, venv, log = tmp_path / "tools", tmp_path / "venv", tmp_path / "calls.log"
    tools.mkdir()
    venv.mkdir()
    log.touch()
    (venv / ".installed").touch()
    _fake(tools, "apt-get", log, apt_exit)
    _fake(venv, "python", log)
    if chromium:
        _fake(tools, "chromium", log)
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}} | {"PATH": str(tools)}
    done = subprocess.run(
        [MAKE, "-s", "test", f"BIN={venv}", f"STAMP={venv / '.installed'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, log.read_text().splitlines()


def test_make_test_installs_chromium_when_missing_then_runs_the_tests(tmp_path: Path) -> None:
    code, calls = _make_test(tmp_path, chromium=False)
    assert code == 0
    assert calls == ["apt-get update", "apt-get install -y chromium", "python -m pytest -q -n 2 --dist worksteal"]


def test_make_test_leaves_an_installed_chromium_alone(tmp_path: Path) -> None:
    code, calls = _make_test(tmp_path, chromium=True)
    assert code == 0
    assert calls == ["python -m pytest -q -n 2 --dist worksteal"]


def test_make_test_stops_when_chromium_cannot_be_installed(tmp_path: Path) -> None:
    code, calls = _make_test(tmp_path, chromium=False, apt_exit=100)
    assert code != 0
    assert calls == ["apt-get update"]


def test_ci_calls_make_test_and_nothing_else(tmp_path: Path) -> None:
    tools, log = tmp_path / "tools", tmp_path / "calls.log"
    tools.mkdir()
    log.touch()
    for name in ("make", "apt-get"):
        _fake(tools, name, log)
    (tools / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    done = subprocess.run(
        ["/bin/bash", str(REPO / ".ci" / "run")],
        env={"PATH": str(tools)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == ["make test"]
