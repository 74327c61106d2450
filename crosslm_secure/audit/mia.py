"""Membership inference against each client SLM (LOSS, RMIA, LiRA) and the server LLM (LOSS).

Members of client k: all its private training records. Non-members: all audited population
records (see :mod:`crosslm_secure.audit.population`), never trained on by anyone, same
distribution; the sides may differ in size (the LLM attack balances its own). RMIA's and
LiRA's reference models are trained the way the client trained (same SLM settings, the
config's noise multiplier, sample rate, clipping, epochs and rounds, through ``DPTrainer``)
on random subsets of the reference pool with the client's record count (capped by the
pool). The LLM is attacked with client records it never
saw (members) against population records: it should sit at chance.

:func:`attack_client` attacks one client of an :class:`AuditRun`; the run-level audit runs it on
every client of a run, and a site on itself (:mod:`crosslm_secure.audit.site_checks`).

Verdict: fail when some SLM attack's AUC lower bound exceeds ``audit.mia_max_auc``, or when
its TPR lower bound at a low FPR exceeds what the run's claimed epsilon allows
(``TPR <= e^eps * FPR + delta``); the LLM attack is held to the AUC rule too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from crosslm_secure.audit.attacks import Attack, LiraAttack, LossAttack, RmiaAttack
from crosslm_secure.audit.base import AuditError, CheckResult, Figure, Outcome, Table, Verdict, eps_text
from crosslm_secure.audit.mia_llm import llm_attack
from crosslm_secure.audit.mia_scores import reference_size, score_records
from crosslm_secure.audit.pipeline import Audit, run_audit
from crosslm_secure.audit.population import AuditRun, ClientMechanism, client_mechanism, open_run
from crosslm_secure.audit.roc import LOW_FPRS, AttackMetrics, attack_metrics, dp_test_point, plot_roc
from crosslm_secure.config import AuditConfig
from crosslm_secure.errors import CrossLMError

NAME = "mia"


@dataclass
class ClientAttacks:
    """Every SLM attack on one client: the shared result of the run-level and the site audits."""

    client_id: str
    mechanism: ClientMechanism
    metrics: dict[str, AttackMetrics]
    """Attack name -> its metrics with bootstrap intervals."""
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    """Attack name -> (member scores, non-member scores)."""
    findings: list[str]
    details: dict[str, Any]


def slm_attacks(settings: AuditConfig) -> list[Attack]:
    """LOSS, RMIA and LiRA with the audit's settings."""
    return [LossAttack(), RmiaAttack(settings.rmia_a, settings.rmia_gamma), LiraAttack()]


TABLE_COLUMNS = (
    "target",
    "attack",
    "members / non-members",
    "AUC",
    "TPR@1%FPR",
    "TPR@0.1%FPR",
    "bal. acc.",
    "claimed eps",
)
"""The columns of the membership-inference table, one row per target and attack."""


