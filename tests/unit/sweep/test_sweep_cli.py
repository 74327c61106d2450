"""What the sweep commands print: a refused folder or grid is one unbroken sentence, whatever the path's length."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.config import load_config
from crosslm_secure.data.loaders import load_labelled_data
from tests.tiny_models import write_sentiment_csv


def test_a_folder_without_a_manifest_is_refused_in_one_unbroken_line(tmp_path: Path) -> None:
    folder = tmp_path.joinpath(*(["a-rather-long-folder-name-for-a-sweep"] * 6))  # over 200 characters
    folder.mkdir(parents=True)
    refused = CliRunner().invoke(app, ["sweep", "report", str(folder)])
    assert refused.exit_code == 2
    expected = f"error: sweep: {folder} holds no cells.json; pass a sweep folder such as sweeps/paper"
    assert expected in refused.output.splitlines()


def test_a_sweep_asking_more_records_of_a_label_than_the_task_has_is_refused_before_any_cell(tmp_path: Path) -> None:
    data = write_sentiment_csv(tmp_path / "notes.csv", 30)
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump({"data": {"source": "csv", "path": str(data), "text_column": "note", "label_column": "outcome"}})
    )
    sites = [{"partition.records_per_class": 2}, {"partition.records_per_class": 5}]
    spec = tmp_path / "scarce.yaml"
    spec.write_text(yaml.safe_dump({"name": "scarce", "base_config": str(base), "grid": {"sites": sites}}))
    output = tmp_path / "out"
    refused = CliRunner().invoke(app, ["sweep", str(spec), "--output", str(output)], env={"COLUMNS": "40"})
    assert refused.exit_code == 2
    config = load_config(base)
    train, _ = load_labelled_data(config.data, config.task, seed=0)
    negatives = sum(1 for ex in train if ex.label == 0)
    expected = (
        f"error: sweep {spec}: cell records_per_class5 (task 'drug review sentiment') is refused before any cell "
        f"runs: partition.records_per_class=5 for 3 clients needs 15 training records of label 'negative', but the "
        f"task has {negatives}; lower records_per_class or partition.clients"
    )
    assert negatives < 15 and expected in refused.output.splitlines()
    assert not output.exists()  # nothing written, no cell started
