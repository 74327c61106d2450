"""crosslm-secure: privacy-hardened CrossLM between one LLM and many small LMs."""

__version__ = "0.1.0"
