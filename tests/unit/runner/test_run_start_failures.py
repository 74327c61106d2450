"""A run that cannot start leaves nothing behind, and its folder never escapes output_dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.config import config_from_dict
from crosslm_secure.errors import DataError, RunError
from crosslm_secure.runner import run_job
from crosslm_secure.runstore import RunStore


def test_a_run_that_fails_before_round_0_removes_its_folder(tmp_path: Path) -> None:
    data = tmp_path / "ragged.csv"
    data.write_text("review,rating\n" + "".join(f"text {i},positive\n" for i in range(20)) + "a,b,c\n")
    runs = tmp_path / "runs"
    config = config_from_dict(
        {
            "run": {"name": "bad", "output_dir": str(runs), "progress": False},
            "data": {"source": "csv", "path": str(data)},
        }
    )
    logged: list[str] = []
    with pytest.raises(DataError, match="line 22 has 3 cells"):
        run_job(config, log=logged.append)
    assert runs.is_dir() and list(runs.iterdir()) == []
    assert any("failed before round 0" in line for line in logged)


def test_run_name_with_a_path_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"run:\n  output_dir: {tmp_path / 'out' / 'runs'}\n")
    result = CliRunner().invoke(app, ["run", str(config), "--set", "run.name=../../x"])
    assert result.exit_code == 2
    assert "run.name must be one folder name" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "a\\b"])
def test_the_run_store_keeps_folders_inside_output_dir(tmp_path: Path, name: str) -> None:
    with pytest.raises(RunError, match="is not one folder name"):
        RunStore.create(tmp_path / "runs", name, 0, {})
    assert not (tmp_path / "runs").exists() and sorted(tmp_path.iterdir()) == []