def attack_client(
    run: AuditRun,
    client_id: str,
    embedded: dict[tuple[str, int], torch.Tensor] | None = None,
    *,
    progress: bool = True,
) -> ClientAttacks:
    """Attack one client's SLM: all its training records (members) against ``run.non_members``.

    Raises:
        AuditError: a missing checkpoint or ledger, or retraining the reference models failed.
    """
    cfg = run.settings
    mechanism = client_mechanism(run, client_id)
    findings = [f"{client_id}: {d}; the audit re-ran the configured mechanism" for d in mechanism.disagreements]
    # Every member and every non-member: the sides need not be equal, and more non-members
    # resolve lower FPRs (TPR at 0.1% FPR needs >= 1000 of them; see ``resolvable``).
    members = list(run.client(client_id).train)
    try:
        scored = score_records(run, client_id, mechanism, members, {} if embedded is None else embedded, progress)
    except CrossLMError as exc:
        if isinstance(exc, AuditError):
            raise
        raise AuditError(
            f"audit: retraining reference models for {client_id} failed ({exc}); check the run's settings"
        ) from None
    n = len(members)
    metrics, curves = {}, {}
    for attack in slm_attacks(cfg):
        scores = attack.scores(scored.target, scored.references, scored.target_z, scored.references_z)
        curves[attack.name] = (scores[:n], scores[n:])
        metrics[attack.name] = attack_metrics(
            scores[:n], scores[n:], resamples=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.seed
        )
        findings += _verdict_rules(
            f"{client_id} SLM {attack.name}",
            metrics[attack.name],
            curves[attack.name],
            mechanism,
            cfg.mia_max_auc,
            cfg.confidence,
        )
    details = {
        "members": n,
        "non_members": len(run.non_members),
        "reference_models": int(scored.references.shape[0]),
        "reference_records": reference_size(run, members),
        "features_path": scored.features_path,
        "ledger_epsilon": _json_float(mechanism.ledger_epsilon),
        "noise_multiplier": mechanism.noise_multiplier,
        "sample_rate": mechanism.sample_rate,
        "rounds": mechanism.rounds,
    }
    return ClientAttacks(client_id, mechanism, metrics, curves, findings, details)


def run_mia_audit(run_dir: Path, settings: AuditConfig | None = None, *, progress: bool = True) -> CheckResult:
    """Attack every client SLM and the server LLM of a finished run; write ``audit/mia.json``
    and ROC plots; return the result.

    Args:
        run_dir: ``runs/<run-id>``.
        settings: audit settings; None = the run's own ``config.audit``.
        progress: show progress bars.

    Raises:
        AuditError: the run folder lacks its config, a checkpoint, a ledger or an adapter.
    """
    return run_audit(MiaAudit(progress=progress), run_dir, settings)


@dataclass
class MiaEvidence:
    """Every client's SLM attacks and the LLM attack (None when the run has no LLM adapter to attack)."""

    clients: list[ClientAttacks]
    llm: tuple[AttackMetrics, tuple[np.ndarray, np.ndarray], str] | None


@dataclass
class MiaAudit(Audit[AuditRun, MiaEvidence]):
    """LOSS, RMIA and LiRA on each client SLM (reference models retrained the client's way), LOSS on the LLM."""

    progress: bool = True
    started: float = field(default=0.0, init=False)
    """When the audit opened the run: ``numbers["seconds"]`` counts from here."""

    def open(self, run_dir: Path, settings: AuditConfig | None) -> AuditRun:
        self.started = time.perf_counter()
        return open_run(run_dir, settings)

    def measure(self, run: AuditRun) -> MiaEvidence:
        embedded: dict[tuple[str, int], torch.Tensor] = {}
        clients = [
            attack_client(run, client.client_id, embedded, progress=self.progress)
            for client in tqdm(run.split.clients, desc="audit: MIA clients", disable=not self.progress)
        ]
        return MiaEvidence(clients, llm_attack(run, self.progress))

    def judge(self, run: AuditRun, evidence: MiaEvidence) -> Outcome:
        outcome = _run_outcome(run, evidence.clients, evidence.llm)
        outcome.result.numbers["seconds"] = time.perf_counter() - self.started
        return outcome


