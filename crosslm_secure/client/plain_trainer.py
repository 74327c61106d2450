"""Non-private SLM training: AdamW on private or synthetic records.

Used by the ``non-private`` baseline for private data, and by every method for the
public (synthetic) records, which cost no privacy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from crosslm_secure.client.trainer import TrainReport
from crosslm_secure.config import SLMConfig
from crosslm_secure.data.records import Example
from crosslm_secure.models.batches import (
    encode_examples,
    forward_logits,
    iterate_batches,
    num_batches,
)

_PHASES = {"private": 1, "public": 2}
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
WARMUP_SHARE = 0.1


class PlainTrainer:
    """Trains a client's SLM without differential privacy (implements ``SLMTrainer``).

    Each call builds a fresh AdamW optimizer with a linear warm-up/decay schedule, so a
    call's result depends only on the model it is given, the examples, ``seed`` and
    ``round_index``: shuffling and dropout are seeded from those.
    """

    private = False

    def __init__(self, cfg: SLMConfig, device: torch.device, *, seed: int, progress: bool = True) -> None:
        """Set up a trainer.

        Args:
            cfg: the client's SLM settings (epochs, learning rate, batch size, max length).
            device: where the model lives.
            seed: the run seed (combined with round and phase per call).
            progress: show a tqdm bar per call.
        """
        self.cfg = cfg
        self.device = torch.device(device)
        self.seed = seed
        self.progress = progress

    def decline_reason(self, round_index: int) -> str | None:
        """Never declines: non-private training spends no budget."""
        return None

    def train_private(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], *, round_index: int, through: int | None = None
    ) -> TrainReport:
        """Train ``cfg.private_epochs`` epochs on the client's private records (no DP).

        ``through`` is not used: this trainer trains on synthetic samples when they arrive (``train_public``).
        """
        return self._train(model, tokenizer, examples, self.cfg.private_epochs, round_index, "private")

    def train_public(self, model: Any, tokenizer: Any, examples: Sequence[Example], *, round_index: int) -> TrainReport:
        """Train ``cfg.synthetic_epochs`` epochs on accepted synthetic records."""
        return self._train(model, tokenizer, examples, self.cfg.synthetic_epochs, round_index, "public")

    def _train(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        examples: Sequence[Example],
        epochs: int,
        round_index: int,
        phase: str,
    ) -> TrainReport:
        started = time.perf_counter()
        per_epoch = num_batches(len(examples), self.cfg.batch_size)
        total_steps = epochs * per_epoch
        details: dict[str, Any] = {
            "phase": phase,
            "epochs": epochs,
            "learning_rate": self.cfg.learning_rate,
            "batch_size": self.cfg.batch_size,
        }
        if total_steps == 0:
            model.eval()
            return TrainReport(0, 0, math.nan, time.perf_counter() - started, details=details)

        call_seed = _call_seed(self.seed, round_index, phase)
        generator = torch.Generator().manual_seed(call_seed)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=self.cfg.learning_rate,
            weight_decay=WEIGHT_DECAY,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_linear(total_steps))
        losses: list[float] = []
        epoch_losses: list[float] = []
        seen = 0
        fork_devices = [self.device] if self.device.type == "cuda" else []
        bar = tqdm(
            total=total_steps,
            desc=f"SLM {phase} r{round_index}",
            disable=not self.progress,
            leave=False,
        )
        class_weights = loss_weights(self.cfg, self.device)
        model.train()
        try:
            with torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(call_seed)
                for _ in range(epochs):
                    epoch_start = len(losses)
                    for batch in iterate_batches(examples, self.cfg.batch_size, generator=generator):
                        inputs, labels = encode_examples(tokenizer, batch, self.cfg.max_length)
                        logits = forward_logits(model, inputs, self.device)
                        loss = F.cross_entropy(logits.float(), labels.to(self.device), weight=class_weights)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                        optimizer.step()
                        schedule.step()
                        losses.append(float(loss.detach()))
                        seen += len(batch)
                        bar.update(1)
                        bar.set_postfix(loss=f"{losses[-1]:.3f}")
                    epoch_losses.append(float(np.mean(losses[epoch_start:])))
        finally:
            bar.close()
            model.eval()
            optimizer.zero_grad(set_to_none=True)
        details["epoch_losses"] = epoch_losses
        return TrainReport(
            steps=len(losses),
            examples_seen=seen,
            mean_loss=float(np.mean(losses)),
            seconds=time.perf_counter() - started,
            details=details,
        )


def loss_weights(cfg: SLMConfig, device: torch.device) -> torch.Tensor | None:
    """The configured per-label loss weights as a tensor (None = unweighted)."""
    if cfg.class_weights is None:
        return None
    return torch.tensor(cfg.class_weights, dtype=torch.float32, device=device)


def _call_seed(seed: int, round_index: int, phase: str) -> int:
    """A 63-bit seed that differs per (run seed, round, phase)."""
    state = np.random.SeedSequence([seed, round_index, _PHASES[phase]]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def _warmup_linear(total_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up over the first 10% of steps, then linear decay towards 0."""
    warmup = max(1, round(WARMUP_SHARE * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor
