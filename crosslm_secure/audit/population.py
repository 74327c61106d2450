"""What the privacy attacks read from a finished run: its config, its data split (recomputed
exactly as the runner made it), the client SLMs, the ledgers, and the audit population.

Population = every record of the task that no client trained on: the whole test split
(the clients' held-out sets and the LLM evaluator's set, which are only ever evaluated on)
plus any training record left out by ``data.max_train_records``. It is the same
distribution as the clients' private records (same source, split by a seeded stratified
draw). Shuffled with ``audit.seed`` and cut to ``audit.population_records``, it is halved:

* ``non_members``: the attacks' non-members (and RMIA's population samples z);
* ``reference_pool``: what reference models train on (disjoint from every audited record,
  so each reference model is OUT for every member and non-member: the offline setting).

:func:`audit_run` builds the same :class:`AuditRun` from any clients' records and population; a
site auditing itself builds it from its own records and state (:mod:`crosslm_secure.audit.site_run`).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from crosslm_secure.audit.base import AuditError
from crosslm_secure.client.features import FeatureHead, feature_store
from crosslm_secure.client.schedule import private_schedule
from crosslm_secure.client.scheduled import ScheduledTrainer
from crosslm_secure.client.trainers import slm_trainer
from crosslm_secure.config import AuditConfig, Config, SLMConfig, config_from_dict
from crosslm_secure.data.loaders import cap_train, load_labelled_data
from crosslm_secure.data.partition import partition_clients
from crosslm_secure.data.records import ClientData, Example, TaskData
from crosslm_secure.data.site import own_data_marker
from crosslm_secure.errors import CrossLMError
from crosslm_secure.models.batches import encode_texts, forward_logits
from crosslm_secure.models.device import resolve_device
from crosslm_secure.models.pooling import MeanPoolingClassifier
from crosslm_secure.models.slm import load_slm
from crosslm_secure.privacy.ledger import Ledger, ledger_path
from crosslm_secure.privacy.ledger_format import Mechanism
from crosslm_secure.report.run_ledgers import configured_dp_sgd, mechanism_disagreements
from crosslm_secure.runstore import CONFIG_FILE, PARTIES_SITES, RunStore

AUDIT_OWNER = "audit"
"""The auditor's site cache (``sites/audit/``): embeddings of the records it audits, on its machine."""

MIN_HALF = 4
"""Fewest non-members / reference records an attack can work with."""

AUDIT_EPSILON_MAX = 1e9
"""Budget of throw-away audit ledgers: audit retraining must never be declined (it spends no real budget)."""


@dataclass
class AuditRun:
    """A finished run as the attacks see it."""

    root: Path
    store: RunStore
    config: Config
    settings: AuditConfig
    split: TaskData
    population: list[Example]
    non_members: list[Example]
    reference_pool: list[Example]
    device: torch.device

    def client(self, client_id: str) -> ClientData:
        for client in self.split.clients:
            if client.client_id == client_id:
                return client
        raise AuditError(f"audit: the run has no client {client_id!r}; use one of {self.config.client_ids()}")

    def ledger(self, client_id: str) -> Ledger:
        """The client's ledger (verified on open).

        Raises:
            AuditError: the ledger is missing or does not verify.
        """
        path = ledger_path(self.root, client_id)
        if not path.is_file():
            raise AuditError(f"audit: ledger {path} is missing; audit a run whose clients trained (crosslm run)")
        try:
            return Ledger(path, client_id=client_id)
        except CrossLMError as exc:
            raise AuditError(f"audit: ledger {path} does not verify ({exc}); run `crosslm audit ledger`") from None


