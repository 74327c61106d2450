"""Where models run: ``auto`` picks CUDA when present, bf16 where supported."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from crosslm_secure.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device.

    Raises:
        ConfigError: CUDA was asked for but is not available, or the spec is unknown.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"config: run.device is {spec!r} but no CUDA device is visible; use auto or cpu")
        return torch.device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"config: run.device must be auto, cpu, cuda or cuda:N (got {spec!r})")


def model_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA devices that support it; fp32 elsewhere (CPU bf16 is slow here)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
