"""How a client spends its private-training steps: sample rate, steps, optimizer, learning rate.

Under DP-SGD the noise added to the *summed* clipped gradient has a fixed scale, while the
signal grows with the batch. Small Poisson batches (rate 0.08, ~16 records) drown a linear
probe at epsilon 8: every client ended at the majority class. Full batches with many steps
keep most of the non-private macro-F1 (FACTS.md, "DP linear probe"), so that is the default
for a head-only SLM. Counting steps in epochs would undo it (a bigger batch means fewer steps),
so the head schedule counts steps. Full fine-tuning keeps minibatch epochs: a full-batch step
through the whole encoder is too costly on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crosslm_secure.config import SLMConfig
from crosslm_secure.privacy.accounting import steps_per_epoch

HEAD_STEPS = 100
HEAD_SAMPLE_RATE = 1.0
HEAD_OPTIMIZER = "sgd"
HEAD_LEARNING_RATE = 2.0


@dataclass(frozen=True)
class PrivateSchedule:
    """The resolved private-training schedule of one client for one round."""

    sample_rate: float
    steps: int
    optimizer: Literal["sgd", "adamw"]
    learning_rate: float


def private_schedule(slm: SLMConfig, num_records: int) -> PrivateSchedule:
    """Resolve the ``slm.private_*`` settings (None = the default of ``slm.trainable``).

    Args:
        slm: the client's SLM settings.
        num_records: the client's private records n (sets the minibatch rate ``batch_size / n``).
    """
    head = slm.trainable == "head"
    if slm.private_sample_rate is not None:
        rate = slm.private_sample_rate
    else:
        rate = HEAD_SAMPLE_RATE if head else min(1.0, slm.batch_size / max(1, num_records))
    if slm.private_steps is not None:
        steps = slm.private_steps
    else:
        steps = HEAD_STEPS if head else slm.private_epochs * steps_per_epoch(rate)
    optimizer = slm.private_optimizer or (HEAD_OPTIMIZER if head else "adamw")
    if slm.private_learning_rate is not None:
        lr = slm.private_learning_rate
    else:
        lr = HEAD_LEARNING_RATE if head and optimizer == "sgd" else slm.learning_rate
    return PrivateSchedule(sample_rate=float(rate), steps=int(steps), optimizer=optimizer, learning_rate=float(lr))
