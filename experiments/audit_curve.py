"""Issue 17's epsilon-vs-attack curve from the audit sweeps: one table per task and one plot.

Each sweep cell is a standalone run at a target epsilon (``experiments/sweeps/audit.yaml``,
``audit_icd10.yaml``) audited by ``crosslm audit dp`` (white-box one-run bound on client-1) and
``crosslm audit mia`` (LOSS, RMIA, LiRA on every client). This script reads each finished cell's
``audit/dp.json`` and ``audit/mia.json``, groups the cells by target epsilon and prints, per
task, a markdown table: the claimed epsilon, the white-box 95% lower bound (mean and range over
seeds), the method's ceiling for the same canaries and guesses, the measured canary shift
against the claimed one, and the best attack's TPR at 1% FPR (mean over clients, the best of
the three attacks per cell). It writes the tables and one figure:

    crosslm sweep experiments/sweeps/audit.yaml          # then audit_icd10.yaml
    .venv/bin/python experiments/audit_curve.py sweeps/audit sweeps/audit_icd10 \\
        --out experiments/results/audit_curve
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

ATTACKS = ("loss", "rmia", "lira")
TASK_NAMES = {"audit": "movie reviews", "audit_icd10": "ICD-10 chapters"}
"""Plot and table titles for the sweep folders of ``experiments/sweeps/audit*.yaml``."""


def cell_rows(sweep_dir: Path) -> list[dict]:
    """One record per finished, audited cell of a sweep folder (from its ``results.csv``)."""
    rows = []
    with (sweep_dir / "results.csv").open() as handle:
        for row in csv.DictReader(handle):
            run = Path(row.get("run") or "")
            dp_file, mia_file = run / "audit" / "dp.json", run / "audit" / "mia.json"
            if row.get("status") != "done" or not dp_file.is_file() or not mia_file.is_file():
                continue
            dp, mia = json.loads(dp_file.read_text()), json.loads(mia_file.read_text())
            numbers = mia["numbers"]
            tpr = {a: numbers.get(f"slm_{a}_tpr_at_1pct_fpr_mean", math.nan) for a in ATTACKS}
            auc = {a: numbers.get(f"slm_{a}_auc_mean", math.nan) for a in ATTACKS}
            best = max(ATTACKS, key=lambda a: tpr[a])
            sides = next(r[2] for r in mia["tables"][0]["rows"] if r[0].endswith("SLM"))
            rows.append(
                {
                    "epsilon": float(row["epsilon"]),
                    "seed": int(float(row["seed"])),
                    "claimed": float(dp["numbers"]["claimed_epsilon"]),
                    "bound": float(dp["numbers"]["empirical_epsilon_lower_bound"]),
                    "ceiling": float(dp["numbers"]["ceiling_epsilon"]),
                    "shift_ratio": dp["numbers"].get("shift_ratio"),
                    "dp_verdict": dp["verdict"],
                    "mia_verdict": mia["verdict"],
                    "best_attack": best,
                    "best_tpr": tpr[best],
                    "best_auc": max(auc.values()),
                    "sides": sides,
                    "macro_f1": float(row.get("slm_macro_f1_mean") or math.nan),
                }
            )
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Rows grouped by target epsilon (inf last), with means and ranges over seeds."""
    out = []
    for eps in sorted({r["epsilon"] for r in rows}):
        group = [r for r in rows if r["epsilon"] == eps]
        bounds = np.array([r["bound"] for r in group])
        ceiling = float(np.mean([r["ceiling"] for r in group]))
        shifts = [r["shift_ratio"] for r in group if isinstance(r["shift_ratio"], int | float)]
        out.append(
            {
                "epsilon": eps,
                "seeds": len(group),
                "claimed": float(np.mean([r["claimed"] for r in group])),
                "bound_mean": float(bounds.mean()),
                "bound_min": float(bounds.min()),
                "bound_max": float(bounds.max()),
                "ceiling": ceiling,
                "bound_over_ceiling": float(bounds.mean() / ceiling) if ceiling > 0 else math.nan,
                "shift_ratio": float(np.mean(shifts)) if shifts else math.nan,
                "tpr_mean": float(np.mean([r["best_tpr"] for r in group])),
                "tpr_max": float(np.max([r["best_tpr"] for r in group])),
                "auc_mean": float(np.mean([r["best_auc"] for r in group])),
                "best_attacks": ", ".join(sorted({r["best_attack"] for r in group})),
                "macro_f1": float(np.mean([r["macro_f1"] for r in group])),
                "sides": group[0]["sides"],
                "verdicts": f"dp {sum(r['dp_verdict'] == 'pass' for r in group)}/{len(group)} pass, "
                f"mia {sum(r['mia_verdict'] == 'pass' for r in group)}/{len(group)} pass",
            }
        )
    return out


