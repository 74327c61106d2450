"""Checks that refuse what silently breaks DP-SGD, before and after the first private step."""

from __future__ import annotations

import math

import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader, WeightedRandomSampler

from crosslm_secure.errors import PrivacyError


def preflight(model: torch.nn.Module, data_loader: DataLoader, *, sample_rate: float) -> None:
    """Refuse what silently breaks DP-SGD, one sentence per problem.

    Raises:
        PrivacyError: weighted sampling; a sampler other than Poisson or at another rate;
            no trainable parameters; the model (or a part of it) not in train mode;
            layers Opacus cannot train privately.
    """
    sampler = getattr(data_loader, "batch_sampler", None)
    inner = getattr(sampler, "sampler", None)
    if isinstance(getattr(data_loader, "sampler", None), WeightedRandomSampler) or isinstance(
        inner, WeightedRandomSampler
    ):
        raise PrivacyError(
            "DP preflight: weighted sampling changes each record's sampling probability, so "
            "the accounted sample rate would be wrong; remove the WeightedRandomSampler"
        )
    if not isinstance(sampler, UniformWithReplacementSampler):
        raise PrivacyError(
            f"DP preflight: DP-SGD needs Poisson sampling (opacus DPDataLoader), but the loader "
            f"uses {type(sampler or getattr(data_loader, 'sampler', None)).__name__}"
        )
    if not math.isclose(sampler.sample_rate, sample_rate, rel_tol=1e-12):
        raise PrivacyError(
            f"DP preflight: the loader samples at rate {sampler.sample_rate:.6g} but "
            f"{sample_rate:.6g} is accounted; build the loader with the accounted rate"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise PrivacyError("DP preflight: the model has no trainable parameters; unfreeze some")
    frozen = [name or "<root>" for name, m in model.named_modules() if not m.training]
    if frozen:
        raise PrivacyError(f"DP preflight: the model is not in train mode ({frozen[0]} is in eval); call model.train()")
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise PrivacyError(
            f"DP preflight: Opacus cannot train this model privately ({errors[0]}); "
            "replace the layer (e.g. ModuleValidator.fix turns BatchNorm into GroupNorm)"
        )


def check_weights_moved(before: dict[str, torch.Tensor], trainable: dict[str, torch.nn.Parameter]) -> None:
    """After a DP step every trainable tensor must have changed (noise alone moves it).

    Raises:
        PrivacyError: names the tensors that did not move (e.g. corrupted LoRA weights).
    """
    still = [n for n, p in trainable.items() if torch.equal(p.detach(), before[n])]
    if still:
        raise PrivacyError(
            f"DP check: {len(still)} trainable tensor(s) did not change after the first DP step "
            f"(first: {still[0]}); the optimizer is not updating them (for LoRA, move the model "
            "to its device before adding adapters)"
        )
