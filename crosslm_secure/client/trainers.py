"""Which trainer a client's private data gets: DP-SGD, or the non-private baseline when ``privacy.dp`` is false."""

from __future__ import annotations

from typing import Any

from crosslm_secure.client.dp_trainer import DPTrainer
from crosslm_secure.client.nonprivate_trainer import NonPrivateTrainer
from crosslm_secure.client.scheduled import ScheduledTrainer
from crosslm_secure.config import SLMConfig
from crosslm_secure.privacy.settings import PrivacyConfig


def slm_trainer(slm: SLMConfig, privacy: PrivacyConfig, **kwargs: Any) -> ScheduledTrainer:
    """A ``DPTrainer`` when ``privacy.dp``, else a ``NonPrivateTrainer`` (same arguments)."""
    kind = DPTrainer if privacy.dp else NonPrivateTrainer
    return kind(slm, privacy, **kwargs)
