"""Collect a sweep's cells into ``results.csv``, mean ± std tables and CrossLM's paired gains.

Reads only what each cell's run folder holds: ``config.yaml``, ``metrics.jsonl`` (the last
round is the cell's result, round 0 its starting point), the client ledgers (epsilon
spent, verified) and, when an audit ran, ``audit/<name>.json``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crosslm_secure.audit.base import load_result
from crosslm_secure.errors import CrossLMError
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_json, atomic_write_text, csv_text
from crosslm_secure.sweep.execute import cell_busy, cell_run_dir, read_cell_record, run_state
from crosslm_secure.sweep.spec import EPSILON_FIELD, METHOD_FIELD, SEED_FIELD, SweepError

MANIFEST = "cells.json"
RESULTS_CSV = "results.csv"
TABLES_MD = "tables.md"
ROUND0_METRICS = ("slm_accuracy_mean", "slm_macro_f1_mean", "llm_accuracy", "llm_macro_f1", "llm_perplexity")
TABLE_METRICS = {
    "slm_accuracy_mean": "SLM acc",
    "slm_macro_f1_mean": "SLM macro-F1",
    "llm_accuracy": "LLM acc",
    "llm_macro_f1": "LLM macro-F1",
    "llm_perplexity": "LLM perplexity",
    "epsilon_spent_max": "eps spent (max client)",
    "mia_slm_auc_mean": "MIA AUC (SLM)",
    "synthetic_accepted": "synthetic accepted (last round)",
    "seconds": "cell s",
}
GAIN_METRICS = {
    "slm_accuracy_mean": "SLM acc",
    "slm_macro_f1_mean": "SLM macro-F1",
    "llm_accuracy": "LLM acc",
    "llm_macro_f1": "LLM macro-F1",
}
CROSSLM = "crosslm"


@dataclass
class SweepResults:
    """One row per cell and each cell's per-round metrics."""

    name: str
    grid_keys: list[str]
    x: str
    baselines: list[str]
    rows: list[dict[str, Any]]
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def setting_keys(self) -> list[str]:
        """Grid fields other than the seed: what a table row or a plotted point stands for."""
        return [k for k in self.grid_keys if k != SEED_FIELD]

    def finished(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "done"]


def write_manifest(output_dir: Path, name: str, grid_keys: list[str], x: str, baselines: list[str], cells) -> None:
    """Record which cell folders make up the sweep, so ``crosslm sweep report DIR`` needs only DIR."""
    atomic_write_json(
        output_dir / MANIFEST,
        {
            "name": name,
            "grid": grid_keys,
            "x": x,
            "baselines": baselines,
            "cells": [{"folder": str(folder), "values": values} for folder, values in cells],
        },
    )


def collect(output_dir: Path) -> SweepResults:
    """Read every cell listed in ``<output_dir>/cells.json``.

    Raises:
        SweepError: the folder holds no sweep manifest.
    """
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        raise SweepError(f"sweep: {output_dir} holds no {MANIFEST}; pass a sweep folder such as sweeps/paper")
    manifest = json.loads(path.read_text())
    results = SweepResults(manifest["name"], manifest["grid"], manifest["x"], manifest["baselines"], [])
    for entry in manifest["cells"]:
        folder = Path(entry["folder"])
        row, history = cell_row(folder, entry["values"])
        results.rows.append(row)
        results.histories[row["cell"]] = history
    return results


