"""Log a finished run to MLflow: its resolved config, its metrics per round, its reports.

An optional extra (``pip install '.[mlflow]'``, the ``mlflow-skinny`` client). The run folder
stays the record; MLflow gets a copy a researcher can browse and compare beside other
experiments. The default store is a local folder (``mlruns/`` beside the runs), never a server:
nothing leaves the machine unless ``--tracking-uri`` names one.

What is logged, and only this: ``config.yaml`` flattened to parameters (``llm.model``,
``privacy.target_epsilon``, ...), every numeric column of ``metrics.jsonl`` as a metric with the
round as its step, and the server-side reports (``summary.md``, ``report.html``,
``audit/report.html`` when audited, ``config.yaml``) as artefacts. The run folder holds no
client record, and nothing under ``clients/`` is logged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crosslm_secure.errors import RunError
from crosslm_secure.runstore import RunStore

INSTALL = "pip install '.[mlflow]' (the mlflow-skinny client)"
RUN_ID_TAG = "crosslm.run_id"
ARTEFACTS = ("config.yaml", "summary.md", "report.html", "audit/report.html", "audit/report.md")
MAX_PARAM = 500
"""Parameter values are cut to this many characters (MLflow refuses long ones)."""


@dataclass(frozen=True)
class Logged:
    """Where a run went: the MLflow store, experiment and run id, and what was logged."""

    tracking_uri: str
    experiment: str
    mlflow_run_id: str
    params: int
    metrics: int
    artefacts: list[str]

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def default_tracking_uri(run_dir: Path) -> str:
    """A local store, ``mlruns/`` beside the run folder."""
    return (run_dir.resolve().parent / "mlruns").as_uri()


def log_run(
    run_dir: Path, *, tracking_uri: str | None = None, experiment: str | None = None, replace: bool = False
) -> Logged:
    """Log ``run_dir`` as one MLflow run named after the run's id; return where it went.

    Args:
        run_dir: ``runs/<run-id>``.
        tracking_uri: MLflow store; None = :func:`default_tracking_uri`.
        experiment: MLflow experiment; None = the run's ``run.name``.
        replace: delete an earlier MLflow run of this run id first (else it is refused).

    Raises:
        RunError: MLflow is not installed, the run folder is not a run, or the run is already logged.
    """
    client, mlflow_entities = _client(tracking_uri or default_tracking_uri(run_dir))
    store = RunStore.open(run_dir)
    config = store.config_dict()
    name = experiment or str(config.get("run", {}).get("name") or "crosslm")
    experiment_id = _experiment_id(client, name)
    earlier = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{store.run_id}'")
    if earlier and not replace:
        raise RunError(
            f"mlflow: run {store.run_id} is already logged in experiment {name!r} (MLflow run "
            f"{earlier[0].info.run_id}); pass --replace to log it again"
        )
    for old in earlier:
        client.delete_run(old.info.run_id)
    params = _params(config)
    metrics = _metrics(store.rounds(), mlflow_entities)
    run = client.create_run(experiment_id, run_name=store.run_id, tags={RUN_ID_TAG: store.run_id})
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, params=[mlflow_entities.Param(k, v) for k, v in params.items()])
        for start in range(0, len(metrics), 900):  # MLflow takes at most 1000 metrics a batch
            client.log_batch(run_id, metrics=metrics[start : start + 900])
        artefacts = [name for name in ARTEFACTS if (store.root / name).is_file()]
        for artefact in artefacts:
            folder = str(Path(artefact).parent) if "/" in artefact else None
            client.log_artifact(run_id, str(store.root / artefact), artifact_path=folder)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return Logged(client.tracking_uri, name, run_id, len(params), len(metrics), artefacts)


def _client(tracking_uri: str) -> tuple[Any, Any]:
    try:
        import mlflow.entities as entities
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise RunError(f"mlflow: MLflow is not installed; {INSTALL}") from None
    if tracking_uri.startswith("file:"):
        # MLflow 3 keeps the plain-folder store in maintenance and asks for an opt-in.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri), entities


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"privacy.target_epsilon": "8.0", ...}``: every leaf of the config, lists as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:MAX_PARAM]
    return out


def _metrics(rows: list[dict[str, Any]], entities: Any) -> list[Any]:
    """One metric per numeric column per round, the round as its step; NaN and text left out."""
    out = []
    for row in rows:
        step = int(row["round"])
        for key, value in row.items():
            if key == "round" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                out.append(entities.Metric(key, float(value), 0, step))
    return out
