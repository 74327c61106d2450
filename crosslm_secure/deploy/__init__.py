"""Cross-silo deployment on Flower: PKI, site workers, the Flower apps, and a loopback deployment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crosslm_secure.errors import CrossLMError

if TYPE_CHECKING:
    from crosslm_secure.config import Config


class DeployError(CrossLMError):
    """A deployment step failed (certificates, node registration, ports, SuperLink reachability)."""


def refuse_seeded_noise(config: Config) -> None:
    """Refuse, before anything starts, a job whose DP noise would be derived from its seed.

    Raises:
        DeployError: ``privacy.noise_source`` is ``seeded`` (research only: whoever holds the
            config replays the noise and removes it).
    """
    if config.privacy.noise_source == "seeded":
        raise DeployError(
            "deploy: privacy.noise_source is seeded, so anyone holding the job's config could replay the DP noise "
            "and remove it; set privacy.noise_source: os (the default) to deploy"
        )
