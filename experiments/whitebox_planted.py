"""Planted accounting errors in the default SLM's DP-SGD at epsilon 2, audited white-box.

Re-runs client-1's mechanism of a finished run (the real DPTrainer, q and steps of the run,
noise for the target epsilon) with one bug planted in the training code while the ledger keeps
the honest parameters, and prints the white-box audit's numbers per bug:

    .venv/bin/python experiments/whitebox_planted.py --run runs/<id> --epsilon 2

Bugs: the noise multiplier halved; the sample rate recorded at half the true one (the run is
set to q/2 and the sampler draws at q); clipping disabled (noise std kept at sigma * C).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

from crosslm_secure.client import dp_trainer, scheduled


class HalfNoise(PrivacyEngine):
    def make_private(self, **kwargs):
        kwargs["noise_multiplier"] /= 2
        return super().make_private(**kwargs)


class NoClipping(PrivacyEngine):
    def make_private(self, **kwargs):
        kwargs["noise_multiplier"] *= kwargs["max_grad_norm"] / 1e6
        kwargs["max_grad_norm"] = 1e6
        return super().make_private(**kwargs)


class DoubleRate(UniformWithReplacementSampler):
    def __iter__(self):
        for _ in range(self.steps):
            mask = torch.rand(self.num_samples, generator=self.generator) < min(1.0, 2 * self.sample_rate)
            yield mask.nonzero(as_tuple=False).reshape(-1).tolist()


def double_rate_loader(dataset, *, sample_rate, generator):
    made = DPDataLoader(dataset, sample_rate=sample_rate, generator=generator)
    made.batch_sampler.__class__ = DoubleRate
    return made


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from whitebox_curve import audit_once, prepare

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    context = prepare(args.run)
    honest_rate = context["mechanism"].sample_rate
    plants = {
        "honest": ({}, honest_rate),
        "noise multiplier halved": ({"PrivacyEngine": HalfNoise}, honest_rate),
        "sample rate recorded at half the true one": ({"DPDataLoader": double_rate_loader}, honest_rate / 2),
        "clipping disabled": ({"PrivacyEngine": NoClipping}, honest_rate),
    }
    home = {"PrivacyEngine": dp_trainer, "DPDataLoader": scheduled}  # where the trainer looks each name up
    originals = {key: getattr(module, key) for key, module in home.items()}
    for name, (patches, rate) in plants.items():
        for key, value in patches.items():
            setattr(home[key], key, value)
        try:
            row = audit_once(context, str(args.epsilon), args.seed, sample_rate=rate)
        finally:
            for key, value in originals.items():
                setattr(home[key], key, value)
        print(json.dumps({"plant": name} | row), flush=True)


if __name__ == "__main__":
    main()
