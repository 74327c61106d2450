"""DP-SGD training of a client's SLM on its private records (Opacus), with a ledger.

Each round runs the schedule of :mod:`crosslm_secure.client.scheduled` through Opacus:
per-record clipping at ``max_grad_norm`` (ghost clipping by default), Gaussian noise with a
noise multiplier fixed for the whole run, a fresh optimizer made private for the round. The
round is recorded in the client's ledger only after training finished.

The randomness that DP rests on (Poisson sampling, noise) comes from OS entropy, not from the
run seed: a seed in a published config would let anyone replay the noise. ``privacy.noise_source:
seeded`` (research only) derives it from the seed instead (:mod:`crosslm_secure.privacy.noise_source`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from opacus import PrivacyEngine
from torch.utils.data import TensorDataset

from crosslm_secure.client.dp_preflight import check_weights_moved, preflight
from crosslm_secure.client.scheduled import (
    Forward,
    Public,
    ScheduledTrainer,
    encoded_dataset,
    trimmed_inputs,
)
from crosslm_secure.client.trainer import TrainReport
from crosslm_secure.data.records import Example
from crosslm_secure.errors import PrivacyError
from crosslm_secure.models.batches import forward_logits
from crosslm_secure.privacy.accounting import MechanismBlock, noise_multiplier_for
from crosslm_secure.privacy.budget import decline_reason as budget_decline_reason
from crosslm_secure.privacy.ledger import LedgerEntry
from crosslm_secure.privacy.noise_source import NoiseStreams, Purpose

MECHANISM = "dp-sgd"


class DPTrainer(ScheduledTrainer):
    """A client's SLM trainer with DP-SGD on private records (implements ``SLMTrainer``).

    Resume: if the ledger already holds this run's ``dp-sgd`` entry for a round,
    ``train_private`` does not train again (that would spend unrecorded budget) and returns
    the stored entry's epsilon with ``details["skipped"]``; the caller must restore the
    SLM checkpoint saved after that round. Arguments as :class:`ScheduledTrainer`;
    ``planned_rounds`` sets the noise multiplier derived from ``target_epsilon``.

    Raises:
        PrivacyError: delta >= 1/n, no records, or ``privacy.dp`` false (use ``NonPrivateTrainer``).
    """

    private = True
    label = "DP"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.privacy.dp:
            raise PrivacyError(
                f"{self.client_id}: privacy.dp is false, so this client trains without DP; "
                "build its trainer with client.trainers.slm_trainer"
            )
        self._noise_multiplier: float | None = None
        self.noise = NoiseStreams(self.privacy.noise_source, self.seed, self.client_id)
        """Where this client's Poisson sampling, DP noise and dropout draw from."""

    @property
    def noise_multiplier(self) -> float:
        """The run's noise multiplier: stored in the ledger, given, or derived once."""
        if self._noise_multiplier is None:
            stored = [
                e.noise_multiplier for e in self.ledger.entries if e.run_id == self.run_id and e.mechanism == MECHANISM
            ]
            if stored:
                self._noise_multiplier = float(stored[0])
            elif self.privacy.noise_multiplier is not None:
                self._noise_multiplier = float(self.privacy.noise_multiplier)
            else:
                self._noise_multiplier = noise_multiplier_for(
                    target_epsilon=float(self.privacy.target_epsilon),
                    delta=self.delta,
                    sample_rate=self.sample_rate,
                    steps=max(1, self.planned_rounds * self.steps_per_round),
                    accountant=self.privacy.accountant,
                )
        return self._noise_multiplier

    def planned_block(self, round_index: int) -> list[MechanismBlock]:
        """The DP-SGD release round ``round_index`` still has to make (empty if recorded)."""
        if self.steps_per_round == 0:
            return []
        if self.ledger.find(self.run_id, round_index, MECHANISM) is not None:
            return []
        return [MechanismBlock(self.noise_multiplier, self.sample_rate, self.steps_per_round)]

    def decline_reason(self, round_index: int, *, extra_planned: Sequence[MechanismBlock] = ()) -> str | None:
        """Why this client declines the round (budget), or None.

        Args:
            round_index: the round about to run.
            extra_planned: other releases the round will make (e.g. the score release).
        """
        return budget_decline_reason(
            self.ledger,
            self.planned_block(round_index) + list(extra_planned),
            client_id=self.client_id,
            round_index=round_index,
            epsilon_max=self.privacy.epsilon_max,
            accountant=self.privacy.accountant,
            delta=self.delta,
        )

    def epsilon(self) -> float:
        return self.ledger.epsilon(self.privacy.accountant, self.delta)

    def _train_full(self, model: Any, tokenizer: Any, examples: Sequence[Example], round_index: int) -> TrainReport:
        def dataset() -> TensorDataset:
            return encoded_dataset(tokenizer, examples, self.slm.max_length)

        def forward(dp_model: torch.nn.Module, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
            return forward_logits(dp_model, trimmed_inputs(tensors), self.device)

        return self._train_round(model, len(examples), dataset, forward, round_index)

    def _train_round(
        self,
        model: Any,
        count: int,
        dataset: Callable[[], TensorDataset],
        forward: Forward,
        round_index: int,
        *,
        public: Public = None,
    ) -> TrainReport:
        existing = self.ledger.find(self.run_id, round_index, MECHANISM)
        if existing is not None:
            model.eval()
            return _skipped_report(existing)
        if count != self.num_records:
            raise PrivacyError(
                f"{self.client_id}: DP training was set up for {self.num_records} records but got "
                f"{count}; the sample rate would be wrong"
            )
        if self.steps_per_round == 0:
            model.eval()
            return TrainReport(0, 0, math.nan, 0.0, epsilon=self.ledger.epsilon(self.privacy.accountant, self.delta))
        reason = self.decline_reason(round_index)
        if reason is not None:
            raise PrivacyError(reason)
        self.prepare_model(model)
        started = time.perf_counter()
        stats = self._steps(model, dataset(), forward, round_index, public=public)
        entry = self.ledger.record_dp_sgd(
            run_id=self.run_id,
            round_index=round_index,
            sample_rate=self.sample_rate,
            noise_multiplier=self.noise_multiplier,
            steps=stats["draws"],
            max_grad_norm=self.privacy.max_grad_norm,
            delta=self.delta,
            accountant=self.privacy.accountant,
            epsilon_max=self.privacy.epsilon_max,
            noise_source=self.privacy.noise_source,
            details={
                "grad_sample_mode": self.privacy.grad_sample_mode,
                "optimizer": self.schedule.optimizer,
                "learning_rate": self.schedule.learning_rate,
                "lora_rank": self.privacy.lora_rank,
            },
        )
        return TrainReport(
            steps=stats["draws"],
            examples_seen=stats["seen"],
            mean_loss=stats["mean_loss"],
            seconds=time.perf_counter() - started,
            epsilon=entry.spent(),
            details=_entry_details(entry) | {"empty_batches": stats["empty"]},
        )

    # -- the mechanism ---------------------------------------------------------------------

    def _generator(self, round_index: int) -> torch.Generator:
        return self.noise.torch_generator("cpu", round_index=round_index, purpose=Purpose.POISSON)

    def _seed_dropout(self, round_index: int) -> None:
        seed = self.noise.round_seed(round_index, Purpose.DROPOUT)
        if seed is not None:
            torch.manual_seed(seed)

    def _wrap(
        self, model: Any, optimizer: Any, criterion: Any, loader: Any, round_index: int
    ) -> tuple[Any, Any, Any, Any]:
        preflight(model, loader, sample_rate=self.sample_rate)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "secure RNG off": see SECURITY.md, "Where the DP noise comes from"
            private = PrivacyEngine(accountant=self.privacy.accountant).make_private(
                module=model,
                optimizer=optimizer,
                criterion=criterion,
                data_loader=loader,
                noise_multiplier=self.noise_multiplier,
                max_grad_norm=self.privacy.max_grad_norm,
                poisson_sampling=False,  # the loader already samples Poisson at our rate
                grad_sample_mode=self.privacy.grad_sample_mode,
                noise_generator=self.noise.torch_generator(
                    self.device, round_index=round_index, purpose=Purpose.DP_NOISE
                ),
            )
        if self.privacy.grad_sample_mode == "ghost":
            return private
        step_model, step_optimizer, step_loader = private
        return step_model, step_optimizer, criterion, step_loader

    def _after_first_step(self, start: dict[str, torch.Tensor], trainable: dict[str, torch.nn.Parameter]) -> None:
        check_weights_moved(start, trainable)

    def _unwrap(self, step_model: Any) -> None:
        step_model.to_standard_module()  # removes hooks and per-sample attributes


def _entry_details(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "mechanism": entry.mechanism,
        "noise_multiplier": entry.noise_multiplier,
        "sample_rate": entry.sample_rate,
        "delta": entry.delta,
        "max_grad_norm": entry.max_grad_norm,
        "accountant": entry.accountant,
        "epsilon_by_accountant": dict(entry.epsilon),
        "ledger_seq": entry.seq,
        "ledger_hash": entry.hash,
        "ledger_signature": entry.signature,
    }


def _skipped_report(entry: LedgerEntry) -> TrainReport:
    return TrainReport(
        steps=0,
        examples_seen=0,
        mean_loss=math.nan,
        seconds=0.0,
        epsilon=entry.spent(),
        details=_entry_details(entry)
        | {"skipped": f"round {entry.round} is already in the ledger (entry {entry.seq})"},
    )
