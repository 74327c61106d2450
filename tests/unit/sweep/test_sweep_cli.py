"""What the sweep commands print: a refused folder is one unbroken sentence, whatever the path's length."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from crosslm_secure.cli import app


def test_a_folder_without_a_manifest_is_refused_in_one_unbroken_line(tmp_path: Path) -> None:
    folder = tmp_path.joinpath(*(["a-rather-long-folder-name-for-a-sweep"] * 6))  # over 200 characters
    folder.mkdir(parents=True)
    refused = CliRunner().invoke(app, ["sweep", "report", str(folder)])
    assert refused.exit_code == 2
    expected = f"error: sweep: {folder} holds no cells.json; pass a sweep folder such as sweeps/paper"
    assert expected in refused.output.splitlines()
