"""What the membership attacks score: P(true label) of each audited record under a client's
target SLM and under reference models trained the way the client trained.

Members then non-members are scored by every model; the non-members are also RMIA's
population samples z. Reference models train on random subsets of the reference pool with
the client's record count (capped by the pool): each is OUT for every audited record.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from crosslm_secure.audit.population import (
    AuditRun,
    ClientMechanism,
    embed,
    feature_head,
    fresh_slm,
    head_probabilities,
    load_client_slm,
    retrainer,
    true_label_probability,
    uses_features,
)
from crosslm_secure.client.scheduled import ScheduledTrainer
from crosslm_secure.data.records import Example
from crosslm_secure.models.batches import predict_proba


@dataclass
class ScoredRecords:
    """P(true label) of the audited records (members then non-members) and of the z samples."""

    target: np.ndarray
    """``[n]`` under the client's model."""
    references: np.ndarray
    """``[k, n]`` under each reference model."""
    target_z: np.ndarray
    references_z: np.ndarray
    features_path: bool
    """True when only a linear head was retrained, on frozen sentence features."""


def reference_size(run: AuditRun, train: Sequence[Example]) -> int:
    """Records each reference model trains on: the client's count, capped by the pool."""
    return min(len(train), len(run.reference_pool))


def client_index(client_id: str) -> int:
    """A stable number per client for seeding: N of ``client-N``, else a checksum of the name."""
    tail = client_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else zlib.crc32(client_id.encode("utf-8"))


@dataclass(frozen=True)
class _References:
    """The reference models to train for one client: the client's mechanism on each subset."""

    run: AuditRun
    client_id: str
    mechanism: ClientMechanism
    subsets: list[list[Example]]
    seeds: list[int]
    progress: bool

    def each(self) -> Iterator[tuple[list[Example], int]]:
        """(subset, seed) per reference model, with a progress bar."""
        pairs = list(zip(self.subsets, self.seeds, strict=True))
        yield from tqdm(pairs, desc=f"audit: {self.client_id} references", disable=not self.progress, leave=False)

    def trainer(self, records: int, seed: int) -> AbstractContextManager[ScheduledTrainer]:
        return retrainer(self.run, self.client_id, self.mechanism, records, seed=seed, progress=self.progress)


def score_records(
    run: AuditRun,
    client_id: str,
    mechanism: ClientMechanism,
    members: list[Example],
    embedded: dict[tuple[str, int], torch.Tensor],
    progress: bool,
) -> ScoredRecords:
    """Score ``members + run.non_members`` under the client's SLM and ``audit.reference_models`` reference models.

    ``embedded`` keeps the non-members' and reference pool's features across clients (the
    encoder is frozen on the features path, so every client embeds a text the same way).
    """
    cfg = run.settings
    scored = members + run.non_members
    tokenizer, target_model, settings = load_client_slm(run, client_id)
    size = reference_size(run, run.client(client_id).train)
    index = client_index(client_id)
    rng = np.random.default_rng([cfg.seed, 23, index])
    subsets = [
        [run.reference_pool[i] for i in rng.permutation(len(run.reference_pool))[:size]]
        for _ in range(cfg.reference_models)
    ]
    seeds = [_seed(cfg.seed, index, k) for k in range(len(subsets))]
    references = _References(run, client_id, mechanism, subsets, seeds, progress)
    features_path = uses_features(run, settings, target_model)
    target = (tokenizer, target_model, settings)
    if features_path:
        probabilities = _feature_references(references, target, len(members), scored, embedded)
    else:
        probabilities = _text_references(references, target, scored)
    table = np.array(probabilities)  # [1 + reference models, len(scored)]
    z = slice(len(members), None)
    return ScoredRecords(table[0], table[1:], table[0, z], table[1:, z], features_path)


def _feature_references(
    references: _References,
    target: tuple[Any, Any, Any],
    members: int,
    scored: list[Example],
    embedded: dict[tuple[str, int], torch.Tensor],
) -> list[np.ndarray]:
    """P(true label) under the target's head and under a fresh head per reference model, on frozen features."""
    tokenizer, target_model, settings = target
    run = references.run
    population = run.non_members
    key = (settings.model, settings.max_length)
    if key not in embedded:
        texts = [ex.text for ex in population + run.reference_pool]
        embedded[key] = embed(tokenizer, target_model, texts, settings, progress=references.progress)
    texts = [ex.text for ex in scored[:members]]
    f_members = embed(tokenizer, target_model, texts, settings, progress=references.progress)
    f_scored = torch.cat([f_members, embedded[key][: len(population)]])
    f_pool = embedded[key][len(population) :]
    position = {ex.uid: i for i, ex in enumerate(run.reference_pool)}
    probabilities = [true_label_probability(head_probabilities(feature_head(target_model), f_scored), scored)]
    for subset, seed in references.each():
        index = torch.tensor([position[ex.uid] for ex in subset], dtype=torch.long)
        labels = torch.tensor([ex.label for ex in subset], dtype=torch.long)
        head = feature_head(target_model, fresh_seed=seed)
        with references.trainer(len(subset), seed) as trainer:
            for round_index in range(1, references.mechanism.rounds + 1):
                trainer.train_private_features(head, f_pool[index], labels, round_index=round_index)
        probabilities.append(true_label_probability(head_probabilities(head, f_scored), scored))
    return probabilities


def _text_references(references: _References, target: tuple[Any, Any, Any], scored: list[Example]) -> list[np.ndarray]:
    """P(true label) under the target SLM and under a fresh SLM per reference model, trained on texts."""
    tokenizer, target_model, settings = target
    run = references.run
    probabilities = [_text_probabilities(tokenizer, target_model, settings, scored, run)]
    for subset, seed in references.each():
        ref_tokenizer, model = fresh_slm(run, settings, seed)
        with references.trainer(len(subset), seed) as trainer:
            trainer.prepare_model(model)
            for round_index in range(1, references.mechanism.rounds + 1):
                trainer.train_private(model, ref_tokenizer, subset, round_index=round_index)
        probabilities.append(_text_probabilities(ref_tokenizer, model, settings, scored, run))
    return probabilities


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