def open_run(run_dir: Path, settings: AuditConfig | None) -> AuditRun:
    """Read a run folder and rebuild its data split and audit population.

    Raises:
        AuditError: not a run folder, or its config no longer validates.
    """
    root = Path(run_dir)
    if not (root / CONFIG_FILE).is_file():
        raise AuditError(f"audit: {root / CONFIG_FILE} not found; pass a finished run folder such as runs/<run-id>")
    store = RunStore(root)
    if store.parties() == PARTIES_SITES:
        raise AuditError(
            f"audit: {root} was run with party folders: each site's records and model stay at the site, so "
            f"audit each there: `crosslm audit site --site DIR/<site> --run {root}` on that site's machine"
        )
    for folder in sorted((root / "clients").glob("*")):
        own = own_data_marker(folder)
        if own is not None:
            raise AuditError(
                f"audit: {folder.name} trained on its own file {own['file']} (crosslm deploy site --data), which "
                f"this run folder does not hold; audit it at the site: `crosslm audit site --site DIR/{folder.name} "
                f"--run {root}` on that site's machine"
            )
    try:
        config = config_from_dict(store.config_dict())
        uncapped = config.data.model_copy(update={"max_train_records": None})
        full_train, test = load_labelled_data(uncapped, config.task, seed=config.run.seed)
        train = cap_train(full_train, config.data, seed=config.run.seed)
        split = partition_clients(train, test, config.partition, config.client_ids(), seed=config.run.seed)
        used = {ex.uid for ex in train}
        left_out = [ex for ex in full_train if ex.uid not in used]  # records the cap dropped
    except CrossLMError as exc:
        raise AuditError(f"audit: cannot rebuild the data split of {root} ({exc})") from None
    private = {ex.uid for client in split.clients for ex in client.train}
    population = [ex for ex in [*test, *left_out] if ex.uid not in private]
    return audit_run(
        root,
        config,
        settings or config.audit,
        split,
        population,
        too_few="lie outside the clients' training data; raise audit.population_records or give the run more test data",
    )


def audit_run(
    root: Path, config: Config, settings: AuditConfig, split: TaskData, population: list[Example], *, too_few: str
) -> AuditRun:
    """An :class:`AuditRun` of ``split``'s clients, whose state is laid out as a run folder at ``root``.

    ``population`` (records none of the clients trained on) is shuffled with ``audit.seed``, cut
    to ``audit.population_records`` and halved into non-members and reference pool.

    Raises:
        AuditError: fewer than ``2 * MIN_HALF`` population records; the sentence ends with ``too_few``.
    """
    if config.run.threads:
        # Retraining runs the run's own workload: keep its thread cap, so audits that a sweep
        # runs side by side do not oversubscribe the cores (with every core each, beside another
        # cell, one reference model took 54 s under a profiler; capped, a cell's audits ~2 min).
        torch.set_num_threads(config.run.threads)
    order = np.random.default_rng([settings.seed, 21]).permutation(len(population))
    population = [population[i] for i in order[: settings.population_records]]
    half = len(population) // 2
    if half < MIN_HALF:
        raise AuditError(f"audit: only {len(population)} records {too_few}")
    return AuditRun(
        root=root,
        store=RunStore(root),
        config=config,
        settings=settings,
        split=split,
        population=population,
        non_members=population[:half],
        reference_pool=population[half:],
        device=resolve_device(config.run.device),
    )


def balanced(members: Sequence[Example], non_members: Sequence[Example], seed: int) -> tuple[list, list]:
    """Equal numbers of members and non-members (a seeded subsample of the larger side)."""
    count = min(len(members), len(non_members))
    rng = np.random.default_rng([seed, 22])
    pick = lambda items: [items[i] for i in sorted(rng.permutation(len(items))[:count])]  # noqa: E731
    return pick(list(members)), pick(list(non_members))


# --- client models ---------------------------------------------------------------------