def cell_row(folder: Path, values: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One results row for a cell folder, and its per-round metrics."""
    record = read_cell_record(folder)
    run_dir = cell_run_dir(folder)
    state = run_state(run_dir)
    row: dict[str, Any] = {"cell": folder.name, **values}
    row["status"] = {"finished": "done", "partial": "partial", "empty": "failed", "none": "not started"}[state]
    if record.get("status") == "failed" and state != "finished":
        row["status"] = "failed"
    if state != "finished" and cell_busy(folder):
        row["status"] = "running"
    row["error"] = record.get("error") or ""
    row["seconds"] = record.get("seconds", math.nan)
    if run_dir is None:
        return row, []
    store = RunStore(run_dir)
    history = store.rounds()
    row["run"] = str(run_dir)
    config = store.config_dict()
    privacy = config.get("privacy", {})
    row["method"] = config["run"]["method"]
    row["seed"] = config["run"]["seed"]
    row["epsilon"] = float(privacy.get("target_epsilon") or math.inf) if privacy.get("dp", True) else math.inf
    row["clients"] = config["partition"]["clients"]
    row["rounds_completed"] = history[-1]["round"] if history else -1
    stopped = [e.get("stopped_early") for e in store.events() if e.get("event") == "run_finished"]
    row["stopped_early"] = stopped[-1] if stopped and stopped[-1] else ""
    if history:
        for key in ROUND0_METRICS:
            if key in history[0]:
                row[f"round0_{key}"] = history[0][key]
        row.update({k: v for k, v in history[-1].items() if k not in ("method",)})
    row.update(_epsilon_spent(run_dir))
    mia = _audit_numbers(run_dir, "mia")
    row.update({f"mia_{k}": v for k, v in mia.items()})
    return row, history


def _epsilon_spent(run_dir: Path) -> dict[str, float]:
    from crosslm_secure.privacy.report import run_budgets

    try:
        budgets = run_budgets(run_dir)
    except CrossLMError:
        return {}
    spent = [math.inf if not b.private else b.epsilon_spent for b in budgets]
    return {"epsilon_spent_max": max(spent), "epsilon_spent_mean": float(np.mean(spent))}


def _audit_numbers(run_dir: Path, name: str) -> dict[str, Any]:
    try:
        result = load_result(run_dir, name)
    except CrossLMError:
        return {}
    if result is None:
        return {}
    numbers = {k: v for k, v in result.numbers.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return numbers | {"verdict": result.verdict}


# -- tables ------------------------------------------------------------------------------


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (NaN for one value) and count of the finite values."""
    finite = [float(v) for v in values if v is not None and _is_number(v) and not math.isnan(float(v))]
    if not finite:
        return math.nan, math.nan, 0
    if any(math.isinf(v) for v in finite):
        return float(np.mean(finite)), math.nan, len(finite)
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return float(np.mean(finite)), std, len(finite)


def group_rows(rows: list[dict[str, Any]], keys: list[str]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by their values of ``keys``, in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(_hashable(row.get(k)) for k in keys)].append(row)
    return dict(groups)


def summary_table(results: SweepResults) -> str:
    """Markdown: one line per setting (grid values but the seed), mean ± std of each metric over seeds."""
    keys = results.setting_keys
    finished = results.finished()
    metrics = [m for m in TABLE_METRICS if any(_is_number(r.get(m)) for r in finished)]
    header = [_short(k) for k in keys] + ["n"] + [TABLE_METRICS[m] for m in metrics]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    for group, rows in _sorted_groups(group_rows(finished, keys), keys):
        cells = [_show(v) for v in group] + [str(len(rows))]
        for metric in metrics:
            decimals = {"seconds": 0, "synthetic_accepted": 1, "llm_perplexity": 2}.get(metric, 3)
            cells.append(format_mean_std(*mean_std(r.get(metric) for r in rows), decimals=decimals))
        lines.append(_md_row(cells))
    return "\n".join(lines) + "\n"


def gains_table(results: SweepResults) -> str:
    """Markdown: CrossLM minus each baseline, paired by seed within a setting, in points (x100)."""
    if METHOD_FIELD not in results.grid_keys:
        return ""
    keys = [k for k in results.setting_keys if k != METHOD_FIELD]
    by_setting = group_rows(results.finished(), keys)
    header = [_short(k) for k in keys] + ["comparison", "pairs"] + [f"{v} gain (points)" for v in GAIN_METRICS.values()]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    any_pair = False
    for group, rows in _sorted_groups(by_setting, keys):
        crosslm = {r["seed"]: r for r in rows if r.get("method") == CROSSLM}
        for baseline in results.baselines:
            other = {r["seed"]: r for r in rows if r.get("method") == baseline}
            seeds = sorted(set(crosslm) & set(other))
            if not seeds:
                continue
            any_pair = True
            cells = [_show(v) for v in group] + [f"CrossLM - {baseline}", str(len(seeds))]
            for metric in GAIN_METRICS:
                diffs = [
                    100 * (crosslm[s][metric] - other[s][metric])
                    for s in seeds
                    if _is_number(crosslm[s].get(metric)) and _is_number(other[s].get(metric))
                ]
                cells.append(format_mean_std(*mean_std(diffs), decimals=1, signed=True))
            lines.append(_md_row(cells))
    return "\n".join(lines) + "\n" if any_pair else ""


def format_mean_std(mean: float, std: float, n: int, *, decimals: int = 3, signed: bool = False) -> str:
    """``0.654 ± 0.012``; ``0.654`` for one value; ``-`` for none; inf as ``inf``."""
    if n == 0:
        return "-"
    if math.isinf(mean):
        return "inf"
    sign = "+" if signed else ""
    text = f"{mean:{sign}.{decimals}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{decimals}f}"


def write_results(output_dir: Path, results: SweepResults) -> dict[str, Path]:
    """Write ``results.csv`` and ``tables.md`` atomically; return their paths."""
    output_dir = Path(output_dir)
    csv_path = output_dir / RESULTS_CSV
    atomic_write_text(csv_path, csv_text(results.rows))
    failed = [r for r in results.rows if r["status"] != "done"]
    parts = [f"# Sweep {results.name}\n", "Mean ± sample std over seeds; n = finished cells.\n", summary_table(results)]
    gains = gains_table(results)
    if gains:
        parts += ["\n## CrossLM's gains, paired by seed\n", gains]
    if failed:
        parts.append("\n## Cells not finished\n")
        parts.append(
            "".join(f"- `{r['cell']}`: {r['status']}{': ' + r['error'] if r.get('error') else ''}\n" for r in failed)
        )
    tables_path = output_dir / TABLES_MD
    atomic_write_text(tables_path, "\n".join(parts))
    return {"csv": csv_path, "tables": tables_path}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def _sorted_groups(groups: dict[tuple, list], keys: list[str]) -> list[tuple[tuple, list]]:
    """Groups in a reading order: epsilon ascending (inf last), methods in grid order otherwise."""
    if EPSILON_FIELD not in keys:
        return list(groups.items())
    i = keys.index(EPSILON_FIELD)
    return sorted(groups.items(), key=lambda item: float(item[0][i]) if _is_number(item[0][i]) else math.inf)


def _short(key: str) -> str:
    return {EPSILON_FIELD: "epsilon", METHOD_FIELD: "method", "partition.clients": "clients"}.get(key, key)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return "inf (no DP)" if math.isinf(value) else f"{value:g}"
    return str(value)


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
