"""``crosslm compare RUN [RUN...]``: runs side by side (headline metrics, deltas, config differences).

Runs of different tasks or configs are allowed; the comparison says what differs between
their configs so a reader knows what the deltas are deltas of. Last-round macro-F1 carries its
95% interval, and each run's macro-F1 difference from the first run is paired on the test
records with its own interval; where two runs were evaluated on different test records (or kept
no answers) that difference is not given, and the comparison says why. Writes ``comparison.md``,
``comparison.csv`` (one row per metric, one column per run) and ``curves.png`` (the per-round
curves of every run) into one folder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crosslm_secure.config import config_from_dict
from crosslm_secure.errors import CrossLMError, RunError
from crosslm_secure.eval.bootstrap import Interval
from crosslm_secure.report.baseline import cell, paired_rows
from crosslm_secure.report.intervals import LLM_KEY, MEAN_KEY, RunIntervals
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_text, csv_text

HEADLINE: tuple[tuple[str, str, bool], ...] = (
    ("slm_macro_f1_mean", "SLM macro-F1 (mean, last round)", True),
    ("slm_macro_f1_gain", "SLM macro-F1 gain over round 0", True),
    ("llm_macro_f1", "LLM macro-F1 (last round)", True),
    ("llm_perplexity", "LLM perplexity (last round)", False),
    ("slm_accuracy_mean", "SLM accuracy (mean, last round)", True),
    ("epsilon_max", "epsilon spent (max over clients)", False),
    ("synthetic_acceptance", "synthetic acceptance rate", True),
    ("seconds_total", "wall time (s)", False),
)
"""Metric key, label, and whether higher is better (the plot and a reader need the direction)."""
IGNORED_CONFIG = {"run.output_dir", "run.progress"}
"""Config fields that never explain a metric difference."""
PAIRED = (MEAN_KEY, LLM_KEY)
"""Headline macro-F1s given with intervals and with a paired difference from the first run."""
CURVES = (
    ("slm_macro_f1_mean", "SLM macro-F1 (mean)"),
    ("llm_macro_f1", "LLM macro-F1"),
    ("llm_perplexity", "LLM perplexity, % change from round 0"),
    ("epsilon_max", "epsilon spent (max)"),
)
"""Per-round panels; scores on 0-1, perplexity as each run's % change (axes that do not exaggerate)."""


@dataclass
class Comparison:
    """Runs, their headline metrics, deltas against the first run, and their config differences."""

    runs: list[str]
    metrics: dict[str, list[float | None]]
    deltas: dict[str, list[float | None]]
    config_differences: dict[str, list[str]]
    rounds: list[list[dict[str, Any]]]
    intervals: dict[str, list[Interval | None]]
    """Per :data:`PAIRED` key and run: the last round's interval (None: no kept answers)."""
    paired: dict[str, list[Interval | None]]
    """Per :data:`PAIRED` key and run: the paired difference from the first run (None: see ``unpaired``)."""
    unpaired: list[str | None]
    """Per run: why its paired differences are not given (None: they are, or it is the first run)."""


def compare_runs(run_dirs: Sequence[Path]) -> Comparison:
    """Read each run folder and line them up.

    Raises:
        RunError: fewer than one run, a folder that is not a run, or a run id given twice.
    """
    if not run_dirs:
        raise RunError("compare: give at least one run folder (runs/<id>)")
    stores = [RunStore.open(Path(d)) for d in run_dirs]
    ids = [s.run_id for s in stores]
    if len(set(ids)) != len(ids):
        raise RunError(f"compare: a run is given twice ({', '.join(ids)}); give each run once")
    rows = [s.rounds() for s in stores]
    headline = [_headline(r) for r in rows]
    metrics = {key: [h.get(key) for h in headline] for key, _, _ in HEADLINE}
    deltas = {
        key: [None if v is None or values[0] is None else v - values[0] for v in values]
        for key, values in metrics.items()
    }
    flat = [_flatten(s.config_dict()) for s in stores]
    keys = sorted(set().union(*flat) - IGNORED_CONFIG)
    differences = {
        key: [_text(f.get(key, "(unset)")) for f in flat]
        for key in keys
        if len({_text(f.get(key, "(unset)")) for f in flat}) > 1
    }
    kept = [_kept_answers(s) for s in stores]
    intervals = {key: [_last_interval(k, r, key) for k, r in zip(kept, rows, strict=True)] for key in PAIRED}
    paired: dict[str, list[Interval | None]] = {key: [None] * len(stores) for key in PAIRED}
    unpaired: list[str | None] = [None] * len(stores)
    for index in range(1, len(stores)):
        unpaired[index], found = _paired(kept[index], kept[0])
        for key in PAIRED:
            paired[key][index] = found.get(key)
        if unpaired[index] is None and not any(paired[key][index] for key in PAIRED):
            unpaired[index] = "no macro-F1 of both runs has kept per-record answers"
    return Comparison(ids, metrics, deltas, differences, rows, intervals, paired, unpaired)