def load_client_slm(run: AuditRun, client_id: str) -> tuple[Any, nn.Module, SLMConfig]:
    """The client's final SLM from ``clients/<id>/slm``.

    Raises:
        AuditError: the checkpoint is missing or unreadable.
    """
    settings = run.config.slm_for(client_id)
    checkpoint = run.store.client_dir(client_id) / "slm"
    if not checkpoint.is_dir():
        raise AuditError(
            f"audit: SLM checkpoint {checkpoint} is missing; let the run finish a round (crosslm run / resume) first"
        )
    try:
        tokenizer, model = load_slm(
            settings.model_copy(update={"model": str(checkpoint)}), len(run.config.task.labels), run.device
        )
    except CrossLMError as exc:
        raise AuditError(f"audit: cannot load the SLM checkpoint {checkpoint} ({exc}); rerun the job") from None
    return tokenizer, model, settings


def uses_features(run: AuditRun, settings: SLMConfig, model: nn.Module) -> bool:
    """True when only the linear head trains on private data (frozen encoder, no LoRA)."""
    return (
        settings.trainable == "head"
        and run.config.privacy.lora_rank == 0
        and isinstance(getattr(model, "classifier", None), nn.Linear)
    )


def feature_head(model: nn.Module, *, fresh_seed: int | None = None) -> FeatureHead:
    """A copy of ``model``'s head; with ``fresh_seed`` re-initialized (a new, untrained head)."""
    classifier = nn.Linear(model.classifier.in_features, model.classifier.out_features)
    if fresh_seed is None:
        classifier.load_state_dict(model.classifier.state_dict())
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(fresh_seed)
            classifier.reset_parameters()
    dropout = getattr(getattr(model, "dropout", None), "p", 0.0)
    return FeatureHead(classifier, float(dropout)).to(next(model.parameters()).device)


def embed(
    tokenizer: Any, model: nn.Module, texts: Sequence[str], settings: SLMConfig, *, progress: bool
) -> torch.Tensor:
    """The classifier head's input for each text (eval mode: the sentence embedding), on the CPU.

    For a mean-pooling SLM that is the cached sentence embedding minus the model's public
    centre: the auditor's site cache (``sites/audit/``) keeps the embeddings across audits, so a
    sweep embeds its population once. Other classifiers are run with a hook on the head.
    """
    if isinstance(model, MeanPoolingClassifier):
        store = feature_store(AUDIT_OWNER, tokenizer, model, max_length=settings.max_length)
        vectors = store.embeddings(
            tokenizer,
            model,
            texts,
            max_length=settings.max_length,
            batch_size=settings.eval_batch_size,
            progress="audit: embed" if progress else None,
        )
        return vectors - model.feature_mean.detach().float().cpu()
    captured: list[torch.Tensor] = []
    hook = model.classifier.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().cpu()))
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(texts), settings.eval_batch_size), desc="audit: embed", disable=not progress, leave=False
            ):
                chunk = list(texts[start : start + settings.eval_batch_size])
                forward_logits(model, encode_texts(tokenizer, chunk, settings.max_length), device)
    finally:
        hook.remove()
    return torch.cat(captured).float() if captured else torch.zeros(0, model.classifier.in_features)


def head_probabilities(head: nn.Module, features: torch.Tensor) -> np.ndarray:
    """softmax(head(features)) in eval mode, float64 ``[n, labels]``."""
    head.eval()
    device = next(head.parameters()).device
    with torch.inference_mode():
        logits = head(features.to(device)).float()
    return torch.softmax(logits, dim=-1).cpu().double().numpy()


# --- training "the same way" -----------------------------------------------------------


@dataclass(frozen=True)
class ClientMechanism:
    """The private training a client ran: what audit retraining repeats."""

    private: bool
    noise_multiplier: float
    sample_rate: float
    delta: float
    rounds: int
    steps: int
    ledger_epsilon: float
    disagreements: tuple[str, ...] = ()
    """Where the ledger's DP-SGD entries differ from the configured mechanism (a finding each)."""


