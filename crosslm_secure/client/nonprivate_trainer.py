"""The non-private baseline: the same schedule as DP-SGD without clipping and noise (epsilon = inf).

A head-only SLM runs the DP schedule's steps plainly, so "epsilon = inf" differs from the private
run only by the mechanism; a model whose encoder trains uses :class:`PlainTrainer`'s epochs.
Every round is still recorded in the ledger, as ``non-private``, so reports show epsilon = inf.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import TensorDataset

from crosslm_secure.client.scheduled import Forward, Public, ScheduledTrainer
from crosslm_secure.client.trainer import TrainReport
from crosslm_secure.data.records import Example

MECHANISM = "non-private"


class NonPrivateTrainer(ScheduledTrainer):
    """A client's SLM trainer without DP (implements ``SLMTrainer``); arguments as :class:`ScheduledTrainer`."""

    private = False
    label = "private"

    def decline_reason(self, round_index: int) -> str | None:
        """Never declines: non-private training has no budget to exceed."""
        return None

    def epsilon(self) -> float:
        return math.inf

    def _train_full(self, model: Any, tokenizer: Any, examples: Sequence[Example], round_index: int) -> TrainReport:
        self.prepare_model(model)
        report = self._plain.train_private(model, tokenizer, examples, round_index=round_index)
        return self._record(report, round_index)

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
        started = time.perf_counter()
        stats = self._steps(model, dataset(), forward, round_index, public=public)
        report = TrainReport(stats["draws"], stats["seen"], stats["mean_loss"], time.perf_counter() - started)
        return self._record(report, round_index)

    def _record(self, report: TrainReport, round_index: int) -> TrainReport:
        if self.ledger.find(self.run_id, round_index, MECHANISM) is None:
            self.ledger.record_non_private(
                run_id=self.run_id,
                round_index=round_index,
                steps=report.steps,
                accountant=self.privacy.accountant,
                epsilon_max=self.privacy.epsilon_max,
                details={"sample_rate": self.sample_rate},
            )
        report.epsilon = math.inf
        report.details["privacy"] = "non-private: epsilon = inf"
        return report

    # -- the mechanism: plain steps, reproducible from the run seed -------------------------

    def _generator(self, round_index: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + round_index)

    def _seed_dropout(self, round_index: int) -> None:
        torch.manual_seed(self.seed * 1_000_003 + round_index)
