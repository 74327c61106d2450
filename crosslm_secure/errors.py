"""Errors meant for users: one sentence that names the problem and the fix."""


class CrossLMError(Exception):
    """Base class for every error a user should read instead of a traceback."""


class ConfigError(CrossLMError):
    """A configuration file or field is invalid."""


class DataError(CrossLMError):
    """A dataset is missing, unreadable or does not match the task."""


class ModelError(CrossLMError):
    """A model cannot be found or loaded."""


class ProtocolError(CrossLMError):
    """A protocol message was malformed, tampered, replayed or out of place."""


class PrivacyError(CrossLMError):
    """A privacy invariant would be broken (budget, ledger, DP preflight)."""


class CryptoError(CrossLMError):
    """A cryptographic object is invalid, foreign or does not verify."""


class RunError(CrossLMError):
    """A run folder is missing, incomplete or inconsistent."""
