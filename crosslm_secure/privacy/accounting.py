"""Privacy accounting: epsilon of a composed history of Gaussian mechanisms.

Every release a client makes is a (possibly Poisson-subsampled) Gaussian mechanism:
DP-SGD steps have ``sample_rate = B / n``; a score release is the unsubsampled case
``sample_rate = 1`` with ``noise_multiplier = sigma / sensitivity``. A history is a list
of such blocks, and one small interface turns it into epsilon, over Opacus's PRV
(default, tight) or RDP accountant, so the two swap without touching callers.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from crosslm_secure.errors import PrivacyError

ACCOUNTANTS = ("prv", "rdp")


@dataclass(frozen=True)
class MechanismBlock:
    """``steps`` compositions of a Gaussian mechanism with Poisson rate ``sample_rate``."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise PrivacyError(f"accounting: noise_multiplier must be a positive number (got {self.noise_multiplier})")
        if not 0 < self.sample_rate <= 1:
            raise PrivacyError(f"accounting: sample_rate must be in (0, 1] (got {self.sample_rate})")
        if self.steps < 0:
            raise PrivacyError(f"accounting: steps must be >= 0 (got {self.steps})")


class Accountant(Protocol):
    """Turns a history into epsilon at a given delta."""

    name: str

    def epsilon(self, history: Sequence[MechanismBlock], delta: float) -> float:
        """Epsilon of the composition of ``history`` at ``delta`` (0 for no history)."""
        ...


class OpacusAccountant:
    """Opacus's PRV or RDP accountant behind :class:`Accountant`.

    Args:
        name: ``prv`` or ``rdp``.
        eps_error: PRV only: allowed error of the epsilon upper bound.

    Raises:
        PrivacyError: unknown accountant name.
    """

    def __init__(self, name: str, *, eps_error: float = 0.01) -> None:
        if name not in ACCOUNTANTS:
            raise PrivacyError(f"accounting: unknown accountant {name!r}; use one of {ACCOUNTANTS}")
        self.name = name
        self.eps_error = eps_error

    def epsilon(self, history: Sequence[MechanismBlock], delta: float) -> float:
        if not 0 < delta < 1:
            raise PrivacyError(f"accounting: delta must be in (0, 1) (got {delta})")
        blocks = merge_history(history)
        if not blocks:
            return 0.0
        key = tuple((b.noise_multiplier, b.sample_rate, b.steps) for b in blocks)
        return _opacus_epsilon(self.name, self.eps_error, key, delta)


@functools.lru_cache(maxsize=256)
def _opacus_epsilon(name: str, eps_error: float, history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    # Cached: a round asks for the same history several times (budget check, ledger
    # entry, report), and PRV/RDP each take up to a second on a CPU.
    from opacus.accountants import create_accountant  # lazy: opacus imports torch (seconds), and the CLI must not

    accountant = create_accountant(mechanism=name)
    accountant.history = list(history)
    kwargs = {"eps_error": eps_error} if name == "prv" else {}
    # sample_rate = 1 makes PRV take log(0) on a branch it then masks out, and RDP warns
    # when its best order is the largest; neither changes the bound.
    with _known_warnings_quiet():
        return float(accountant.get_epsilon(delta=delta, **kwargs))


@contextlib.contextmanager
def _known_warnings_quiet() -> Iterator[None]:
    """Silence only what the accountants are known to say about a bound they still compute right.

    PRV takes log(0) on a branch it masks out when the sample rate is 1 (numpy's divide and
    invalid), and RDP warns when its best order is the largest or smallest it tried. Any other
    warning, such as a new one from an Opacus upgrade, still reaches the user.
    """
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.filterwarnings("ignore", message=r"Optimal order is the (largest|smallest) alpha")
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=r"(divide by zero|invalid value)")
        yield


def accountant_for(name: str) -> Accountant:
    """The accountant called ``name`` (``prv`` or ``rdp``)."""
    return OpacusAccountant(name)


def merge_history(history: Iterable[MechanismBlock]) -> list[MechanismBlock]:
    """Group blocks with the same (noise_multiplier, sample_rate), summing their steps.

    Composition is commutative, so this changes no epsilon; it keeps PRV's
    discretization as small as Opacus's own step-by-step history would.
    """
    steps: dict[tuple[float, float], int] = {}
    for block in history:
        if block.steps:
            key = (block.noise_multiplier, block.sample_rate)
            steps[key] = steps.get(key, 0) + block.steps
    return [MechanismBlock(sigma, q, k) for (sigma, q), k in steps.items()]


def epsilon(history: Sequence[MechanismBlock], delta: float, accountant: str = "prv") -> float:
    """Epsilon of ``history`` at ``delta`` with the named accountant."""
    return accountant_for(accountant).epsilon(history, delta)


def noise_multiplier_for(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv"
) -> float:
    """The smallest noise multiplier (within Opacus's search tolerance) such that ``steps``
    DP-SGD steps at ``sample_rate`` spend at most ``target_epsilon`` at ``delta``.

    Raises:
        PrivacyError: no noise multiplier below 1e6 reaches the target, or bad inputs.
    """
    if steps < 1:
        raise PrivacyError(f"accounting: planned steps must be >= 1 (got {steps})")
    MechanismBlock(1.0, sample_rate, steps)  # validates sample_rate
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(f"accounting: unknown accountant {accountant!r}; use one of {ACCOUNTANTS}")
    try:
        return _calibrated(float(target_epsilon), float(delta), float(sample_rate), int(steps), accountant)
    except ValueError:
        raise PrivacyError(
            f"privacy.target_epsilon {target_epsilon} is out of reach for {steps} steps at "
            f"sample rate {sample_rate:.4g}; raise it or plan fewer rounds/epochs"
        ) from None


@functools.lru_cache(maxsize=256)
def _calibrated(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """Opacus's noise search, kept per argument tuple: it is deterministic, takes about half a
    second, and a run, an audit and a report ask it the same question once per client."""
    from opacus.accountants.utils import get_noise_multiplier  # lazy: see _opacus_epsilon

    with _known_warnings_quiet():
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        )


def steps_per_epoch(sample_rate: float) -> int:
    """Poisson draws per epoch, as Opacus's sampler makes them: ``int(1 / q)``."""
    return max(1, int(1 / sample_rate))
