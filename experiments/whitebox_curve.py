"""White-box one-run DP audit at several epsilons on a finished run's client data (direct mechanism).

The white-box audit needs only the client's DP-SGD, not the LLM part of a run: this script
opens a finished run, embeds one client's private records once with the run's SLM, and for
each target epsilon re-runs the client's mechanism through the project's own DPTrainer (noise
calibrated to that epsilon over the run's rounds and steps with the run's accountant; q, clip,
optimizer and steps as the run) with gradient canaries, several seeds each. It prints a
markdown table and writes a plot:

    .venv/bin/python experiments/whitebox_curve.py --run runs/<id> --seeds 0 1 2 \\
        --epsilons 1 2 4 8 inf --out experiments/whitebox_curve
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from crosslm_secure.audit.canaries import inclusion
from crosslm_secure.audit.population import client_mechanism, embed, feature_head, load_client_slm, open_run
from crosslm_secure.audit.whitebox import run_whitebox
from crosslm_secure.client.trainers import slm_trainer
from crosslm_secure.privacy.ledger import Ledger


def prepare(run_dir: Path) -> dict:
    """Open the run, embed client-1's private records once with the run's SLM."""
    run = open_run(run_dir, None)
    client_id = run.config.client_ids()[0]
    tokenizer, model, slm = load_client_slm(run, client_id)
    train = run.client(client_id).train
    return {
        "run": run,
        "client_id": client_id,
        "mechanism": client_mechanism(run, client_id),
        "model": model,
        "slm": slm,
        "features": embed(tokenizer, model, [ex.text for ex in train], slm, progress=False),
        "labels": torch.tensor([ex.label for ex in train], dtype=torch.long),
    }


def audit_once(context: dict, eps_text: str, seed: int, *, sample_rate: float | None = None) -> dict:
    """One white-box audit of the client's mechanism with noise for ``eps_text`` (``inf`` = no DP)."""
    run, mechanism, features = context["run"], context["mechanism"], context["features"]
    target = float(eps_text)
    canaries = min(run.settings.canaries, features.shape[1])
    count = len(features) + int(inclusion(canaries, seed).sum())
    slm_run = context["slm"].model_copy(
        update={
            "private_sample_rate": mechanism.sample_rate if sample_rate is None else sample_rate,
            "private_steps": mechanism.steps // max(1, mechanism.rounds),
        }
    )
    privacy = run.config.privacy.model_copy(
        update={
            "dp": math.isfinite(target),
            "target_epsilon": target if math.isfinite(target) else None,
            "noise_multiplier": None if math.isfinite(target) else 1.0,
            "delta": mechanism.delta,
            "epsilon_max": 1e9,
        }
    )
    head = feature_head(context["model"], fresh_seed=1000 + seed)
    with tempfile.TemporaryDirectory() as folder:
        trainer = slm_trainer(
            slm_run,
            privacy,
            ledger=Ledger(Path(folder) / "ledger.jsonl", client_id=context["client_id"]),
            run_id="curve",
            client_id=context["client_id"],
            planned_rounds=max(1, mechanism.rounds),
            num_records=count,
            device="cpu",
            seed=seed,
            progress=False,
        )
        result = run_whitebox(
            trainer,
            head.classifier,
            float(head.dropout.p),
            features,
            context["labels"],
            canaries=canaries,
            rounds=max(1, mechanism.rounds),
            seed=seed,
            guess_fraction=run.settings.whitebox_guess_fraction,
            confidence=run.settings.confidence,
        )
    n = result.numbers
    keys = (
        "claimed_epsilon",
        "empirical_epsilon_lower_bound",
        "ceiling_epsilon",
        "correct",
        "guesses",
        "canaries",
        "sample_rate",
        "measured_shift",
        "claimed_shift",
        "shift_ratio",
        "measured_epsilon",
        "mechanism_fail",
    )
    row = {"target_epsilon": eps_text, "seed": seed} | {k: n[k] for k in keys}
    row["fail"] = bool(result.fail_bound or result.fail_mechanism)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--epsilons", nargs="+", default=["1", "2", "4", "8", "inf"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("experiments/whitebox_curve"))
    args = parser.parse_args()
    context = prepare(args.run)
    rows = []
    for eps_text in args.epsilons:
        for seed in args.seeds:
            row = audit_once(context, eps_text, seed)
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(table(rows))
    plot(rows, args.out.with_suffix(".png"))


def table(rows: list[dict]) -> str:
    lines = [
        "| target eps | claimed eps | white-box lower bound (mean [min, max]) | ceiling | bound / ceiling | "
        "canary shift / claimed | audit verdicts |",
        "|---|---|---|---|---|---|---|",
    ]
    for eps in sorted(dict.fromkeys(r["target_epsilon"] for r in rows), key=float):
        group = [r for r in rows if r["target_epsilon"] == eps]
        lower = np.array([r["empirical_epsilon_lower_bound"] for r in group])
        ceiling = np.array([r["ceiling_epsilon"] for r in group])
        claimed = group[0]["claimed_epsilon"]
        shift = np.array([np.nan if r["shift_ratio"] is None else r["shift_ratio"] for r in group], dtype=float)
        verdicts = ", ".join("fail" if r["fail"] else "pass" for r in group)
        lines.append(
            f"| {eps} | {claimed:.2f} | {lower.mean():.2f} [{lower.min():.2f}, {lower.max():.2f}] | "
            f"{ceiling.mean():.2f} | {(lower / ceiling).mean():.2f} | "
            f"{'-' if np.isnan(shift).all() else f'{shift.mean():.2f}'} | {verdicts} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    from crosslm_secure.report.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    epsilons = sorted(dict.fromkeys(r["target_epsilon"] for r in rows), key=float)
    x = np.arange(len(epsilons))
    for key, label in (("claimed_epsilon", "claimed eps (inf drawn at 12)"), ("ceiling_epsilon", "method ceiling")):
        ax.plot(
            x,
            [min(12.0, rows[[r["target_epsilon"] for r in rows].index(e)][key]) for e in epsilons],
            "o--",
            label=label,
        )
    for i, eps in enumerate(epsilons):
        values = [r["empirical_epsilon_lower_bound"] for r in rows if r["target_epsilon"] == eps]
        ax.scatter(
            [i] * len(values), values, color="black", s=14, zorder=3, label="white-box lower bound" if i == 0 else None
        )
    ax.set(xticks=x, xticklabels=epsilons, xlabel="target epsilon", ylabel="epsilon", yscale="symlog")
    ax.set_title("White-box one-run audit (95% lower bound), default task")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)


if __name__ == "__main__":
    main()
