"""95% t-intervals over seeds, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from crosslm_secure.sweep.intervals import (
    Interval,
    format_interval,
    mean_interval,
    paired_differences,
    t_quantile_975,
)


def test_the_t_quantile_comes_from_the_table_up_to_30_degrees_of_freedom() -> None:
    assert t_quantile_975(1) == 12.7062
    assert t_quantile_975(2) == 4.3027
    assert t_quantile_975(10) == 2.2281
    assert t_quantile_975(30) == 2.0423


def test_past_the_table_the_quantile_keeps_falling_towards_the_normal_one() -> None:
    assert t_quantile_975(31) == pytest.approx(2.0395, abs=1e-4)  # Student's t, df 31
    assert t_quantile_975(40) == pytest.approx(2.0211, abs=1e-4)
    assert t_quantile_975(120) == pytest.approx(1.9799, abs=1e-4)
    assert t_quantile_975(10**6) == pytest.approx(1.96, abs=1e-4)
    values = [t_quantile_975(df) for df in range(1, 200)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_zero_degrees_of_freedom_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 degree of freedom"):
        t_quantile_975(0)


def test_differences_1_2_3_give_mean_2_and_half_width_t2_over_root_3() -> None:
    interval = mean_interval([1.0, 2.0, 3.0])
    assert interval.n == 3 and interval.mean == 2.0 and interval.std == 1.0
    assert interval.half_width == pytest.approx(4.3027 / math.sqrt(3))
    assert (interval.low, interval.high) == pytest.approx((2 - 2.48417, 2 + 2.48417), abs=1e-5)


def test_two_values_use_one_degree_of_freedom() -> None:
    interval = mean_interval([0.50, 0.54])
    assert interval.mean == pytest.approx(0.52)
    assert interval.half_width == pytest.approx(12.7062 * (0.04 / math.sqrt(2)) / math.sqrt(2))


def test_one_value_has_a_mean_but_no_interval_and_none_has_neither() -> None:
    one = mean_interval([0.7])
    assert one.mean == 0.7 and one.n == 1 and math.isnan(one.half_width) and math.isnan(one.std)
    empty = mean_interval([])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_missing_and_nan_values_are_skipped_and_infinity_leaves_no_interval() -> None:
    assert mean_interval([1.0, None, math.nan, "x", True, 3.0]).mean == 2.0
    assert mean_interval([1.0, None, math.nan, 3.0]).n == 2
    infinite = mean_interval([8.0, math.inf])
    assert math.isinf(infinite.mean) and math.isnan(infinite.half_width) and infinite.n == 2


def test_differences_are_paired_by_seed_and_unpaired_seeds_are_left_out() -> None:
    method = {2: 0.60, 0: 0.52, 1: 0.50, 3: 0.9}
    baseline = {0: 0.50, 1: 0.49, 2: 0.57, 4: 0.1, 3: None}
    assert paired_differences(method, baseline, scale=100) == pytest.approx([2.0, 1.0, 3.0])


def test_a_gain_reads_as_signed_mean_and_bounds() -> None:
    assert format_interval(mean_interval([1.0, 2.0, 3.0]), decimals=1, signed=True) == "+2.0 [-0.5, +4.5]"
    assert format_interval(mean_interval([-1.0, -2.0, -3.0]), decimals=1, signed=True) == "-2.0 [-4.5, +0.5]"
    assert format_interval(mean_interval([5.0]), decimals=1, signed=True) == "+5.0"
    assert format_interval(mean_interval([-0.01, -0.02]), decimals=1, signed=True) == "+0.0 [-0.1, +0.0]"


def test_a_summary_cell_reads_as_mean_std_and_bounds() -> None:
    assert format_interval(mean_interval([1.0, 2.0, 3.0]), std=True) == "2.000 ± 1.000 [-0.484, 4.484]"
    assert format_interval(Interval(math.nan, math.nan, math.nan, 0)) == "-"
    assert format_interval(mean_interval([math.inf, 1.0]), std=True) == "inf"
