"""The SLM trainer interface: how a client trains its small model.

The coordinator and client handlers only ever talk to this interface, so that the
non-private trainer and the DP-SGD trainer (Opacus) swap by configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from crosslm_secure.data.records import Example


@dataclass
class TrainReport:
    """What one training call did. ``epsilon`` is cumulative for the client (inf = non-private)."""

    steps: int
    examples_seen: int
    mean_loss: float
    seconds: float
    epsilon: float = math.inf
    details: dict[str, Any] = field(default_factory=dict)


class SLMTrainer(Protocol):
    """Trains one client's SLM. Implementations: PlainTrainer, DPTrainer, NonPrivateTrainer."""

    private: bool
    """True when ``train_private`` is differentially private."""

    def decline_reason(self, round_index: int) -> str | None:
        """Why this client must decline round ``round_index`` (e.g. budget), or None."""
        ...

    def train_private(
        self, model: Any, tokenizer: Any, examples: Sequence[Example], *, round_index: int, through: int | None = None
    ) -> TrainReport:
        """Train on the client's private records (DP when ``private``)."""
        ...

    def train_public(self, model: Any, tokenizer: Any, examples: Sequence[Example], *, round_index: int) -> TrainReport:
        """Train on public (synthetic) records: post-processing, no privacy cost."""
        ...