def _kept_answers(store: RunStore) -> RunIntervals | str:
    """The run's kept answers, or why they cannot be read (its config does not load)."""
    try:
        return RunIntervals(store, len(config_from_dict(store.config_dict()).task.labels))
    except CrossLMError as exc:
        return f"its config does not load ({exc})"


def _last_interval(kept: RunIntervals | str, rows: list[dict[str, Any]], key: str) -> Interval | None:
    if isinstance(kept, str) or not rows or key not in rows[-1]:
        return None
    return kept.interval(rows[-1], key)


def _paired(run: RunIntervals | str, first: RunIntervals | str) -> tuple[str | None, dict[str, Interval]]:
    """(why not, {}) or (None, paired difference per key) of ``run`` minus the first run."""
    if isinstance(run, str):
        return run, {}
    if isinstance(first, str):
        return f"the first run: {first}", {}
    try:
        found = paired_rows(run, first)
    except RunError as exc:
        return str(exc).removeprefix("report: "), {}
    return None, {r.key: r.difference for r in found.rows if r.difference is not None}


def _headline(rows: list[dict[str, Any]]) -> dict[str, float]:
    if not rows:
        return {}
    first, last = rows[0], rows[-1]
    out: dict[str, float] = {}
    for key in ("slm_macro_f1_mean", "llm_macro_f1", "llm_perplexity", "slm_accuracy_mean"):
        if key in last:
            out[key] = float(last[key])
    if "slm_macro_f1_mean" in first and "slm_macro_f1_mean" in last:
        out["slm_macro_f1_gain"] = float(last["slm_macro_f1_mean"]) - float(first["slm_macro_f1_mean"])
    epsilon = _epsilon_max(last)
    if epsilon is not None:
        out["epsilon_max"] = epsilon
    generated = sum(r.get("synthetic_generated", 0) for r in rows)
    if generated:
        out["synthetic_acceptance"] = sum(r.get("synthetic_accepted", 0) for r in rows) / generated
    out["seconds_total"] = float(sum(r.get("seconds_round", 0.0) for r in rows))
    return out


def _epsilon_max(row: dict[str, Any]) -> float | None:
    values = [float(v) for k, v in row.items() if k.startswith("epsilon/")]
    return max(values) if values else None


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def _text(value: Any) -> str:
    """A config value on one line (templates hold newlines, which would break a table row)."""
    return " ".join(str(value).split())


def _number(value: float | None, delta: bool = False) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if math.isnan(value):
        return "nan"
    return f"{value:+.3f}" if delta else f"{value:.3f}"