def client_mechanism(run: AuditRun, client_id: str) -> ClientMechanism:
    """The DP-SGD mechanism the run's config prescribes for the client, with the ledger's epsilon.

    Audit retraining repeats the mechanism of the CONFIG (noise multiplier recomputed from
    ``target_epsilon``, sample rate, delta), never the ledger's own numbers, so a ledger
    forged to claim more noise cannot back itself up; where the ledger disagrees with the
    config, ``disagreements`` names it and the audits fail.

    Raises:
        AuditError: the ledger is missing, or records no private training.
    """
    ledger = run.ledger(client_id)
    entries = [e for e in ledger.entries if e.run_id == run.store.run_id]
    dp = [e for e in entries if e.mechanism == Mechanism.DP_SGD]
    plain = [e for e in entries if e.mechanism == Mechanism.NON_PRIVATE]
    if not dp and not plain:
        raise AuditError(
            f"audit: the ledger of {client_id} records no training on private data; "
            "audit a run that completed at least one round"
        )
    ledger_epsilon = ledger.epsilon(run.config.privacy.accountant)
    n = len(run.client(client_id).train)
    if not dp:
        schedule = private_schedule(run.config.slm_for(client_id), n)
        return ClientMechanism(
            False,
            0.0,
            schedule.sample_rate,
            run.config.privacy.delta_for(n),
            len(plain),
            sum(e.steps for e in plain),
            math.inf,
        )
    expected = configured_dp_sgd(run.config, client_id, n)
    disagreements = tuple(
        f"ledger round {e.round}: {problem}" for e in dp for problem in mechanism_disagreements(e, expected)
    )
    return ClientMechanism(
        private=True,
        noise_multiplier=expected.noise_multiplier,
        sample_rate=expected.sample_rate,
        delta=expected.delta,
        rounds=len(dp),
        steps=sum(e.steps for e in dp),
        ledger_epsilon=float(ledger_epsilon),
        disagreements=disagreements,
    )


@contextmanager
def retrainer(
    run: AuditRun,
    client_id: str,
    mechanism: ClientMechanism,
    num_records: int,
    *,
    seed: int,
    progress: bool,
) -> Iterator[ScheduledTrainer]:
    """A trainer that repeats the client's mechanism on ``num_records`` other records.

    Same SLM settings, same sample rate (the expected batch scales with the record count),
    the ledger's noise multiplier and delta, the same clipping, optimizer and epochs. It keeps
    its own throw-away ledger: audit retraining touches no private data of the run's budget.
    """
    settings = run.config.slm_for(client_id)
    batch = max(1, round(mechanism.sample_rate * num_records))
    slm = settings.model_copy(
        update={
            "batch_size": batch,
            "private_sample_rate": mechanism.sample_rate,
            "private_steps": mechanism.steps // max(1, mechanism.rounds),
        }
    )
    update: dict[str, Any] = {"epsilon_max": AUDIT_EPSILON_MAX}
    if mechanism.private:
        update |= {"target_epsilon": None, "noise_multiplier": mechanism.noise_multiplier, "delta": mechanism.delta}
    privacy = run.config.privacy.model_copy(update=update)
    with tempfile.TemporaryDirectory(prefix="crosslm-audit-") as folder:
        yield slm_trainer(
            slm,
            privacy,
            ledger=Ledger(Path(folder) / "ledger.jsonl", client_id=client_id),
            run_id=f"audit-{run.store.run_id}",
            client_id=client_id,
            planned_rounds=max(1, mechanism.rounds),
            num_records=num_records,
            device=run.device,
            seed=seed,
            progress=False,
        )


def fresh_slm(run: AuditRun, settings: SLMConfig, seed: int) -> tuple[Any, nn.Module]:
    """A new, untrained SLM as the client started from (pretrained encoder, fresh head)."""
    return load_slm(settings, len(run.config.task.labels), run.device, seed=seed)


def true_label_probability(probabilities: np.ndarray, examples: Sequence[Example]) -> np.ndarray:
    """P(true label | x) per example."""
    labels = np.array([ex.label for ex in examples], dtype=np.int64)
    return probabilities[np.arange(len(labels)), labels]
