"""Privacy settings of a run: DP-SGD on private records, accounting, budget.

The lead's main ``Config`` holds one ``PrivacyConfig`` under ``privacy:``. Every field
has a default and a description; invalid combinations are refused with one sentence
that names the field and the fix.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from crosslm_secure.config_sections import _Section, within
from crosslm_secure.errors import PrivacyError

Accountant = Literal["prv", "rdp"]
GradSampleMode = Literal["ghost", "hooks"]
NoiseSource = Literal["os", "seeded"]

DEFAULT_DELTA_CAP = 1e-5
"""delta defaults to min(1e-5, 1 / (10 n)) for a client with n records."""

NOISE_MULTIPLIER_FLOOR = 0.3
"""Smallest noise multiplier a config may fix. PRV's grid grows as 1/sigma^2: 100 full-batch steps
took 0.7 GB at 0.5, 1.1 GB at 0.3, 2 GB at 0.2 (and epsilon is already infinite there), 312 GiB at 1e-3."""


TARGET_EPSILON_FLOOR = 0.01
"""Smallest target epsilon: below it DP-SGD needs a noise multiplier in the thousands."""


class PrivacyConfig(_Section):
    """How each client protects its private records (the privacy unit is one record)."""

    dp: bool = Field(
        True,
        description="DP-SGD on private records. false = non-private training, recorded as epsilon = inf.",
    )
    target_epsilon: (
        Annotated[
            float,
            Field(gt=0, allow_inf_nan=True),
            within(
                TARGET_EPSILON_FLOOR,
                why="below it DP-SGD needs a noise multiplier in the thousands, so training learns nothing, and "
                "searching for it takes the accountant very long; use dp: false to price no privacy instead",
            ),
        ]
        | None
    ) = Field(
        8.0,
        description="Epsilon that DP-SGD may spend over all planned rounds (at least 0.01); the noise multiplier "
        "is derived from it. null or .inf = use noise_multiplier instead.",
    )
    noise_multiplier: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="Noise std / clipping norm (at least 0.3), fixed for the whole run; only when target_epsilon "
        "is null.",
    )
    delta: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None,
        description="delta of (epsilon, delta)-DP per client; null = min(1e-5, 1/(10 n)). Refused when >= 1/n.",
    )
    max_grad_norm: Annotated[float, Field(gt=0)] = Field(1.0, description="Per-record gradient clipping norm C.")
    accountant: Accountant = Field(
        "prv", description="prv (tight, Opacus default) or rdp; the budget is checked with this one."
    )
    grad_sample_mode: GradSampleMode = Field(
        "ghost",
        description="ghost (ghost clipping: faster, less memory) or hooks (per-sample gradients).",
    )
    noise_source: NoiseSource = Field(
        "os",
        description="Where the DP noise and sampling come from. os: fresh OS entropy, which no one can replay "
        "(the only value a deployment accepts). seeded: research only, derived from run.seed per client, round and "
        "purpose, so runs repeat exactly and methods share their noise; anyone with the config can replay and remove "
        "it, so it protects nothing.",
    )
    epsilon_max: Annotated[float, Field(gt=0)] = Field(
        10.0,
        description="Per-client budget: a client declines a round whose planned releases "
        "would push its cumulative epsilon above this.",
    )
    lora_rank: Annotated[int, Field(ge=0)] = Field(
        0, description="0 = DP full fine-tuning of the SLM; > 0 = DP LoRA of this rank (peft)."
    )
    lora_alpha: Annotated[int, Field(ge=1)] = Field(16, description="LoRA alpha when lora_rank > 0.")
    lora_target_modules: list[str] = Field(
        ["query", "value"],
        description="SLM modules LoRA adapts when lora_rank > 0 (the classifier head is trained fully).",
    )

    @model_validator(mode="after")
    def _check(self) -> PrivacyConfig:
        if not self.dp:
            return self
        if self.uses_target_epsilon and self.noise_multiplier is not None:
            raise ValueError(
                "privacy: give either target_epsilon or noise_multiplier, not both; "
                "set target_epsilon: null to use noise_multiplier"
            )
        if not self.uses_target_epsilon and self.noise_multiplier is None:
            raise ValueError("privacy: target_epsilon is null/inf, so noise_multiplier is required; set one of them")
        if self.noise_multiplier is not None and self.noise_multiplier < NOISE_MULTIPLIER_FLOOR:
            raise ValueError(
                f"privacy.noise_multiplier {self.noise_multiplier:g} is below {NOISE_MULTIPLIER_FLOOR:g}: its "
                "epsilon is in the hundreds and the PRV accountant would need gigabytes to compute it; raise it "
                "or set dp: false"
            )
        if self.uses_target_epsilon and self.target_epsilon > self.epsilon_max:
            raise ValueError(
                f"privacy: target_epsilon ({self.target_epsilon}) exceeds epsilon_max "
                f"({self.epsilon_max}); clients would decline rounds they planned; lower it"
            )
        return self

    @property
    def uses_target_epsilon(self) -> bool:
        """True when the noise multiplier is derived from ``target_epsilon``."""
        return self.target_epsilon is not None and math.isfinite(self.target_epsilon)

    def delta_for(self, num_records: int) -> float:
        """The delta a client with ``num_records`` private records uses.

        Raises:
            PrivacyError: the client has no records, or delta >= 1/n (it would allow
                releasing a whole record in the clear).
        """
        if num_records < 1:
            raise PrivacyError("privacy: a client with no private records cannot train with DP")
        if self.delta is None:
            return min(DEFAULT_DELTA_CAP, 1.0 / (10 * num_records))
        if self.delta >= 1.0 / num_records:
            raise PrivacyError(
                f"privacy.delta ({self.delta:g}) must be below 1/n = {1.0 / num_records:g} for a "
                f"client with {num_records} records; lower it (e.g. {1.0 / (10 * num_records):.1g})"
            )
        return self.delta