def markdown(comparison: Comparison) -> str:
    """The comparison as markdown: headline table (value and delta vs the first run), config differences."""
    runs = comparison.runs
    lines = ["# Run comparison", "", f"First run (the reference for deltas): `{runs[0]}`", ""]
    lines += ["| metric | " + " | ".join(f"`{r}`" for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for key, label, _ in HEADLINE:
        cells = [_cell(comparison, key, i) for i in range(len(runs))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Deltas in round brackets are against the first run; square brackets: 95% percentile-bootstrap interval "
        "over the test records.",
        "",
    ]
    lines += _paired_markdown(comparison)
    lines += ["## What differs between the configs", ""]
    if not comparison.config_differences:
        lines += ["The configs are the same (apart from output folders).", ""]
    else:
        lines += ["| config field | " + " | ".join(f"`{r}`" for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
        for key, values in comparison.config_differences.items():
            lines.append(f"| `{key}` | " + " | ".join(v.replace("|", "\\|") for v in values) + " |")
        lines.append("")
    lines += ["![per-round curves](curves.png)", ""]
    return "\n".join(lines)


def _paired_markdown(comparison: Comparison) -> list[str]:
    runs = comparison.runs[1:]
    if not runs:
        return []
    lines = [f"## Paired differences from `{comparison.runs[0]}` (last round, same test records)", ""]
    lines += ["| macro-F1 | " + " | ".join(f"`{r}`" for r in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for key in PAIRED:
        label = next(label for k, label, _ in HEADLINE if k == key)
        lines.append(f"| {label} | " + " | ".join(cell(v, signed=True) for v in comparison.paired[key][1:]) + " |")
    lines.append("")
    lines += [f"- `{run}`: {why}" for run, why in zip(runs, comparison.unpaired[1:], strict=True) if why]
    lines.append("")
    return lines


def _cell(comparison: Comparison, key: str, index: int) -> str:
    value = comparison.metrics[key][index]
    found = comparison.intervals[key][index] if key in comparison.intervals else None
    text = found.text() if found is not None else _number(value)
    if index == 0 or value is None:
        return text
    return f"{text} ({_number(comparison.deltas[key][index], delta=True)})"


def csv_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """One row per metric (and per config difference): values per run, then deltas per run."""
    out: list[dict[str, Any]] = []
    for key, label, _ in HEADLINE:
        row: dict[str, Any] = {"kind": "metric", "name": key, "label": label}
        row |= {run: _number(v) for run, v in zip(comparison.runs, comparison.metrics[key], strict=True)}
        deltas = zip(comparison.runs, comparison.deltas[key], strict=True)
        row |= {f"delta {run}": _number(v, delta=True) for run, v in deltas}
        out.append(row)
    for key in PAIRED:
        row = {"kind": "paired difference", "name": key, "label": f"{key} minus the first run, paired"}
        for run, value in zip(comparison.runs, comparison.paired[key], strict=True):
            row |= {run: cell(value, signed=True)}
        out.append(row)
    for key, values in comparison.config_differences.items():
        out.append({"kind": "config", "name": key, "label": key} | dict(zip(comparison.runs, values, strict=True)))
    return out


def plot_curves(comparison: Comparison, out: Path) -> Path:
    """Per-round curves of every run, one panel per metric."""
    from matplotlib.ticker import MaxNLocator

    from crosslm_secure.report.plots import hold_percent_axis, percent_change, plt, save_figure

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.6))
    for ax, (key, title) in zip(axes, CURVES, strict=True):
        infinite = []
        changes: list[float] = []
        for index, (run, rows) in enumerate(zip(comparison.runs, comparison.rounds, strict=True)):
            values = [(r["round"], _value(r, key)) for r in rows]
            points = [(x, y) for x, y in values if y is not None and math.isfinite(y)]
            infinite += [_short(run)] if any(y is not None and math.isinf(y) for _, y in values) else []
            if points and key == "llm_perplexity":
                points = list(zip([x for x, _ in points], percent_change([y for _, y in points]), strict=True))
                changes += [y for _, y in points]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", color=f"C{index}", label=_short(run))
        if key == "llm_perplexity":
            hold_percent_axis(ax, changes)
        elif key == "epsilon_max":
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylim(0, 1)
        if infinite:  # a non-private run spends epsilon = inf: say so rather than drop it silently
            ax.text(0.02, 0.95, "inf (no DP): " + ", ".join(infinite), transform=ax.transAxes, fontsize=7, va="top")
        ax.set(title=title, xlabel="round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out)


def _value(row: dict[str, Any], key: str) -> float | None:
    if key == "epsilon_max":
        return _epsilon_max(row)
    value = row.get(key)
    return None if value is None else float(value)


def _short(run: str) -> str:
    return run if len(run) <= 32 else run[:29] + "..."


def write_comparison(comparison: Comparison, out_dir: Path) -> list[Path]:
    """Write comparison.md, comparison.csv and curves.png (each atomically) and return their paths."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"compare: cannot create {out_dir} ({exc.strerror}); pass --out to a writable folder"
        raise CrossLMError(message) from exc
    paths = [out_dir / "comparison.md", out_dir / "comparison.csv", out_dir / "curves.png"]
    atomic_write_text(paths[0], markdown(comparison))
    atomic_write_text(paths[1], csv_text(csv_rows(comparison)))
    plot_curves(comparison, paths[2])
    return paths


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """The comparison as plain JSON: per run its headline metrics and deltas, and the config differences.
    A non-finite number (a non-private run's epsilon is inf) is the string ``"inf"``, ``"-inf"`` or ``"nan"``,
    which strict JSON readers accept."""
    return {
        "runs": [
            {
                "run": run,
                "metrics": {key: _json_number(values[i]) for key, values in comparison.metrics.items()},
                "deltas": {key: _json_number(values[i]) for key, values in comparison.deltas.items()},
                "intervals": {key: _json_interval(values[i]) for key, values in comparison.intervals.items()},
                "paired_differences": {key: _json_interval(values[i]) for key, values in comparison.paired.items()},
                "unpaired_because": comparison.unpaired[i],
            }
            for i, run in enumerate(comparison.runs)
        ],
        "config_differences": comparison.config_differences,
    }


def _json_interval(value: Interval | None) -> dict[str, float] | None:
    return None if value is None else {"point": value.point, "low": value.low, "high": value.high, "n": value.n}


def _json_number(value: float | None) -> float | str | None:
    return value if value is None or math.isfinite(value) else str(value)


def rich_table(comparison: Comparison) -> Any:
    """The headline table for the terminal."""
    from rich.table import Table

    table = Table(title="Run comparison (deltas vs the first run)")
    table.add_column("metric")
    for run in comparison.runs:
        table.add_column(run, overflow="fold")
    for key, label, _ in HEADLINE:
        table.add_row(label, *[_cell(comparison, key, i) for i in range(len(comparison.runs))])
    for key in PAIRED:
        label = next(label for k, label, _ in HEADLINE if k == key).replace(" (", ", paired diff (", 1)
        table.add_row(label, *["-" if v is None else v.text(signed=True) for v in comparison.paired[key]])
    for key, values in comparison.config_differences.items():
        table.add_row(f"config {key}", *[v if len(v) <= 60 else v[:57] + "..." for v in values], style="dim")
    return table