def _run_outcome(
    run: AuditRun, clients: list[ClientAttacks], llm: tuple[AttackMetrics, tuple[np.ndarray, np.ndarray], str] | None
) -> Outcome:
    """The run-level result: every client's attacks, their means, the LLM attack, one ROC figure per model."""
    cfg = run.settings
    numbers: dict[str, Any] = {}
    rows: list[list[str]] = []
    intervals: list[dict[str, Any]] = []  # the report's "not resolvable" marks read these, not the table's text
    figures: dict[str, Figure] = {}
    for client in clients:
        cid, eps = client.client_id, client.mechanism.ledger_epsilon
        for name, metrics in client.metrics.items():
            put_metrics(numbers, f"{cid}/slm_{name.lower()}", metrics)
            rows.append(_row(f"{cid} SLM", name, metrics, eps))
            intervals.append(metrics.row(f"{cid} SLM", name))
        figures[f"mia_roc_{cid}.png"] = partial(plot_roc, client.curves, f"MIA on {cid} SLM (eps={eps_text(eps)})")
    best = _slm_means(numbers, clients, cfg)
    findings = [finding for client in clients for finding in client.findings]
    details: dict[str, Any] = {
        "clients": {c.client_id: c.details for c in clients},
        "population": _population_note(run),
    }
    if llm is not None:
        metrics, curve, adapter = llm
        put_metrics(numbers, "llm", metrics)
        rows.append(_row("server LLM", f"LOSS ({adapter})", metrics, math.nan))
        intervals.append(metrics.row("server LLM", f"LOSS ({adapter})"))
        if metrics.exceeds(cfg.mia_max_auc):
            findings.append(
                f"server LLM LOSS: AUC lower bound {metrics.auc.low:.3f} > audit.mia_max_auc {cfg.mia_max_auc} "
                "although it never saw client records (AUC rule)"
            )
        figures["mia_roc_llm.png"] = partial(plot_roc, {"LLM LOSS": curve}, f"MIA on the server LLM ({adapter})")
        details["llm"] = {"adapter": adapter, "members": metrics.members, "non_members": metrics.non_members}
    details["auc"] = intervals
    verdict: Verdict = "fail" if findings else "pass"
    summary = _summary(numbers, best, cfg, verdict, len(findings))
    table = Table(
        title=f"Membership inference ({int(cfg.confidence * 100)}% bootstrap intervals)",
        columns=list(TABLE_COLUMNS),
        rows=rows,
    )
    result = CheckResult(
        name=NAME,
        title="Membership inference (LOSS, RMIA, LiRA)",
        verdict=verdict,
        summary=summary,
        numbers=numbers,
        tables=[table],
        findings=findings,
        details=details,
    )
    return Outcome(result, figures)


def _slm_means(numbers: dict[str, Any], clients: list[ClientAttacks], cfg: AuditConfig) -> str:
    """Put each attack's means over the clients into ``numbers``; return the best attack's name."""
    names = list(clients[0].metrics)
    for name in names:
        key = name.lower()
        done = [client.metrics[name] for client in clients]
        numbers[f"slm_{key}_auc_mean"] = float(np.mean([m.auc.value for m in done]))
        numbers[f"slm_{key}_tpr_at_1pct_fpr_mean"] = float(np.mean([m.tpr_at_fpr[0.01].value for m in done]))
        numbers[f"slm_{key}_tpr_at_0.1pct_fpr_mean"] = float(np.mean([m.tpr_at_fpr[0.001].value for m in done]))
    best = max(names, key=lambda name: numbers[f"slm_{name.lower()}_auc_mean"])
    numbers["slm_best_attack"] = best
    for suffix in ("auc_mean", "tpr_at_1pct_fpr_mean", "tpr_at_0.1pct_fpr_mean"):
        numbers[f"slm_{suffix}"] = numbers[f"slm_{best.lower()}_{suffix}"]
    numbers["slm_auc_max"] = max(m.auc.value for c in clients for m in c.metrics.values())
    numbers["reference_models"] = cfg.reference_models
    numbers["slm_tpr_at_0.1pct_fpr_resolvable"] = all(resolvable(c.metrics[best].non_members, 0.001) for c in clients)
    return best


