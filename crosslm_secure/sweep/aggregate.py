"""Collect a sweep's cells into ``results.csv``, per-setting tables and paired gains.

Reads only what each cell's run folder holds: ``config.yaml``, ``metrics.jsonl`` (the last
round is the cell's result, round 0 its starting point), the client ledgers (epsilon
spent, verified) and, when an audit ran, ``audit/<name>.json``.

Macro-F1 leads every table: with a dominant class, accuracy rewards a constant answer.
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
from crosslm_secure.methods import CrossLM
from crosslm_secure.metrics import METRICS, TASK_METRICS
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_json, atomic_write_text, csv_text
from crosslm_secure.sweep.execute import cell_busy, cell_run_dir, read_cell_record, run_state
from crosslm_secure.sweep.intervals import Interval, format_interval, mean_interval, paired_differences
from crosslm_secure.sweep.spec import EPSILON_FIELD, METHOD_FIELD, SEED_FIELD, SweepError

MANIFEST = "cells.json"
RESULTS_CSV = "results.csv"
GAINS_CSV = "gains.csv"
TABLES_MD = "tables.md"
ROUND0_METRICS = ("slm_macro_f1_mean", "slm_accuracy_mean", "llm_macro_f1", "llm_accuracy", "llm_perplexity")
GAIN_METRICS = {key: METRICS[key].short for key in TASK_METRICS}
"""The task metrics: paired gains are reported for these, and the summary table adds their 95% CIs."""
TABLE_METRICS = {
    **GAIN_METRICS,
    **{
        key: METRICS[key].short
        for key in (
            "llm_perplexity",
            "synthetic_judge_agreement_accepted",
            "synthetic_judge_agreement_rejected",
            "synthetic_accepted",
            "synthetic_accept_threshold",
            "epsilon_spent_max",
            "mia_slm_auc_mean",
            "seconds",
        )
    },
}
CROSSLM = CrossLM.name


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
    dp = _audit_numbers(run_dir, "dp")
    row.update({f"dp_{k}": v for k, v in dp.items()})
    return row, history


def _epsilon_spent(run_dir: Path) -> dict[str, float]:
    from crosslm_secure.report.budgets import run_budgets

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
    interval = mean_interval(values)
    return interval.mean, interval.std, interval.n


def group_rows(rows: list[dict[str, Any]], keys: list[str]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by their values of ``keys``, in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(_hashable(row.get(k)) for k in keys)].append(row)
    return dict(groups)


def summary_table(results: SweepResults) -> str:
    """Markdown: one line per setting (grid values but the seed), each metric over seeds.

    Task metrics (``GAIN_METRICS``) show ``mean ± std [95% t-interval of the mean]``, the others
    ``mean ± std``.
    """
    keys = results.setting_keys
    finished = results.finished()
    metrics = [m for m in TABLE_METRICS if any(_is_number(r.get(m)) for r in finished)]
    header = [_short(k) for k in keys] + ["n"] + [TABLE_METRICS[m] for m in metrics]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    for group, rows in _sorted_groups(group_rows(finished, keys), keys):
        cells = [_show(v) for v in group] + [str(len(rows))]
        for metric in metrics:
            interval = mean_interval(r.get(metric) for r in rows)
            decimals = {"seconds": 0, "synthetic_accepted": 1, "llm_perplexity": 2}.get(metric, 3)
            if metric in GAIN_METRICS:
                cells.append(format_interval(interval, decimals=decimals, std=True))
            else:
                cells.append(format_mean_std(interval.mean, interval.std, interval.n, decimals=decimals))
        lines.append(_md_row(cells))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PairedGain:
    """``method`` minus ``baseline`` on one metric within one setting, paired by seed, in points (x100)."""

    setting: dict[str, Any]
    method: str
    baseline: str
    metric: str
    gain: Interval

    @property
    def comparison(self) -> str:
        return f"{self.method} - {self.baseline}"


def comparisons(baselines: list[str]) -> list[tuple[str, str]]:
    """Which methods are compared: CrossLM against each baseline, then each baseline against each
    earlier one (the default ``[standalone, data_free_kd]`` adds data_free_kd - standalone)."""
    pairs = [(CROSSLM, b) for b in baselines if b != CROSSLM]
    pairs += [(later, earlier) for i, later in enumerate(baselines) for earlier in baselines[:i] if later != earlier]
    return pairs


def paired_gains(results: SweepResults) -> list[PairedGain]:
    """Every comparison present in the sweep, per setting and metric: mean per-seed difference and 95% CI."""
    if METHOD_FIELD not in results.grid_keys:
        return []
    keys = [k for k in results.setting_keys if k != METHOD_FIELD]
    gains = []
    for group, rows in _sorted_groups(group_rows(results.finished(), keys), keys):
        setting = dict(zip(keys, group, strict=True))
        for method, baseline in comparisons(results.baselines):
            ours = {r["seed"]: r for r in rows if r.get("method") == method}
            theirs = {r["seed"]: r for r in rows if r.get("method") == baseline}
            if not set(ours) & set(theirs):
                continue
            for metric in GAIN_METRICS:
                diffs = paired_differences(
                    {s: r.get(metric) for s, r in ours.items()},
                    {s: r.get(metric) for s, r in theirs.items()},
                    scale=100.0,
                )
                gains.append(PairedGain(setting, method, baseline, metric, mean_interval(diffs)))
    return gains


def gains_table(results: SweepResults) -> str:
    """Markdown: each comparison's mean paired gain per task metric, in points, with its 95% t-interval."""
    gains = paired_gains(results)
    if not gains:
        return ""
    keys = [k for k in results.setting_keys if k != METHOD_FIELD]
    header = [_short(k) for k in keys] + ["comparison", "pairs"] + [f"{v} gain" for v in GAIN_METRICS.values()]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    rows: dict[tuple, dict[str, Interval]] = {}
    for g in gains:
        rows.setdefault((tuple(_hashable(g.setting[k]) for k in keys), g.comparison), {})[g.metric] = g.gain
    for (group, comparison), by_metric in rows.items():
        pairs = max(i.n for i in by_metric.values())
        cells = [_show(v) for v in group] + [comparison, str(pairs)]
        for metric in GAIN_METRICS:
            interval = by_metric[metric]
            text = format_interval(interval, decimals=1, signed=True)
            cells.append(text if interval.n in (0, pairs) else f"{text} (n={interval.n})")
        lines.append(_md_row(cells))
    return "\n".join(lines) + "\n"


