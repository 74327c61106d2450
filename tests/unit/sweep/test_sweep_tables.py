"""The sweep's tables from hand-made cell rows: macro-F1 leads, task metrics carry 95% CIs, and
methods are compared pairwise by seed with a t-interval on the mean difference."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from crosslm_secure.sweep.aggregate import (
    GAINS_CSV,
    SweepResults,
    comparisons,
    gains_table,
    paired_gains,
    summary_table,
    write_results,
)

GRID = ["run.seed", "run.method", "privacy.target_epsilon"]
BASELINES = ["standalone", "data_free_kd"]
# Final-round SLM macro-F1 per method and seed (0, 1, 2), chosen so the paired differences in
# points are crosslm - standalone = [1, 2, 3], crosslm - data_free_kd = [0, 2, 4],
# data_free_kd - standalone = [1, 0, -1].
SLM_F1 = {
    "crosslm": [0.50, 0.52, 0.54],
    "standalone": [0.49, 0.50, 0.51],
    "data_free_kd": [0.50, 0.50, 0.50],
}


def cell(method: str, seed: int, epsilon: float = 8.0, **metrics: float) -> dict:
    row = {
        "cell": f"{method}-eps{epsilon:g}-s{seed}",
        "run.seed": seed,
        "run.method": method,
        "privacy.target_epsilon": epsilon,
        "status": "done",
        "method": method,
        "seed": seed,
        "epsilon": epsilon,
        "slm_macro_f1_mean": SLM_F1[method][seed],
        "slm_accuracy_mean": 0.64,
        "llm_macro_f1": 0.30 + 0.01 * seed,
        "llm_accuracy": 0.70,
        "seconds": 100.0 + 10 * seed,
    }
    return row | metrics


def sweep(rows: list[dict], baselines: list[str] = BASELINES) -> SweepResults:
    return SweepResults("t", GRID, "privacy.target_epsilon", baselines, rows)


def full_sweep() -> SweepResults:
    return sweep([cell(m, s) for s in range(3) for m in SLM_F1])


def test_crosslm_is_compared_with_each_baseline_and_each_baseline_with_the_earlier_ones() -> None:
    assert comparisons(["standalone", "data_free_kd"]) == [
        ("crosslm", "standalone"),
        ("crosslm", "data_free_kd"),
        ("data_free_kd", "standalone"),
    ]
    assert comparisons(["standalone"]) == [("crosslm", "standalone")]


def test_paired_gains_have_the_hand_computed_means_and_t_intervals() -> None:
    gains = {(g.method, g.baseline): g.gain for g in paired_gains(full_sweep()) if g.metric == "slm_macro_f1_mean"}
    assert set(gains) == {("crosslm", "standalone"), ("crosslm", "data_free_kd"), ("data_free_kd", "standalone")}
    half = 4.3027 / math.sqrt(3)  # t_{0.975, 2} * std / sqrt(n) with std = 1
    assert gains["crosslm", "standalone"].mean == pytest.approx(2.0)
    assert gains["crosslm", "standalone"].half_width == pytest.approx(half)
    assert gains["crosslm", "data_free_kd"].mean == pytest.approx(2.0)
    assert gains["crosslm", "data_free_kd"].half_width == pytest.approx(2 * half)
    assert gains["data_free_kd", "standalone"].mean == pytest.approx(0.0, abs=1e-9)
    assert all(g.n == 3 for g in gains.values())


def test_the_gains_table_puts_macro_f1_first_and_shows_each_comparison_with_its_interval() -> None:
    table = gains_table(full_sweep())
    lines = table.splitlines()
    assert lines[0] == (
        "| epsilon | comparison | pairs | SLM macro-F1 gain | LLM macro-F1 gain | SLM acc gain | LLM acc gain |"
    )
    assert lines[2].startswith("| 8 | crosslm - standalone | 3 | +2.0 [-0.5, +4.5] | +0.0 [+0.0, +0.0] |")
    assert lines[3].startswith("| 8 | crosslm - data_free_kd | 3 | +2.0 [-3.0, +7.0] |")
    assert lines[4].startswith("| 8 | data_free_kd - standalone | 3 | +0.0 [-2.5, +2.5] |")
    assert len(lines) == 5


def test_only_seeds_both_methods_finished_are_paired() -> None:
    rows = [cell(m, s) for s in range(3) for m in ("crosslm", "standalone")]
    rows[-1]["status"] = "failed"  # standalone seed 2
    table = gains_table(sweep(rows))
    assert "| 8 | crosslm - standalone | 2 | +1.5 [-4.9, +7.9] |" in table  # differences [1, 2]
    assert "data_free_kd" not in table  # not in this sweep: no comparison is invented


def test_settings_are_compared_separately() -> None:
    rows = [cell(m, s) for s in range(3) for m in ("crosslm", "standalone")]
    rows += [cell(m, s, epsilon=math.inf) for s in range(2) for m in ("crosslm", "standalone")]
    table = gains_table(sweep(rows, ["standalone"]))
    assert "| 8 | crosslm - standalone | 3 |" in table
    assert "| inf (no DP) | crosslm - standalone | 2 | +1.5 [-4.9, +7.9] |" in table


def test_a_metric_with_fewer_pairs_says_how_many() -> None:
    rows = [cell(m, s) for s in range(3) for m in ("crosslm", "standalone")]
    del rows[0]["llm_macro_f1"]  # crosslm seed 0 lacks it
    table = gains_table(sweep(rows, ["standalone"]))
    assert "| 8 | crosslm - standalone | 3 | +2.0 [-0.5, +4.5] | +0.0 [+0.0, +0.0] (n=2) |" in table


def test_no_method_in_the_grid_means_no_gains() -> None:
    rows = [cell("crosslm", s) for s in range(3)]
    results = SweepResults("t", ["run.seed"], "privacy.target_epsilon", BASELINES, rows)
    assert paired_gains(results) == [] and gains_table(results) == ""


def test_the_summary_table_leads_with_macro_f1_and_gives_task_metrics_a_ci() -> None:
    lines = summary_table(full_sweep()).splitlines()
    assert lines[0] == "| method | epsilon | n | SLM macro-F1 | LLM macro-F1 | SLM acc | LLM acc | cell s |"
    crosslm = next(line for line in lines if line.startswith("| crosslm |"))
    # SLM macro-F1 0.50, 0.52, 0.54: mean 0.52, std 0.02, half width 4.3027 * 0.02 / sqrt(3) = 0.0497
    assert crosslm.startswith("| crosslm | 8 | 3 | 0.520 ± 0.020 [0.470, 0.570] |")
    assert crosslm.endswith("| 110 ± 10 |")  # cell seconds: mean ± std, no interval


def test_judge_agreement_columns_appear_when_the_rounds_carry_them() -> None:
    assert "judge agrees" not in summary_table(full_sweep())
    rows = [
        cell(m, s, synthetic_judge_agreement_accepted=0.9, synthetic_judge_agreement_rejected=0.4 + 0.1 * s)
        for s in range(2)
        for m in ("crosslm", "standalone")
    ]
    lines = summary_table(sweep(rows)).splitlines()
    assert lines[0].endswith("| LLM acc | judge agrees (kept) | judge agrees (dropped) | cell s |")
    assert lines[2].endswith("| 0.900 ± 0.000 | 0.450 ± 0.071 | 105 ± 7 |")


def test_write_results_writes_the_gains_to_tables_md_and_gains_csv(tmp_path: Path) -> None:
    paths = write_results(tmp_path, full_sweep())
    tables = paths["tables"].read_text()
    assert "## Paired gains" in tables and "| 8 | data_free_kd - standalone | 3 |" in tables
    assert tables.index("| method | epsilon | n | SLM macro-F1") < tables.index("## Paired gains")
    rows = list(csv.DictReader(paths["gains"].open()))
    assert len(rows) == 3 * 4  # three comparisons x four task metrics
    first = rows[0]
    assert (first["method"], first["baseline"], first["metric"], first["pairs"]) == (
        "crosslm",
        "standalone",
        "slm_macro_f1_mean",
        "3",
    )
    assert float(first["gain_points"]) == pytest.approx(2.0)
    assert float(first["ci95_low_points"]) == pytest.approx(2 - 4.3027 / math.sqrt(3))
    assert float(first["ci95_high_points"]) == pytest.approx(2 + 4.3027 / math.sqrt(3))
    assert first["privacy.target_epsilon"] == "8.0"


def test_a_gains_csv_left_from_an_earlier_report_is_removed_when_nothing_pairs_up(tmp_path: Path) -> None:
    write_results(tmp_path, full_sweep())
    assert (tmp_path / GAINS_CSV).is_file()
    paths = write_results(tmp_path, sweep([cell("crosslm", s) for s in range(3)]))
    assert "gains" not in paths and not (tmp_path / GAINS_CSV).exists()
    assert "## Paired gains" not in paths["tables"].read_text()


def test_the_ablations_are_rows_of_the_table_and_compared_with_crosslm_by_seed() -> None:
    f1 = {"crosslm_no_feedback": [0.49, 0.50, 0.51], "crosslm_random_feedback": [0.50, 0.51, 0.52]}
    rows = [cell("crosslm", s) for s in range(3)]
    rows += [
        cell("crosslm", s) | {"run.method": m, "method": m, "slm_macro_f1_mean": f1[m][s]} for m in f1 for s in range(3)
    ]
    results = sweep(rows, baselines=list(f1))
    table = summary_table(results)
    assert "| crosslm_no_feedback |" in table and "| crosslm_random_feedback |" in table
    gains = {(g.method, g.baseline): g.gain for g in paired_gains(results) if g.metric == "slm_macro_f1_mean"}
    assert gains["crosslm", "crosslm_no_feedback"].mean == pytest.approx(2.0)  # [1, 2, 3] points
    assert gains["crosslm", "crosslm_random_feedback"].mean == pytest.approx(1.0)  # [0, 1, 2]
    assert gains["crosslm_random_feedback", "crosslm_no_feedback"].mean == pytest.approx(1.0)


def test_a_bundle_of_fields_is_one_readable_setting_of_the_table() -> None:
    scarce = {"partition.records_per_class": 8, "data.max_train_records": None}
    skewed = {"partition.scheme": "dirichlet", "partition.alpha": 0.1}
    rows = [cell(m, s) | {"sites": sites} for sites in (scarce, skewed) for m in SLM_F1 for s in range(3)]
    results = SweepResults("t", ["run.seed", "sites", "run.method"], "privacy.target_epsilon", BASELINES, rows)
    table = summary_table(results)
    assert table.count("| max_train_records=None records_per_class=8 |") == 3  # one line per method
    assert table.count("| alpha=0.1 scheme=dirichlet |") == 3
    gains = paired_gains(results)
    assert {g.setting["sites"] for g in gains} == {
        "max_train_records=None records_per_class=8",
        "alpha=0.1 scheme=dirichlet",
    }
