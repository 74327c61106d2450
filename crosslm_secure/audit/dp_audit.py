"""DP audit in one training run (Steinke, Nasr, Jagielski 2023) of a client's DP-SGD.

This module is the black-box mode (input canaries, scored on the final model). With
``audit.dp_mode`` auto (the default) a head-only SLM gets the white-box mode instead
(gradient canaries, per-step updates: :mod:`crosslm_secure.audit.whitebox_audit`).

The audit re-runs the mechanism the client used (``DPTrainer`` with the config's noise
multiplier, sample rate, delta, clipping, optimizer, epochs and rounds) on the client's
private records plus ``audit.canaries`` canaries, each included by a fair coin. With
``slm.trainable: head`` (the default) only the linear head ever sees private data, through
frozen unit-norm sentence embeddings, so the canaries are random unit vectors in that
feature space with random labels: they audit exactly the trainable mechanism. With
``trainable: full`` the canaries are random-letter texts. Each canary's score is how much
training raised the log-probability of its label (trained minus initial model); the top
and bottom scores are guessed in / out and the correct guesses give an empirical epsilon
lower bound at ``audit.confidence`` (:mod:`crosslm_secure.audit.canaries`).

Claimed epsilon: the accountant's epsilon of the audit training's own (noise, rate, steps),
next to the client's ledger epsilon. Fails when the lower bound exceeds the claimed epsilon.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crosslm_secure.audit.attacks import FLOOR
from crosslm_secure.audit.base import AuditError, CheckResult, Outcome, Table, eps_text
from crosslm_secure.audit.canaries import (
    CanaryEvidence,
    epsilon_lower_bound,
    feature_canaries,
    guess,
    inclusion,
    text_canaries,
)
from crosslm_secure.audit.pipeline import Audit, run_audit
from crosslm_secure.audit.population import (
    AuditRun,
    ClientMechanism,
    client_mechanism,
    embed,
    feature_head,
    fresh_slm,
    head_probabilities,
    load_client_slm,
    open_run,
    retrainer,
    uses_features,
)
from crosslm_secure.audit.whitebox_audit import judge_white_box, measure_white_box
from crosslm_secure.config import AuditConfig, SLMConfig
from crosslm_secure.data.records import Example
from crosslm_secure.errors import CrossLMError
from crosslm_secure.models.batches import predict_proba

NAME = "dp"


def run_dp_audit(run_dir: Path, settings: AuditConfig | None = None, *, progress: bool = True) -> CheckResult:
    """Run the one-run DP audit on one client (``audit.dp_client``, default the first) of a finished
    run; write ``audit/dp.json`` and its figure.

    Args:
        run_dir: ``runs/<run-id>``.
        settings: audit settings; None = the run's own ``config.audit``.
        progress: show progress bars.

    Raises:
        AuditError: the run folder lacks its config, the client's checkpoint or ledger.
    """
    return run_audit(DpAudit(progress=progress), run_dir, settings)


@dataclass
class DpSubject:
    """The client of an opened run whose DP-SGD is audited, and whether with white-box canaries."""

    run: AuditRun
    client_id: str
    white_box: bool


@dataclass
class DpAudit(Audit[DpSubject, CanaryEvidence]):
    """Retrain one client's mechanism with canaries, score them, bound epsilon from below."""

    progress: bool = True

    def open(self, run_dir: Path, settings: AuditConfig | None) -> DpSubject:
        run = open_run(run_dir, settings)
        return dp_subject(run, run.settings.dp_client or run.config.client_ids()[0])

    def measure(self, subject: DpSubject) -> CanaryEvidence:
        if subject.white_box:
            return measure_white_box(subject.run, subject.client_id, progress=self.progress)
        return measure_black_box(subject.run, subject.client_id, progress=self.progress)

    def judge(self, subject: DpSubject, evidence: CanaryEvidence) -> Outcome:
        if subject.white_box:
            return judge_white_box(evidence)
        return judge_black_box(subject.run.settings, evidence)


def dp_subject(run: AuditRun, client_id: str) -> DpSubject:
    """``client_id`` of ``run``, white-box where ``audit.dp_mode`` asks for it or, with ``auto``,
    where the client trains only a linear head; black-box otherwise."""
    mode = run.settings.dp_mode
    return DpSubject(run, client_id, mode == "white-box" or (mode == "auto" and head_only(run, client_id)))


def dp_outcome(run: AuditRun, client_id: str, *, progress: bool = True) -> Outcome:
    """The one-run DP audit of ``client_id`` on an opened run (a site audits itself with it).

    Raises:
        AuditError: a missing checkpoint or ledger, or retraining with canaries failed.
    """
    audit, chosen = DpAudit(progress=progress), dp_subject(run, client_id)
    return audit.judge(chosen, audit.measure(chosen))