def gains_rows(results: SweepResults) -> list[dict[str, Any]]:
    """``paired_gains`` as flat CSV rows, in points (x100); std and CI bounds empty below two pairs."""
    rows = []
    for g in paired_gains(results):
        interval = g.gain
        has_ci = not math.isnan(interval.half_width)
        has_std = not math.isnan(interval.std)
        rows.append(
            {
                **g.setting,
                "method": g.method,
                "baseline": g.baseline,
                "metric": g.metric,
                "pairs": interval.n,
                "gain_points": interval.mean,
                "std_points": interval.std if has_std else "",
                "ci95_low_points": interval.low if has_ci else "",
                "ci95_high_points": interval.high if has_ci else "",
            }
        )
    return rows


def format_mean_std(mean: float, std: float, n: int, *, decimals: int = 3) -> str:
    """``0.654 ± 0.012``; ``0.654`` for one value; ``-`` for none; inf as ``inf``."""
    if n == 0:
        return "-"
    if math.isinf(mean):
        return "inf"
    text = f"{mean:.{decimals}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{decimals}f}"


def write_results(output_dir: Path, results: SweepResults) -> dict[str, Path]:
    """Write ``results.csv``, ``gains.csv`` (when any comparison pairs up) and ``tables.md``
    atomically; return their paths."""
    output_dir = Path(output_dir)
    paths = {"csv": output_dir / RESULTS_CSV, "tables": output_dir / TABLES_MD}
    atomic_write_text(paths["csv"], csv_text(results.rows))
    failed = [r for r in results.rows if r["status"] != "done"]
    parts = [
        f"# Sweep {results.name}\n",
        "Mean ± sample std over seeds, and for the task metrics [the 95% t-interval of the mean]; "
        "n = finished cells.\n",
        summary_table(results),
    ]
    gains = gains_table(results)
    gains_path = output_dir / GAINS_CSV
    if gains:
        parts += [
            "\n## Paired gains (method - baseline, same seed and setting)\n",
            "Points (x100): mean of the per-seed differences [95% t-interval]; pairs = seeds both methods finished.\n",
            gains,
        ]
        atomic_write_text(gains_path, csv_text(gains_rows(results)))
        paths["gains"] = gains_path
    elif gains_path.exists():
        gains_path.unlink()  # no comparison pairs up any more: an old file would contradict tables.md
    if failed:
        parts.append("\n## Cells not finished\n")
        parts.append(
            "".join(f"- `{r['cell']}`: {r['status']}{': ' + r['error'] if r.get('error') else ''}\n" for r in failed)
        )
    atomic_write_text(paths["tables"], "\n".join(parts))
    return paths


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hashable(value: Any) -> Any:
    """A grid value as a group key; a bundle's value reads as ``max_train_records=None records_per_class=8``
    (fields in sorted order, as the sweep manifest stores them)."""
    if isinstance(value, dict):
        return " ".join(f"{k.rsplit('.', 1)[-1]}={_show(v)}" for k, v in sorted(value.items()))
    return json.dumps(value, sort_keys=True) if isinstance(value, list) else value


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
