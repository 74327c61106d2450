"""``crosslm audit dp --mode white-box``: the white-box one-run audit of one client of a finished run.

Re-runs the client's DP-SGD (``population.retrainer``: the noise multiplier, sample rate and delta
the config prescribes, the ledger's clipping, optimizer, steps and rounds; the real ``DPTrainer``) on the client's
private sentence features plus gradient canaries (:mod:`crosslm_secure.audit.whitebox`), and
writes ``audit/dp.json`` in the same shape as the black-box audit, with ``mode: white-box``,
the paper's ceiling for the same canaries and guesses, and the mechanism check.

Needs a head-only SLM (frozen encoder, no LoRA): there the trainable parameters are the
linear head, whose parameter space the canaries live in. Other SLMs need ``--mode black-box``.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from crosslm_secure.audit.base import AuditError, CheckResult, Outcome, Table, eps_text
from crosslm_secure.audit.canaries import CanaryEvidence, inclusion
from crosslm_secure.audit.population import (
    AuditRun,
    client_mechanism,
    embed,
    feature_head,
    load_client_slm,
    retrainer,
    uses_features,
)
from crosslm_secure.audit.whitebox import run_whitebox
from crosslm_secure.errors import CrossLMError

NAME = "dp"


def measure_white_box(run: AuditRun, client_id: str, *, progress: bool = True) -> CanaryEvidence:
    """Retrain ``client_id``'s linear head with gradient canaries and score them from its per-step updates.

    Raises:
        AuditError: a missing checkpoint or ledger, an SLM whose encoder trains, or a failed retraining.
    """
    started = time.perf_counter()
    cfg = run.settings
    client = run.client(client_id)
    mechanism = client_mechanism(run, client_id)
    tokenizer, model, slm = load_client_slm(run, client_id)
    if not uses_features(run, slm, model):
        raise AuditError(
            "audit: the white-box DP audit places canaries in a linear head's parameters, but this SLM's "
            "encoder trains too; set audit.dp_mode=black-box (`crosslm audit dp --mode black-box`)"
        )
    features = embed(tokenizer, model, [ex.text for ex in client.train], slm, progress=progress)
    labels = torch.tensor([ex.label for ex in client.train], dtype=torch.long)
    canaries = min(cfg.canaries, features.shape[1])
    included = inclusion(canaries, cfg.seed)
    seed = int(np.random.SeedSequence([cfg.seed, 44]).generate_state(1)[0])
    head = feature_head(model, fresh_seed=seed)
    try:
        with retrainer(run, client_id, mechanism, len(features) + int(included.sum()), seed=seed, progress=False) as t:
            result = run_whitebox(
                t,
                head.classifier,
                float(head.dropout.p),
                features,
                labels,
                canaries=canaries,
                rounds=max(1, mechanism.rounds),
                seed=cfg.seed,
                guess_fraction=cfg.whitebox_guess_fraction,
                confidence=cfg.confidence,
            )
    except CrossLMError as exc:
        if isinstance(exc, AuditError):
            raise
        raise AuditError(
            f"audit: retraining {client_id} with canaries failed ({exc}); check the run's settings"
        ) from None
    numbers = result.numbers | {
        "client": client_id,
        "ledger_epsilon": mechanism.ledger_epsilon,
        "rounds": mechanism.rounds,
        "canary_space": "gradient",
        "seconds": time.perf_counter() - started,
    }
    return CanaryEvidence(
        numbers, result.scores, result.included, result.fail_bound, mechanism.disagreements, result.fail_mechanism
    )


def judge_white_box(evidence: CanaryEvidence) -> Outcome:
    """The white-box result (bound, ceiling, mechanism check) and its score histogram."""
    n = evidence.numbers
    checked = _result(n, evidence.fail_bound, evidence.fail_mechanism, disagreements=evidence.disagreements)
    lower, claimed, ceiling = n["empirical_epsilon_lower_bound"], n["claimed_epsilon"], n["ceiling_epsilon"]
    draw = partial(_plot, evidence.scores, evidence.included, lower, claimed, ceiling)
    return Outcome(checked, {"dp_canary_scores.png": draw})


def _result(n: dict, fail_bound: bool, fail_mechanism: bool, *, disagreements: tuple[str, ...] = ()) -> CheckResult:
    client, lower, claimed, ceiling = (
        n["client"],
        n["empirical_epsilon_lower_bound"],
        n["claimed_epsilon"],
        n["ceiling_epsilon"],
    )
    findings = _findings(n, fail_bound, fail_mechanism, disagreements)
    summary = (
        f"{client} (white-box, gradient canaries): {n['correct']}/{n['guesses']} guesses right -> epsilon >= "
        f"{lower:.2f} ({n['confidence']:.0%}) vs claimed {eps_text(claimed)}; an ideal mechanism at the claim "
        f"would typically certify {ceiling:.2f} with {n['canaries']} canaries and {n['guesses']} guesses (not a "
        "maximum; only a bound above the claim fails)"
        + (
            f". Measured canary shift {n['shift_ratio']:.2f}x the claimed mechanism's"
            if n["shift_ratio"] is not None
            else ""
        )
        + ("; FAIL." if findings else "; consistent with the claim.")
    )
    table = _table(n)
    return CheckResult(
        name=NAME,
        title="DP audit in one training run (white-box)",
        verdict="fail" if findings else "pass",
        summary=summary,
        numbers=n,
        tables=[table],
        findings=findings,
        details={
            "mode": "white-box",
            "canary_space": "gradient",
            "note": "Canaries are per-example gradients c (1_C outer u_i) in the linear head (u_i orthonormal), "
            "clipped and noised by the client's own DP-SGD code; each is included by a fair coin. Score: "
            "per-step updates projected on the canary direction, standardised, summed as the claimed "
            "mechanism's likelihood ratio. Ceiling: the paper's bound at the expected number of correct guesses "
            "of an idealised mechanism at the claimed epsilon. Fails when the bound exceeds the claim, or when "
            "included canaries move the model significantly more than the recorded noise and rate allow.",
        },
    )


def _table(n: dict) -> Table:
    client, lower, claimed = n["client"], n["empirical_epsilon_lower_bound"], n["claimed_epsilon"]
    ceiling = n["ceiling_epsilon"]
    low, high = n["measured_shift_ci95"]
    return Table(
        title="One-run DP audit, white-box (gradient canaries; Steinke, Nasr, Jagielski 2023)",
        columns=[
            "client",
            "canaries (in)",
            "guesses",
            "correct",
            "eps lower bound",
            "ceiling",
            "claimed eps",
            "canary shift: measured [95% CI] / claimed",
        ],
        rows=[
            [
                client,
                f"{n['canaries']} ({n['canaries_included']})",
                str(n["guesses"]),
                str(n["correct"]),
                f"{lower:.2f}",
                f"{ceiling:.2f}",
                eps_text(claimed),
                f"{n['measured_shift']:.3f} [{low:.3f}, {high:.3f}] / {n['claimed_shift']:.3f}",
            ]
        ],
    )


def _findings(n: dict, fail_bound: bool, fail_mechanism: bool, disagreements: tuple[str, ...]) -> list[str]:
    client, lower, claimed = n["client"], n["empirical_epsilon_lower_bound"], n["claimed_epsilon"]
    findings = []
    if fail_bound:
        findings.append(
            f"{client}: empirical epsilon lower bound {lower:.2f} ({n['confidence']:.0%} confidence) exceeds the "
            f"claimed epsilon {claimed:.2f}: the training does not give the DP it accounts"
        )
    if fail_mechanism:
        findings.append(
            f"{client}: an included canary moved the model {n['shift_ratio']:.2f}x as far as the ledger's noise "
            f"multiplier {n['noise_multiplier']:.3g} and sample rate {n['sample_rate']:.3g} allow (measured shift "
            f"{n['measured_shift']:.3f} vs {n['claimed_shift']:.3f}, p < {n['mechanism_alpha']:g}): the training adds "
            "less noise, samples more often or clips less than it records"
        )
    findings += [f"{client}: {problem}" for problem in disagreements]
    return findings


def _plot(scores: np.ndarray, included: np.ndarray, lower: float, claimed: float, ceiling: float, out: Path) -> None:
    from crosslm_secure.report.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    finite = scores[np.isfinite(scores)]
    bins = np.histogram_bin_edges(finite if len(finite) else [0.0, 1.0], bins=40)
    ax.hist(scores[included & np.isfinite(scores)], bins=bins, alpha=0.6, label="included")
    ax.hist(scores[~included & np.isfinite(scores)], bins=bins, alpha=0.6, label="left out")
    title = f"White-box audit: eps >= {lower:.2f} (ceiling {ceiling:.2f}, claimed {eps_text(claimed)})"
    ax.set(xlabel="canary score (summed standardised update)", ylabel="canaries", title=title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)
