"""Cross-silo deployment on Flower: PKI, site workers, the Flower apps, and a loopback deployment."""

from crosslm_secure.errors import CrossLMError


class DeployError(CrossLMError):
    """A deployment step failed (certificates, node registration, ports, SuperLink reachability)."""
