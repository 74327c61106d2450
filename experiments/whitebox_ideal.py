"""What the one-run bound gets on an ideal Gaussian mechanism: the reference for the white-box audit.

Scores of m canaries are exactly N(mu * included, 1) with mu = sqrt(T) / sigma of full-batch
DP-SGD (q = 1) calibrated to each epsilon; the top/bottom k are guessed and the paper's bound
is computed, many times. Compare with the measured white-box bounds and with the ceiling:

    .venv/bin/python experiments/whitebox_ideal.py --canaries 384 --steps 200 --trials 150
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from crosslm_secure.audit.canaries import epsilon_lower_bound, guess
from crosslm_secure.audit.whitebox import ceiling_bound
from crosslm_secure.privacy.accounting import noise_multiplier_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=384)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--guesses", type=int, nargs="+", default=[20, 58])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--delta", type=float, default=1e-5)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    m = args.canaries
    print("| eps | mu | guesses | ceiling | mean bound | median | 90th pct | share >= ceiling / 2 |")
    print("|---|---|---|---|---|---|---|---|")
    for eps in args.epsilons:
        sigma = noise_multiplier_for(
            target_epsilon=eps, delta=args.delta, sample_rate=1.0, steps=args.steps, accountant="prv"
        )
        mu = math.sqrt(args.steps) / sigma
        for k in args.guesses:
            ceiling = ceiling_bound(m, k, eps, args.delta, 0.95)
            bounds = []
            for _ in range(args.trials):
                included = rng.random(m) < 0.5
                made = guess(mu * included + rng.standard_normal(m), k)
                correct = int(((made != 0) & (made == np.where(included, 1, -1))).sum())
                bounds.append(epsilon_lower_bound(m, k, correct, args.delta, 0.95))
            b = np.array(bounds)
            print(
                f"| {eps:g} | {mu:.3f} | {k} | {ceiling:.2f} | {b.mean():.2f} | {np.median(b):.2f} | "
                f"{np.quantile(b, 0.9):.2f} | {(b >= ceiling / 2).mean():.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