def _summary(numbers: dict[str, Any], best: str, cfg: AuditConfig, verdict: str, fired: int) -> str:
    return (
        f"Best SLM attack {best}: mean AUC {numbers['slm_auc_mean']:.3f}, TPR@1%FPR "
        f"{numbers['slm_tpr_at_1pct_fpr_mean']:.3f}, TPR@0.1%FPR "
        + (
            f"{numbers['slm_tpr_at_0.1pct_fpr_mean']:.3f}"
            if numbers["slm_tpr_at_0.1pct_fpr_resolvable"]
            else "not resolvable (fewer than 1000 non-members)"
        )
        + f"; {cfg.reference_models} reference models (RMIA, LiRA)"
        + (f"; server LLM AUC {numbers['llm_auc']:.3f}" if "llm_auc" in numbers else "")
        + ("; no rule fired." if verdict == "pass" else f"; {fired} rule(s) fired.")
    )


# --- reporting --------------------------------------------------------------------------


def _verdict_rules(
    label: str,
    metrics: AttackMetrics,
    scores: tuple[np.ndarray, np.ndarray],
    mechanism: ClientMechanism,
    max_auc: float,
    confidence: float,
) -> list[str]:
    found = []
    if metrics.exceeds(max_auc):
        found.append(f"{label}: AUC lower bound {metrics.auc.low:.3f} > audit.mia_max_auc {max_auc} (AUC rule)")
    eps = mechanism.ledger_epsilon
    if mechanism.private and math.isfinite(eps):
        for fpr in LOW_FPRS:
            tpr_low, fpr_high = dp_test_point(*scores, fpr, confidence)
            allowed = math.exp(eps) * fpr_high + mechanism.delta
            if tpr_low > allowed:
                found.append(
                    f"{label}: TPR lower bound {tpr_low:.4f} at FPR <= {fpr:g} exceeds e^eps * FPR upper bound "
                    f"+ delta = {allowed:.4f} for the claimed eps {eps:.2f} (DP rule)"
                )
    return found


def put_metrics(numbers: dict[str, Any], prefix: str, metrics: AttackMetrics) -> None:
    numbers[f"{prefix}_auc"] = metrics.auc.value
    numbers[f"{prefix}_auc_low"] = metrics.auc.low
    numbers[f"{prefix}_auc_high"] = metrics.auc.high
    numbers[f"{prefix}_balanced_accuracy"] = metrics.balanced_accuracy.value
    for fpr, name in zip(LOW_FPRS, ("1pct", "0.1pct"), strict=True):
        numbers[f"{prefix}_tpr_at_{name}_fpr"] = metrics.tpr_at_fpr[fpr].value
        numbers[f"{prefix}_tpr_at_{name}_fpr_low"] = metrics.tpr_at_fpr[fpr].low
        numbers[f"{prefix}_tpr_at_{name}_fpr_high"] = metrics.tpr_at_fpr[fpr].high
        numbers[f"{prefix}_tpr_at_{name}_fpr_resolvable"] = resolvable(metrics.non_members, fpr)


def resolvable(non_members: int, fpr: float) -> bool:
    """TPR at ``fpr`` means something only when ``fpr * non_members >= 1``: at least one non-member
    can score above the threshold. Below that the empirical FPR can only be 0, and the "TPR at 0.1%
    FPR" of 200 non-members is really the TPR at 0% FPR."""
    return fpr * non_members >= 1 - 1e-9


def _row(target: str, attack: str, metrics: AttackMetrics, eps: float) -> list[str]:
    return [
        target,
        attack,
        f"{metrics.members} / {metrics.non_members}",
        metrics.auc.text(),
        metrics.tpr_at_fpr[0.01].text(),
        metrics.tpr_at_fpr[0.001].text() if resolvable(metrics.non_members, 0.001) else "n/a (<1000 non-members)",
        metrics.balanced_accuracy.text(),
        "-" if math.isnan(eps) else eps_text(eps),
    ]


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


def _population_note(run: AuditRun) -> str:
    return (
        f"{len(run.population)} records no client trained on (test split + records left out by "
        f"data.max_train_records), shuffled with audit.seed={run.settings.seed}: {len(run.non_members)} non-members "
        f"(also RMIA's z samples), {len(run.reference_pool)} reference-model training pool"
    )
