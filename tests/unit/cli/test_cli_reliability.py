"""The CLI as a user meets it: quick commands import no ML stack, and an error is one unbroken line at any width."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "opacus", "transformers", "tenseal", "flwr", "peft", "datasets", "matplotlib")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}}
    return env | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} | extra


def _heavy_modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint('HEAVY:', *(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1]
    assert last.startswith("HEAVY:"), done.stdout
    return last.split()[1:]


def test_importing_the_cli_imports_no_ml_library() -> None:
    assert _heavy_modules_after("import crosslm_secure.cli") == []


QUICK_COMMANDS = [
    ["--help"],
    ["config"],
    ["config", "--check", "experiments/configs/default.yaml"],
    ["budget", "--help"],
    ["keys", "--help"],
    ["audit", "--help"],
    ["sweep", "--help"],
]


def test_quick_commands_answer_without_importing_an_ml_library() -> None:
    # One interpreter runs them all in turn (cheaper than one each); any heavy import would stay in sys.modules.
    code = (
        "from crosslm_secure.cli import app\n"
        f"for argv in {QUICK_COMMANDS!r}:\n"
        "    try:\n        app(argv)\n"
        "    except SystemExit as exit:\n        assert exit.code in (0, None), (argv, exit.code)"
    )
    assert _heavy_modules_after(code) == []


def test_a_run_with_a_bad_config_is_refused_before_any_ml_library_loads() -> None:
    code = (
        "from crosslm_secure.cli import app\n"
        "for argv in (['run'], ['run', 'experiments/configs/quick.yaml', '--set', 'run.name=[x']):\n"
        "    try:\n        app(argv)\n"
        "    except SystemExit as exit:\n        assert exit.code == 2, (argv, exit.code)"
    )
    assert _heavy_modules_after(code) == []


def test_budget_show_reads_a_run_without_importing_an_ml_library(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "clients" / "client-1").mkdir(parents=True)
    (run / "config.yaml").write_text("run: {name: t}\n")
    code = (
        "from crosslm_secure.cli import app\n"
        f"try:\n    app(['budget', 'show', '--run', {str(run)!r}, '--json'])\nexcept SystemExit:\n    pass"
    )
    assert _heavy_modules_after(code) == []


def test_runs_list_and_show_read_runs_without_importing_an_ml_library(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "audit").mkdir(parents=True)
    (run / "config.yaml").write_text("run: {name: t, method: crosslm}\n")
    (run / "metrics.jsonl").write_text('{"round": 0, "slm_macro_f1_mean": 0.5}\n')
    (run / "audit" / "ledger.json").write_text('{"name": "ledger", "title": "L", "verdict": "pass", "summary": "ok"}')
    code = (
        "from crosslm_secure.cli import app\n"
        f"for argv in (['runs', 'list', {str(tmp_path)!r}], ['runs', 'show', {str(run)!r}, '--json']):\n"
        "    try:\n        app(argv)\n"
        "    except SystemExit as exit:\n        assert exit.code in (0, None), (argv, exit.code)"
    )
    assert _heavy_modules_after(code) == []


def _cli(args: list[str], columns: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crosslm_secure.cli", *args],
        env=_env(COLUMNS=str(columns)),
        capture_output=True,
        text=True,
        cwd=REPO,
    )


@pytest.mark.parametrize("columns", [40, 250])
def test_errors_are_one_unbroken_line_at_any_width(tmp_path: Path, columns: int) -> None:
    deep = tmp_path.joinpath(*(["a-folder-name-long-enough-to-wrap"] * 5), "config [v2].yaml")
    deep.parent.mkdir(parents=True)
    missing = _cli(["config", "--check", str(deep)], columns)
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        f"error: config: file {deep} not found; pass a YAML file such as experiments/configs/default.yaml"
    ]
    bad_set = _cli(["run", "experiments/configs/quick.yaml", "--set", "run.name=[x"], columns)
    assert bad_set.returncode == 2
    assert bad_set.stderr.splitlines() == [
        "error: config: override 'run.name=[x': the value is not valid YAML; quote it, e.g. run.name='\"text\"'"
    ]


@pytest.mark.parametrize("columns", [40, 250])
def test_sweep_report_refusal_keeps_its_path_whole(tmp_path: Path, columns: int) -> None:
    folder = tmp_path.joinpath(*(["a-rather-long-folder-name-for-a-sweep"] * 4))
    folder.mkdir(parents=True)
    refused = _cli(["sweep", "report", str(folder)], columns)
    assert refused.returncode == 2
    expected = f"error: sweep: {folder} holds no cells.json; pass a sweep folder such as sweeps/paper"
    assert expected in refused.stderr.splitlines()
