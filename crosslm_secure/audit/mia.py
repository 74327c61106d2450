"""Membership inference against each client SLM (LOSS, RMIA, LiRA) and the server LLM (LOSS).

Members of client k: all its private training records. Non-members: all audited population
records (see :mod:`crosslm_secure.audit.population`), never trained on by anyone, same
distribution; the sides may differ in size (the LLM attack balances its own). RMIA's and
LiRA's reference models are trained the way the client trained (same SLM settings, the
config's noise multiplier, sample rate, clipping, epochs and rounds, through ``DPTrainer``)
on random subsets of the reference pool with the client's record count (capped by the
pool). The LLM is attacked with client records it never
saw (members) against population records: it should sit at chance.

Verdict: fail when some SLM attack's AUC lower bound exceeds ``audit.mia_max_auc``, or when
its TPR lower bound at a low FPR exceeds what the run's claimed epsilon allows
(``TPR <= e^eps * FPR + delta``); the LLM attack is held to the AUC rule too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from crosslm_secure.audit.attacks import LiraAttack, LossAttack, RmiaAttack
from crosslm_secure.audit.base import AuditError, CheckResult, Table, audit_dir, eps_text, save_result
from crosslm_secure.audit.mia_llm import llm_attack
from crosslm_secure.audit.population import (
    AuditRun,
    Mechanism,
    client_mechanism,
    embed,
    feature_head,
    fresh_slm,
    head_probabilities,
    load_client_slm,
    open_run,
    retrainer,
    true_label_probability,
    uses_features,
)
from crosslm_secure.audit.roc import LOW_FPRS, AttackMetrics, attack_metrics, dp_test_point, plot_roc
from crosslm_secure.config import AuditConfig
from crosslm_secure.data.records import Example
from crosslm_secure.errors import CrossLMError
from crosslm_secure.models.batches import predict_proba

NAME = "mia"


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
    started = time.perf_counter()
    run = open_run(Path(run_dir), settings)
    cfg = run.settings
    attacks = [LossAttack(), RmiaAttack(cfg.rmia_a, cfg.rmia_gamma), LiraAttack()]
    numbers: dict[str, Any] = {}
    rows: list[list[str]] = []
    findings: list[str] = []
    figures: list[str] = []
    details: dict[str, Any] = {"clients": {}, "population": _population_note(run)}
    per_attack: dict[str, list[AttackMetrics]] = {a.name: [] for a in attacks}
    embedded: dict[tuple[str, int], torch.Tensor] = {}
    for client in tqdm(run.split.clients, desc="audit: MIA clients", disable=not progress):
        cid = client.client_id
        mechanism = client_mechanism(run, cid)
        findings += [f"{cid}: {d}; the audit re-ran the configured mechanism" for d in mechanism.disagreements]
        # Every member and every non-member: the sides need not be equal, and more non-members
        # resolve lower FPRs (TPR at 0.1% FPR needs >= 1000 of them; see ``resolvable``).
        members, non_members = list(client.train), list(run.non_members)
        try:
            target, refs, target_z, refs_z, features_path = _client_probabilities(
                run, cid, mechanism, members, non_members, embedded, progress
            )
        except CrossLMError as exc:
            if isinstance(exc, AuditError):
                raise
            raise AuditError(
                f"audit: retraining reference models for {cid} failed ({exc}); check the run's settings"
            ) from None
        n = len(members)
        curves = {}
        for attack in attacks:
            scores = attack.scores(target, refs, target_z, refs_z)
            metrics = attack_metrics(
                scores[:n], scores[n:], resamples=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.seed
            )
            per_attack[attack.name].append(metrics)
            curves[attack.name] = (scores[:n], scores[n:])
            key = attack.name.lower()
            _put_metrics(numbers, f"{cid}/slm_{key}", metrics)
            rows.append(_row(f"{cid} SLM", attack.name, metrics, mechanism.ledger_epsilon))
            findings += _verdict_rules(
                f"{cid} SLM {attack.name}",
                metrics,
                (scores[:n], scores[n:]),
                mechanism,
                cfg.mia_max_auc,
                cfg.confidence,
            )
        figure = audit_dir(run.root) / f"mia_roc_{cid}.png"
        plot_roc(curves, f"MIA on {cid} SLM (eps={eps_text(mechanism.ledger_epsilon)})", figure)
        figures.append(figure.name)
        details["clients"][cid] = {
            "members": n,
            "non_members": len(non_members),
            "reference_models": int(refs.shape[0]),
            "reference_records": _reference_size(run, client.train),
            "features_path": features_path,
            "ledger_epsilon": _json_float(mechanism.ledger_epsilon),
            "noise_multiplier": mechanism.noise_multiplier,
            "sample_rate": mechanism.sample_rate,
            "rounds": mechanism.rounds,
        }
    for attack in attacks:
        key = attack.name.lower()
        done = per_attack[attack.name]
        numbers[f"slm_{key}_auc_mean"] = float(np.mean([m.auc.value for m in done]))
        numbers[f"slm_{key}_tpr_at_1pct_fpr_mean"] = float(np.mean([m.tpr_at_fpr[0.01].value for m in done]))
        numbers[f"slm_{key}_tpr_at_0.1pct_fpr_mean"] = float(np.mean([m.tpr_at_fpr[0.001].value for m in done]))
    best = max(attacks, key=lambda a: numbers[f"slm_{a.name.lower()}_auc_mean"])
    numbers["slm_best_attack"] = best.name
    for suffix in ("auc_mean", "tpr_at_1pct_fpr_mean", "tpr_at_0.1pct_fpr_mean"):
        numbers[f"slm_{suffix}"] = numbers[f"slm_{best.name.lower()}_{suffix}"]
    numbers["slm_auc_max"] = max(m.auc.value for ms in per_attack.values() for m in ms)
    numbers["reference_models"] = cfg.reference_models
    numbers["slm_tpr_at_0.1pct_fpr_resolvable"] = all(resolvable(m.non_members, 0.001) for m in per_attack[best.name])

    llm = llm_attack(run, progress)
    if llm is not None:
        metrics, curve, adapter = llm
        _put_metrics(numbers, "llm", metrics)
        rows.append(_row("server LLM", f"LOSS ({adapter})", metrics, math.nan))
        if metrics.auc.low > cfg.mia_max_auc:
            findings.append(
                f"server LLM LOSS: AUC lower bound {metrics.auc.low:.3f} > audit.mia_max_auc {cfg.mia_max_auc} "
                "although it never saw client records (AUC rule)"
            )
        figure = audit_dir(run.root) / "mia_roc_llm.png"
        plot_roc({"LLM LOSS": curve}, f"MIA on the server LLM ({adapter})", figure)
        figures.append(figure.name)
        details["llm"] = {"adapter": adapter, "members": metrics.members, "non_members": metrics.non_members}
    numbers["seconds"] = time.perf_counter() - started
    verdict = "fail" if findings else "pass"
    summary = (
        f"Best SLM attack {best.name}: mean AUC {numbers['slm_auc_mean']:.3f}, TPR@1%FPR "
        f"{numbers['slm_tpr_at_1pct_fpr_mean']:.3f}, TPR@0.1%FPR "
        + (
            f"{numbers['slm_tpr_at_0.1pct_fpr_mean']:.3f}"
            if numbers["slm_tpr_at_0.1pct_fpr_resolvable"]
            else "not resolvable (fewer than 1000 non-members)"
        )
        + f"; {cfg.reference_models} reference models (RMIA, LiRA)"
        + (f"; server LLM AUC {numbers['llm_auc']:.3f}" if "llm_auc" in numbers else "")
        + ("; no rule fired." if verdict == "pass" else f"; {len(findings)} rule(s) fired.")
    )
    table = Table(
        title=f"Membership inference ({int(cfg.confidence * 100)}% bootstrap intervals)",
        columns=[
            "target",
            "attack",
            "members / non-members",
            "AUC",
            "TPR@1%FPR",
            "TPR@0.1%FPR",
            "bal. acc.",
            "claimed eps",
        ],
        rows=rows,
    )
    result = CheckResult(
        name=NAME,
        title="Membership inference (LOSS, RMIA, LiRA)",
        verdict=verdict,
        summary=summary,
        numbers=numbers,
        tables=[table],
        figures=figures,
        findings=findings,
        details=details,
    )
    save_result(run.root, result)
    return result


# --- SLM --------------------------------------------------------------------------------


def _reference_size(run: AuditRun, train: Sequence[Example]) -> int:
    return min(len(train), len(run.reference_pool))


def _client_probabilities(
    run: AuditRun,
    client_id: str,
    mechanism: Mechanism,
    members: list[Example],
    non_members: list[Example],
    embedded: dict[tuple[str, int], torch.Tensor],
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """P(true label) of audited records (members then non-members) and of the z samples,
    under the target and each reference model, and whether the frozen-feature path was used.

    Every model scores ``members + population`` once: the audited non-members are a subset of
    the population (the z samples), so their probabilities are picked out, not recomputed.
    ``embedded`` keeps the population and reference-pool features across clients.
    """
    cfg = run.settings
    population = run.non_members
    scored = members + population
    row = {ex.uid: i for i, ex in enumerate(population)}
    audited = np.array([*range(len(members)), *(len(members) + row[ex.uid] for ex in non_members)], dtype=np.int64)
    tokenizer, target_model, settings = load_client_slm(run, client_id)
    size = _reference_size(run, run.client(client_id).train)
    client_index = int(client_id.rsplit("-", 1)[-1])
    rng = np.random.default_rng([cfg.seed, 23, client_index])
    subsets = [
        [run.reference_pool[i] for i in rng.permutation(len(run.reference_pool))[:size]]
        for _ in range(cfg.reference_models)
    ]
    features_path = uses_features(run, settings, target_model)
    if features_path:
        # The encoder is frozen (head-only training, no LoRA), so every client on the same base
        # SLM embeds a text the same way: population and pool are embedded once per audit.
        key = (settings.model, settings.max_length)
        if key not in embedded:
            texts = [ex.text for ex in population + run.reference_pool]
            embedded[key] = embed(tokenizer, target_model, texts, settings, progress=progress)
        f_members = embed(tokenizer, target_model, [ex.text for ex in members], settings, progress=progress)
        f_scored = torch.cat([f_members, embedded[key][: len(population)]])
        f_pool = embedded[key][len(population) :]
        position = {ex.uid: i for i, ex in enumerate(run.reference_pool)}
        probabilities = [true_label_probability(head_probabilities(feature_head(target_model), f_scored), scored)]
        for k, subset in enumerate(
            tqdm(subsets, desc=f"audit: {client_id} references", disable=not progress, leave=False)
        ):
            index = torch.tensor([position[ex.uid] for ex in subset], dtype=torch.long)
            labels = torch.tensor([ex.label for ex in subset], dtype=torch.long)
            head = feature_head(target_model, fresh_seed=_seed(cfg.seed, client_index, k))
            with retrainer(
                run, client_id, mechanism, len(subset), seed=_seed(cfg.seed, client_index, k), progress=progress
            ) as trainer:
                for round_index in range(1, mechanism.rounds + 1):
                    trainer.train_private_features(head, f_pool[index], labels, round_index=round_index)
            probabilities.append(true_label_probability(head_probabilities(head, f_scored), scored))
    else:
        probabilities = [_text_probabilities(tokenizer, target_model, settings, scored, run)]
        del target_model
        for k, subset in enumerate(
            tqdm(subsets, desc=f"audit: {client_id} references", disable=not progress, leave=False)
        ):
            seed = _seed(cfg.seed, client_index, k)
            ref_tokenizer, model = fresh_slm(run, settings, seed)
            with retrainer(run, client_id, mechanism, len(subset), seed=seed, progress=progress) as trainer:
                trainer.prepare_model(model)
                for round_index in range(1, mechanism.rounds + 1):
                    trainer.train_private(model, ref_tokenizer, subset, round_index=round_index)
            probabilities.append(_text_probabilities(ref_tokenizer, model, settings, scored, run))
    table = np.array(probabilities)  # [1 + reference models, len(scored)]
    z = slice(len(members), None)
    return table[0, audited], table[1:, audited], table[0, z], table[1:, z], features_path


def _text_probabilities(
    tokenizer: Any, model: Any, settings: Any, examples: Sequence[Example], run: AuditRun
) -> np.ndarray:
    probabilities = predict_proba(
        tokenizer,
        model,
        [ex.text for ex in examples],
        max_length=settings.max_length,
        batch_size=settings.eval_batch_size,
        device=run.device,
    )
    return true_label_probability(probabilities, examples)


def _seed(seed: int, client_index: int, k: int) -> int:
    return int(np.random.SeedSequence([seed, 24, client_index, k]).generate_state(1)[0])


# --- LLM --------------------------------------------------------------------------------


# --- reporting --------------------------------------------------------------------------


def _verdict_rules(
    label: str,
    metrics: AttackMetrics,
    scores: tuple[np.ndarray, np.ndarray],
    mechanism: Mechanism,
    max_auc: float,
    confidence: float,
) -> list[str]:
    found = []
    if metrics.auc.low > max_auc:
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


def _put_metrics(numbers: dict[str, Any], prefix: str, metrics: AttackMetrics) -> None:
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
