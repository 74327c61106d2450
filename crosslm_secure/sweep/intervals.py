"""95% confidence intervals over seeds: the t-interval of a mean and of a paired difference.

Pure functions, no SciPy (it is not a dependency). The two-sided 95% quantile of Student's t,
t_{0.975, df}, comes from a table for df 1..30 (SciPy 1.17's ``t.ppf(0.975, df)`` rounded to
4 decimals) and, past 30, from the Cornish-Fisher expansion of t around the normal quantile
1.959964 (three terms; off by less than 1e-5 for df >= 30 and tending to 1.96).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
"""t_{0.975, df} for df = 1..30 (index df - 1)."""

Z_975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the multiplier of the standard error in a two-sided 95% t-interval.

    Raises:
        ValueError: ``df`` is below 1.
    """
    if df < 1:
        raise ValueError(f"a t-interval needs at least 1 degree of freedom (got {df})")
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its 95% t-interval ``mean ± half_width``.

    ``half_width`` is NaN when no interval exists (fewer than two values, or an infinite one);
    ``mean`` is NaN when there are no values.
    """

    mean: float
    std: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_interval(values: Iterable[Any]) -> Interval:
    """Mean, sample std and 95% t-interval of the finite numbers in ``values`` (others are skipped).

    An infinite value (epsilon = inf) makes the mean infinite and leaves no interval.
    """
    numbers = [float(v) for v in values if _is_number(v) and not math.isnan(float(v))]
    if not numbers:
        return Interval(math.nan, math.nan, math.nan, 0)
    if any(math.isinf(v) for v in numbers):
        return Interval(math.fsum(numbers) / len(numbers), math.nan, math.nan, len(numbers))
    mean = math.fsum(numbers) / len(numbers)
    if len(numbers) < 2:
        return Interval(mean, math.nan, math.nan, 1)
    std = statistics.stdev(numbers)
    half_width = t_quantile_975(len(numbers) - 1) * std / math.sqrt(len(numbers))
    return Interval(mean, std, half_width, len(numbers))


def paired_differences(method: Mapping[Any, Any], baseline: Mapping[Any, Any], *, scale: float = 1.0) -> list[float]:
    """``scale * (method[seed] - baseline[seed])`` for every seed both have a number for, by seed."""
    seeds = sorted(k for k in set(method) & set(baseline) if _is_number(method[k]) and _is_number(baseline[k]))
    return [scale * (float(method[k]) - float(baseline[k])) for k in seeds]


def format_interval(interval: Interval, *, decimals: int = 3, signed: bool = False, std: bool = False) -> str:
    """``+2.0 [-2.3, +6.3]`` (mean and 95% CI); with ``std``, ``0.654 ± 0.012 [0.546, 0.762]``.

    One value shows the mean alone, none shows ``-``, an infinite mean ``inf``.
    """
    if interval.n == 0:
        return "-"
    if math.isinf(interval.mean):
        return "inf"

    def number(value: float) -> str:
        value = 0.0 if round(value, decimals) == 0 else value  # no "-0.0"
        return format(value, f"{'+' if signed else ''}.{decimals}f")

    text = number(interval.mean)
    if std and not math.isnan(interval.std):
        text += f" ± {interval.std:.{decimals}f}"
    if not math.isnan(interval.half_width):
        text += f" [{number(interval.low)}, {number(interval.high)}]"
    return text


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