def measure_black_box(run: AuditRun, client_id: str, *, progress: bool = True) -> CanaryEvidence:
    """Retrain ``client_id`` with input canaries and guess them from the final model's scores.

    Raises:
        AuditError: retraining with canaries failed.
    """
    started = time.perf_counter()
    cfg = run.settings
    client = run.client(client_id)
    mechanism = client_mechanism(run, client_id)
    included = inclusion(cfg.canaries, cfg.seed)
    try:
        scores, claimed, space = _train_with_canaries(run, client_id, client.train, mechanism, included, progress)
    except CrossLMError as exc:
        if isinstance(exc, AuditError):
            raise
        raise AuditError(
            f"audit: retraining {client_id} with canaries failed ({exc}); check the run's settings"
        ) from None
    guesses = max(1, min(cfg.canaries, round(cfg.canary_guess_fraction * cfg.canaries)))
    made = guess(scores, guesses)
    correct = int(((made != 0) & (made == np.where(included, 1, -1))).sum())
    lower = epsilon_lower_bound(cfg.canaries, guesses, correct, mechanism.delta, cfg.confidence)
    numbers = {
        "client": client_id,
        "empirical_epsilon_lower_bound": lower,
        "claimed_epsilon": claimed,
        "ledger_epsilon": mechanism.ledger_epsilon,
        "canaries": cfg.canaries,
        "canaries_included": int(included.sum()),
        "guesses": guesses,
        "correct": correct,
        "guess_accuracy": correct / guesses,
        "confidence": cfg.confidence,
        "delta": mechanism.delta,
        "noise_multiplier": mechanism.noise_multiplier,
        "sample_rate": mechanism.sample_rate,
        "rounds": mechanism.rounds,
        "canary_space": space,
        "mode": "black-box",
        "seconds": time.perf_counter() - started,
    }
    fail = math.isfinite(claimed) and lower > claimed
    return CanaryEvidence(numbers, scores, included, fail, mechanism.disagreements)


def judge_black_box(cfg: AuditConfig, evidence: CanaryEvidence) -> Outcome:
    """The black-box result and its score histogram."""
    numbers = evidence.numbers
    result = _black_box_result(numbers, cfg, evidence.fail_bound, evidence.disagreements)
    lower, claimed = numbers["empirical_epsilon_lower_bound"], numbers["claimed_epsilon"]
    draw = partial(_plot_scores, evidence.scores, evidence.included, lower, claimed)
    return Outcome(result, {"dp_canary_scores.png": draw})


def _black_box_result(
    numbers: dict[str, Any], cfg: AuditConfig, fail: bool, disagreements: tuple[str, ...]
) -> CheckResult:
    client_id, lower, claimed = numbers["client"], numbers["empirical_epsilon_lower_bound"], numbers["claimed_epsilon"]
    guesses, correct, ledger_epsilon = numbers["guesses"], numbers["correct"], numbers["ledger_epsilon"]
    findings = (
        [
            f"{client_id}: empirical epsilon lower bound {lower:.2f} ({cfg.confidence:.0%} confidence) exceeds "
            f"the claimed epsilon {claimed:.2f}: the training does not give the DP it accounts"
        ]
        if fail
        else []
    )
    findings += [f"{client_id}: {d}; the audit re-ran the configured mechanism" for d in disagreements]
    summary = (
        f"{client_id}: {correct}/{guesses} canary guesses right -> empirical epsilon >= {lower:.2f} "
        f"({cfg.confidence:.0%} confidence) vs claimed {eps_text(claimed)} "
        f"(ledger {eps_text(ledger_epsilon)})"
        + ("; the lower bound exceeds the claim." if fail else "; consistent with the claim.")
        + ("; but the ledger's mechanism differs from the config's." if disagreements else "")
    )
    table = Table(
        title="One-run DP audit, black-box (input canaries; Steinke, Nasr, Jagielski 2023)",
        columns=["client", "canaries (in)", "guesses", "correct", "eps lower bound", "claimed eps", "ledger eps"],
        rows=[
            [
                client_id,
                f"{numbers['canaries']} ({numbers['canaries_included']})",
                str(guesses),
                str(correct),
                f"{lower:.2f}",
                eps_text(claimed),
                eps_text(ledger_epsilon),
            ]
        ],
    )
    return CheckResult(
        name=NAME,
        title="DP audit in one training run (black-box)",
        verdict="fail" if findings else "pass",
        summary=summary,
        numbers=numbers,
        tables=[table],
        findings=findings,
        details={
            "canary_space": numbers["canary_space"],
            "note": "Each canary is included by a fair coin; the top/bottom "
            f"{cfg.canary_guess_fraction:.0%} of scores (fixed before scoring) are guessed in/out. "
            "Scores: trained minus initial log-probability of the canary's label.",
        },
    )


def head_only(run: AuditRun, client_id: str) -> bool:
    """The client trains only a linear head (frozen encoder, no LoRA): white-box canaries fit."""
    settings = run.config.slm_for(client_id)
    return settings.trainable == "head" and run.config.privacy.lora_rank == 0


