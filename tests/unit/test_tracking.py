"""``crosslm runs mlflow``: a run's config, metrics per round and reports in a local MLflow store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.errors import RunError
from crosslm_secure.runstore import RunStore
from crosslm_secure.tracking import RUN_ID_TAG, log_run


def _run(root: Path) -> Path:
    config = {
        "run": {"name": "movies", "method": "crosslm", "seed": 3},
        "llm": {"model": "embedded"},
        "privacy": {"target_epsilon": 8.0, "delta": 1e-5},
        "task": {"labels": ["negative", "positive"]},
    }
    store = RunStore.create(root, "movies", 3, config)
    store.record_round({"round": 0, "slm_macro_f1_mean": 0.54, "llm_macro_f1": 0.335, "note": "text"})
    store.record_round({"round": 1, "slm_macro_f1_mean": 0.71, "llm_macro_f1": 0.39, "epsilon/client-1": 5.1})
    store.record_round({"round": 2, "slm_macro_f1_mean": 0.73, "llm_macro_f1": 0.83, "epsilon/client-1": 7.99})
    (store.root / "summary.md").write_text("# movies\n")
    return store.root


def test_a_run_lands_in_a_local_store_with_config_metrics_per_round_and_reports(tmp_path: Path) -> None:
    run = _run(tmp_path / "runs")
    done = CliRunner(env={"COLUMNS": "40"}).invoke(app, ["runs", "mlflow", str(run), "--json"])
    assert done.exit_code == 0, done.output
    logged = json.loads(done.stdout)
    assert logged["tracking_uri"] == (tmp_path / "runs" / "mlruns").as_uri() and logged["experiment"] == "movies"
    client = MlflowClient(logged["tracking_uri"])
    mlflow_run = client.get_run(logged["mlflow_run_id"])
    assert mlflow_run.info.status == "FINISHED" and mlflow_run.info.run_name == run.name
    assert mlflow_run.data.tags[RUN_ID_TAG] == RunStore(run).run_id
    params = mlflow_run.data.params
    assert params["privacy.target_epsilon"] == "8.0" and params["task.labels"] == '["negative", "positive"]'
    assert params["run.seed"] == "3"
    history = client.get_metric_history(logged["mlflow_run_id"], "llm_macro_f1")
    assert [(m.step, m.value) for m in history] == [(0, 0.335), (1, 0.39), (2, 0.83)]
    epsilon = client.get_metric_history(logged["mlflow_run_id"], "epsilon/client-1")
    assert [m.step for m in epsilon] == [1, 2]
    assert "note" not in mlflow_run.data.metrics  # text columns are not metrics
    assert sorted(a.path for a in client.list_artifacts(logged["mlflow_run_id"])) == ["config.yaml", "summary.md"]


def test_logging_a_run_twice_is_refused_unless_replaced(tmp_path: Path) -> None:
    run = _run(tmp_path)
    uri = (tmp_path / "store").as_uri()
    first = log_run(run, tracking_uri=uri, experiment="e")
    with pytest.raises(RunError, match=r"already logged in experiment 'e' .* pass --replace to log it again"):
        log_run(run, tracking_uri=uri, experiment="e")
    again = log_run(run, tracking_uri=uri, experiment="e", replace=True)
    client = MlflowClient(uri)
    live = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert [r.info.run_id for r in live] == [again.mlflow_run_id] != [first.mlflow_run_id]


def test_without_mlflow_installed_the_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # as if the extra were not installed
    done = CliRunner(env={"COLUMNS": "40"}).invoke(app, ["runs", "mlflow", str(run)])
    assert done.exit_code == 2
    assert "MLflow is not installed; pip install '.[mlflow]'" in " ".join(done.output.split())
