"""What protected a run, in plain words: shared by ``summary.md`` and ``report.html``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from crosslm_secure.aggregation.schemes import scheme_for
from crosslm_secure.config import Config


def protections(config: Config, rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(protection, state) in plain words: what guarded the feedback, the training and the messages."""
    aggregator = config.feedback.aggregator
    protected = scheme_for(aggregator).protected
    epsilons = final_epsilons(rows)
    finite = [e for e in epsilons.values() if not math.isinf(e)]
    if not epsilons:
        dp_line = "not trained (no private training ran)"
    elif finite and len(finite) == len(epsilons):
        dp_line = (
            f"DP-SGD (Opacus, {config.privacy.grad_sample_mode} clipping, max_grad_norm "
            f"{config.privacy.max_grad_norm:g}); record-level epsilon spent up to {max(finite):.3f} "
            f"of {config.privacy.epsilon_max:g}"
        )
    else:
        dp_line = "none: epsilon = inf (non-private training)"
    if protected:
        feedback = (
            f"{aggregator} ({config.feedback.ckks_preset}, 128-bit): pairwise masks, noise sigma "
            f"{config.feedback.noise_sigma:g}; the server adds blind; a verifying client decrypts only the aggregate"
        )
    else:
        feedback = f"{aggregator}: unprotected, the server sees per-client scores"
    return [
        ("feedback aggregation", feedback),
        ("client training", dp_line),
        ("messages", "Ed25519-signed, bound to run, round and sender; replays refused"),
    ]


def final_epsilons(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    found: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("epsilon/"):
                found[key.split("/", 1)[1]] = float(value)
    return found