def _train_with_canaries(
    run: AuditRun,
    client_id: str,
    private: list[Example],
    mechanism: ClientMechanism,
    included: np.ndarray,
    progress: bool,
) -> tuple[np.ndarray, float, str]:
    """Scores of every canary after training, the claimed epsilon, and the canary space."""
    tokenizer, target_model, settings = load_client_slm(run, client_id)
    seed = int(np.random.SeedSequence([run.settings.seed, 34]).generate_state(1)[0])
    count = len(private) + int(included.sum())
    retrain = partial(retrainer, run, client_id, mechanism, count, seed=seed, progress=progress)
    if uses_features(run, settings, target_model):
        features = embed(tokenizer, target_model, [ex.text for ex in private], settings, progress=progress)
        scores, claimed = _feature_canary_scores(
            run, target_model, features, private, mechanism, included, seed, retrain
        )
        return scores, claimed, "feature"
    del target_model
    scores, claimed = _text_canary_scores(run, settings, private, mechanism, included, seed, retrain)
    return scores, claimed, "text"


def _feature_canary_scores(
    run: AuditRun,
    target_model: Any,
    features: torch.Tensor,
    private: list[Example],
    mechanism: ClientMechanism,
    included: np.ndarray,
    seed: int,
    retrain: Callable[[], Any],
) -> tuple[np.ndarray, float]:
    """Random unit-vector canaries in the frozen encoder's feature space, trained into a fresh head."""
    cfg = run.settings
    labels_count = len(run.config.task.labels)
    vectors, canary_labels = feature_canaries(cfg.canaries, features.numpy(), labels_count, cfg.seed)
    canary_features = torch.from_numpy(vectors)
    train_x = torch.cat([features, canary_features[torch.from_numpy(included)]])
    train_y = torch.cat(
        [
            torch.tensor([ex.label for ex in private], dtype=torch.long),
            torch.from_numpy(canary_labels[included]).long(),
        ]
    )
    head = feature_head(target_model, fresh_seed=seed)
    before = _log_prob(head_probabilities(head, canary_features), canary_labels)
    with retrain() as trainer:
        for round_index in range(1, mechanism.rounds + 1):
            trainer.train_private_features(head, train_x, train_y, round_index=round_index)
        claimed = _claimed(trainer, mechanism)
    after = _log_prob(head_probabilities(head, canary_features), canary_labels)
    return after - before, claimed


def _text_canary_scores(
    run: AuditRun,
    settings: SLMConfig,
    private: list[Example],
    mechanism: ClientMechanism,
    included: np.ndarray,
    seed: int,
    retrain: Callable[[], Any],
) -> tuple[np.ndarray, float]:
    """Random-letter text canaries, trained with the records into a fresh SLM."""
    cfg = run.settings
    texts, canary_labels = text_canaries(cfg.canaries, len(run.config.task.labels), cfg.seed)
    canaries = [
        Example(uid=f"canary:{i}", text=t, label=int(y))
        for i, (t, y) in enumerate(zip(texts, canary_labels, strict=True))
    ]
    train = private + [c for c, keep in zip(canaries, included, strict=True) if keep]
    order = np.random.default_rng([cfg.seed, 35]).permutation(len(train))
    train = [train[i] for i in order]
    tokenizer, model = fresh_slm(run, settings, seed)

    def log_prob() -> np.ndarray:
        probabilities = predict_proba(
            tokenizer,
            model,
            texts,
            max_length=settings.max_length,
            batch_size=settings.eval_batch_size,
            device=run.device,
        )
        return _log_prob(probabilities, canary_labels)

    with retrain() as trainer:
        trainer.prepare_model(model)
        before = log_prob()
        for round_index in range(1, mechanism.rounds + 1):
            trainer.train_private(model, tokenizer, train, round_index=round_index)
        claimed = _claimed(trainer, mechanism)
    return log_prob() - before, claimed


def _claimed(trainer: Any, mechanism: ClientMechanism) -> float:
    if not mechanism.private:
        return math.inf
    return float(trainer.ledger.epsilon(trainer.privacy.accountant, trainer.delta))


def _log_prob(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probabilities[np.arange(len(labels)), labels], FLOOR))


def _plot_scores(scores: np.ndarray, included: np.ndarray, lower: float, claimed: float, out: Path) -> None:
    from crosslm_secure.report.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    bins = np.histogram_bin_edges(scores, bins=40)
    ax.hist(scores[included], bins=bins, alpha=0.6, label="included")
    ax.hist(scores[~included], bins=bins, alpha=0.6, label="left out")
    ax.set(
        xlabel="canary score (gain in log P(label))",
        ylabel="canaries",
        title=f"One-run DP audit: eps >= {lower:.2f} (claimed {eps_text(claimed)})",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)