def table(summary: list[dict]) -> str:
    """The markdown table of one task."""
    lines = [
        "| target eps | seeds | claimed eps | white-box bound mean [min, max] | ceiling | bound / ceiling "
        "| canary shift meas./claimed | best MIA TPR@1%FPR mean (max) | best MIA AUC | attack | SLM macro-F1 "
        "| members / non-members per client | verdicts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        eps = "inf (no DP)" if math.isinf(s["epsilon"]) else f"{s['epsilon']:g}"
        claimed = "inf" if math.isinf(s["claimed"]) else f"{s['claimed']:.2f}"
        shift = "-" if math.isnan(s["shift_ratio"]) else f"{s['shift_ratio']:.2f}"
        lines.append(
            f"| {eps} | {s['seeds']} | {claimed} | {s['bound_mean']:.2f} [{s['bound_min']:.2f}, {s['bound_max']:.2f}] "
            f"| {s['ceiling']:.2f} | {s['bound_over_ceiling']:.2f} | {shift} "
            f"| {s['tpr_mean']:.3f} ({s['tpr_max']:.3f}) | {s['auc_mean']:.3f} | {s['best_attacks']} "
            f"| {s['macro_f1']:.3f} | {s['sides']} | {s['verdicts']} |"
        )
    return "\n".join(lines)


def plot(tasks: dict[str, list[dict]], out: Path) -> None:
    """Left: claimed epsilon, white-box bound and ceiling; right: best MIA TPR at 1% FPR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    finite = [s["epsilon"] for rows in tasks.values() for s in rows if math.isfinite(s["epsilon"])]
    inf_x = max(finite) * 2.5 if finite else 16.0
    for (name, rows), marker in zip(tasks.items(), ("o", "s", "^"), strict=False):
        xs = [inf_x if math.isinf(s["epsilon"]) else s["epsilon"] for s in rows]
        lo = [s["bound_mean"] - s["bound_min"] for s in rows]
        hi = [s["bound_max"] - s["bound_mean"] for s in rows]
        left.errorbar(
            xs,
            [s["bound_mean"] for s in rows],
            yerr=[lo, hi],
            marker=marker,
            capsize=3,
            label=f"{name}: white-box 95% bound",
        )
        right.plot(xs, [s["tpr_mean"] for s in rows], marker=marker, label=f"{name}: best of LOSS/RMIA/LiRA")
    # The ceiling depends only on the claimed epsilon, the canaries and the guesses: one line for every task.
    first = next(iter(tasks.values()))
    left.plot(
        [inf_x if math.isinf(s["epsilon"]) else s["epsilon"] for s in first],
        [s["ceiling"] for s in first],
        color="grey",
        linestyle="--",
        label="method's ceiling (same canaries and guesses)",
    )
    claimed_x = sorted(set(finite))
    left.plot(claimed_x, claimed_x, color="black", linewidth=1, label="claimed epsilon")
    right.axhline(0.01, color="grey", linestyle=":", label="chance (TPR = FPR)")
    # (eps, delta)-DP caps any attack's TPR at e^eps * FPR + delta (delta 1e-5 is invisible here).
    dp_cap = [min(1.0, math.exp(e) * 0.01) for e in claimed_x]
    right.plot(claimed_x, dp_cap, color="black", linewidth=1, label="DP cap e^eps x 1% (claimed eps)")
    right.set_yscale("log")
    for axis, title in (
        (left, "Empirical epsilon (white-box one-run audit)"),
        (right, "Membership inference: TPR at 1% FPR"),
    ):
        axis.set_xscale("log")
        ticks = [*claimed_x, inf_x]
        axis.set_xticks(ticks, [f"{t:g}" for t in claimed_x] + ["inf"])
        axis.set_xlabel("target epsilon (DP-SGD, per client)")
        axis.set_title(title)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    left.set_ylabel("epsilon")
    right.set_ylabel("TPR at 1% FPR (best attack, mean over clients)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (after crosslm sweep report)")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/audit_curve"))
    args = parser.parse_args()
    tasks = {}
    for folder in args.sweeps:
        rows = cell_rows(folder)
        if not rows:
            print(f"{folder}: no finished, audited cell yet")
            continue
        name = TASK_NAMES.get(folder.name, folder.name)
        tasks[name] = summarise(rows)
        print(f"\n### {name}\n\n{table(tasks[name])}")
    if tasks:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(tasks, indent=2) + "\n")
        plot(tasks, args.out.with_suffix(".png"))
        print(f"\nwrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
