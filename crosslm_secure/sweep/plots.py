"""Figures of a sweep: a grid field (epsilon by default) against each metric, and metrics per round.

Every point is the mean over seeds with a ±1 sample-std error bar. On an epsilon axis the
non-private cells (epsilon = inf) are drawn at the right end, labelled "inf (no DP)".
Macro-F1 comes first: the per-round figure is macro-F1 (``rounds_vs_macro_f1.png``), with
accuracy drawn separately (``rounds_vs_accuracy.png``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from crosslm_secure.metrics import TASK_METRICS, long
from crosslm_secure.report.plots import save_figure
from crosslm_secure.sweep.aggregate import SweepResults, _is_number, _short, _show, group_rows, mean_std
from crosslm_secure.sweep.spec import EPSILON_FIELD

TRADEOFF_METRICS = {key: long(key) for key in (*TASK_METRICS, "llm_perplexity", "mia_slm_auc_mean")}
ROUND_FIGURES = {
    "macro_f1": (("slm_macro_f1_mean", "llm_macro_f1"), "macro-F1"),
    "accuracy": (("slm_accuracy_mean", "llm_accuracy"), "accuracy"),
}
"""``plots/rounds_vs_<name>.png``: the SLM and LLM metric drawn per round, and what they measure."""


def write_plots(output_dir: Path, results: SweepResults) -> list[Path]:
    """Draw every figure the results support into ``<output_dir>/plots/``; return the files."""
    import matplotlib

    matplotlib.use("Agg")
    folder = Path(output_dir) / "plots"
    written = []
    finished = results.finished()
    if results.x in results.grid_keys and finished:
        name = _short(results.x)
        for metric, label in TRADEOFF_METRICS.items():
            if any(_is_number(r.get(metric)) for r in finished):
                written.append(plot_tradeoff(results, metric, label, folder / f"{name}_vs_{metric}.png"))
    if any(results.histories.get(r["cell"]) for r in finished):
        for name, (metrics, quantity) in ROUND_FIGURES.items():
            written.append(plot_rounds(results, folder / f"rounds_vs_{name}.png", metrics=metrics, quantity=quantity))
    return written


def plot_tradeoff(results: SweepResults, metric: str, label: str, out: Path) -> Path:
    """``metric`` against the x grid field, one line per setting of the other grid fields."""
    import matplotlib.pyplot as plt

    series_keys = [k for k in results.setting_keys if k != results.x]
    xs_all = sorted({float(r[results.x]) for r in results.finished() if _is_number(r.get(results.x))})
    position = _axis(xs_all, epsilon=results.x == EPSILON_FIELD)
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for series, rows in group_rows(results.finished(), series_keys).items():
        points = []
        for x_value, cell_rows in group_rows(rows, [results.x]).items():
            mean, std, n = mean_std(r.get(metric) for r in cell_rows)
            if n and _is_number(x_value[0]):
                points.append((position(float(x_value[0])), mean, 0.0 if math.isnan(std) else std))
        if not points:
            continue
        points.sort()
        x, y, err = (list(v) for v in zip(*points, strict=True))
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=_label(series_keys, series))
    _set_ticks(ax, xs_all, position, results.x)
    ax.set(xlabel=_axis_label(results.x), ylabel=label, title=f"{label} ({results.name})")
    ax.grid(alpha=0.3)
    if series_keys:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)


def plot_rounds(
    results: SweepResults,
    out: Path,
    *,
    metrics: tuple[str, str] = ROUND_FIGURES["macro_f1"][0],
    quantity: str = ROUND_FIGURES["macro_f1"][1],
) -> Path:
    """Mean SLM and LLM ``quantity`` (macro-F1 by default) per round, one line per setting
    (mean ± std over seeds)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, metric in zip(axes, metrics, strict=True):
        for series, rows in group_rows(results.finished(), results.setting_keys).items():
            per_round: dict[int, list[float]] = {}
            for row in rows:
                for entry in results.histories.get(row["cell"], []):
                    if _is_number(entry.get(metric)):
                        per_round.setdefault(int(entry["round"]), []).append(float(entry[metric]))
            if not per_round:
                continue
            rounds = sorted(per_round)
            stats = [mean_std(per_round[r]) for r in rounds]
            ax.errorbar(
                rounds,
                [s[0] for s in stats],
                yerr=[0.0 if math.isnan(s[1]) else s[1] for s in stats],
                marker="o",
                capsize=3,
                label=_label(results.setting_keys, series),
            )
        ax.set(title=TRADEOFF_METRICS[metric], xlabel="round", ylabel=quantity)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{quantity[:1].upper()}{quantity[1:]} per round ({results.name})")
    fig.tight_layout()
    return save_figure(fig, out)


def _axis(values: list[float], *, epsilon: bool):
    """Map x values to plot positions: log2 for epsilon, with inf one step past the largest finite."""
    finite = [v for v in values if math.isfinite(v)]
    if not epsilon:
        return lambda v: v
    top = max(finite) if finite else 1.0
    return lambda v: float(np.log2(top) + 1.0) if math.isinf(v) else float(np.log2(v))


def _set_ticks(ax: Any, values: list[float], position, key: str) -> None:
    if key != EPSILON_FIELD:
        return
    ax.set_xticks([position(v) for v in values])
    ax.set_xticklabels(["inf\n(no DP)" if math.isinf(v) else f"{v:g}" for v in values])


def _axis_label(key: str) -> str:
    return "target epsilon per client (log scale)" if key == EPSILON_FIELD else _short(key)


def _label(keys: list[str], values: tuple) -> str:
    if not keys:
        return "all"
    return ", ".join(
        _show(v) if k == "run.method" else f"{_short(k)}={_show(v)}" for k, v in zip(keys, values, strict=True)
    )
