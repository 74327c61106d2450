"""CrossLM's SLM gain over standalone against private records per class per site, one line per task.

Reads finished runs, pairs each ``crosslm`` run with the ``standalone`` run of the same task,
records per class and seed, and plots the final round's SLM macro-F1 gain (points) with its
paired 95% t-interval; it prints the table and writes the plot and the per-seed values:

    .venv/bin/python experiments/records_curve.py runs/curve sweeps/scarce16_weight \\
        --values experiments/results/records_curve_documented.json --out experiments/results/records_curve

A run is any folder below the given ones that holds ``config.yaml`` and ``metrics.csv``. Runs
of one task must differ only in records per class, seed and method: the script refuses two runs
for one (task, records per class, method, seed) and runs whose other settings differ. ``--values``
adds per-seed values of runs no longer on disk, in the JSON format this script writes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import yaml

from crosslm_secure.sweep.intervals import format_interval, mean_interval, paired_differences

METHODS = ("crosslm", "standalone")
METRIC = "slm_macro_f1_mean"
VARYING = {("run", "seed"), ("run", "method"), ("run", "output_dir"), ("partition", "records_per_class")}


def final_value(metrics: Path, rounds: int, key: str = METRIC) -> float | None:
    """``key`` at round ``rounds`` (the run's last) in its ``metrics.csv``; None while the run has not got there."""
    rows = [row for row in csv.DictReader(metrics.open()) if int(row["round"]) == rounds and row.get(key)]
    return float(rows[-1][key]) if rows else None


def settings(config: dict) -> dict:
    """A run's config without what a curve varies (method, seed, records per class, output folder)."""
    return {
        section: {k: v for k, v in values.items() if (section, k) not in VARYING}
        for section, values in config.items()
        if isinstance(values, dict)
    }


def collect(folders: list[Path]) -> dict:
    """``{task: {records: {method: {seed: value}}}}`` from the runs below ``folders``."""
    values: dict = {}
    seen: dict = {}
    task_settings: dict = {}
    for folder in folders:
        for metrics in sorted(folder.rglob("metrics.csv")):
            if not (metrics.parent / "config.yaml").is_file():
                continue  # not a run folder
            config = yaml.safe_load((metrics.parent / "config.yaml").read_text())
            method, seed = config["run"]["method"], int(config["run"]["seed"])
            if method not in METHODS:
                continue
            task, records = config["run"]["name"], config["partition"]["records_per_class"]
            if records is None:
                sys.exit(f"{metrics.parent} has no partition.records_per_class; give this script runs that set it")
            if task_settings.setdefault(task, (settings(config), metrics.parent))[0] != settings(config):
                sys.exit(
                    f"{metrics.parent} and {task_settings[task][1]} differ in more than method, seed and "
                    "records per class; give this script one setting's runs"
                )
            key = (task, records, method, seed)
            if key in seen:
                sys.exit(f"{metrics.parent} and {seen[key]} are both {key}; give this script one run of each")
            seen[key] = metrics.parent
            value = final_value(metrics, int(config["run"]["rounds"]))
            if value is None:
                print(f"skipped {metrics.parent}: it has not finished its last round", file=sys.stderr)
                continue
            values.setdefault(task, {}).setdefault(str(records), {}).setdefault(method, {})[str(seed)] = value
    return values


def merge(values: dict, extra: dict) -> dict:
    """``values`` with ``extra``'s entries added; a (task, records, method, seed) in both is refused."""
    for task, by_records in extra.items():
        for records, by_method in by_records.items():
            for method, by_seed in by_method.items():
                mine = values.setdefault(task, {}).setdefault(records, {}).setdefault(method, {})
                if set(mine) & set(by_seed):
                    sys.exit(
                        f"{task}, {records} records per class, {method}: seeds {sorted(set(mine) & set(by_seed))} "
                        "are both in the runs and in --values"
                    )
                mine.update(by_seed)
    return values


def gains(values: dict) -> list[dict]:
    """One row per (task, records per class): CrossLM - standalone in points over the paired seeds."""
    rows = []
    for task, by_records in sorted(values.items()):
        for records, by_method in sorted(by_records.items(), key=lambda item: int(item[0])):
            diffs = paired_differences(by_method.get("crosslm", {}), by_method.get("standalone", {}), scale=100)
            if diffs:
                interval = mean_interval(diffs)
                rows.append(
                    {
                        "task": task,
                        "records": int(records),
                        "n": interval.n,
                        "mean": interval.mean,
                        "low": interval.low,
                        "high": interval.high,
                        "ahead": sum(d > 0 for d in diffs),
                        "text": format_interval(interval, decimals=1, signed=True),
                    }
                )
    return rows


def plot(rows: list[dict], out: Path) -> Path:
    """The gain against records per class (log scale), one line per task; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    tasks = sorted({row["task"] for row in rows})
    for index, task in enumerate(tasks):
        mine = [row for row in rows if row["task"] == task]
        # Each task's points sit slightly apart so that intervals at one x do not hide each other.
        x = [row["records"] * 2 ** (0.06 * (index - (len(tasks) - 1) / 2)) for row in mine]
        y = [row["mean"] for row in mine]
        err = [
            [0 if math.isnan(r["low"]) else r["mean"] - r["low"] for r in mine],
            [0 if math.isnan(r["high"]) else r["high"] - r["mean"] for r in mine],
        ]
        line = ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=task)
        for row, at in zip(mine, x, strict=True):
            ax.annotate(
                f"n={row['n']}",
                (at, row["mean"]),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=7,
                color=line[0].get_color(),
            )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({row["records"] for row in rows}), [str(r) for r in sorted({row["records"] for row in rows})])
    ax.set_xlabel("private records per class per site")
    ax.set_ylabel("SLM macro-F1, CrossLM - standalone (points)")
    ax.set_title("CrossLM's SLM gain over standalone (paired seeds, 95% t-interval)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out.with_suffix(".png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="folders holding finished runs")
    parser.add_argument("--values", type=Path, action="append", default=[], help="per-seed values JSON to add")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.png and .json)")
    args = parser.parse_args()
    values = collect(args.runs)
    for extra in args.values:
        values = merge(values, json.loads(extra.read_text()))
    rows = gains(values)
    if not rows:
        sys.exit("no task has a crosslm and a standalone run on the same seed; give folders holding both")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    print("| task | records per class | seeds | CrossLM - standalone, points | CrossLM ahead |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['task']} | {row['records']} | {row['n']} | {row['text']} | {row['ahead']} of {row['n']} |")
    print(f"plot: {plot(rows, args.out)}")


if __name__ == "__main__":
    main()
