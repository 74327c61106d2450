"""``crosslm compare`` and ``crosslm report --baseline``: headline metrics side by side, deltas against the first run,
paired differences of macro-F1 on the same test records, config differences."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.eval.bootstrap import paired_difference
from crosslm_secure.eval.predictions import Predictions
from crosslm_secure.report.compare import compare_runs, markdown
from crosslm_secure.runstore import RunStore
from tests.unit.report.kept_runs import answers, kept_run


def make_run(root: Path, name: str, config: dict, f1: list[float], epsilon: float) -> Path:
    store = RunStore.create(root, name, 0, config)
    for round_index, value in enumerate(f1):
        row = {
            "round": round_index,
            "slm_macro_f1_mean": value,
            "llm_macro_f1": 0.3 + 0.1 * round_index,
            "llm_perplexity": 20.0 + round_index,
            "seconds_round": 10.0,
            "epsilon/client-1": 0.0 if round_index == 0 else epsilon * round_index / (len(f1) - 1),
        }
        if round_index:
            row |= {"synthetic_generated": 10, "synthetic_accepted": 4}
        store.record_round(row)
    return store.root


def test_deltas_are_against_the_first_run_and_config_differences_are_listed(tmp_path: Path) -> None:
    dp = make_run(tmp_path, "dp", {"privacy": {"dp": True}, "run": {"rounds": 2}}, [0.50, 0.60, 0.70], 8.0)
    plain = make_run(tmp_path, "plain", {"privacy": {"dp": False}, "run": {"rounds": 2}}, [0.50, 0.65, 0.80], math.inf)
    comparison = compare_runs([dp, plain])
    assert comparison.metrics["slm_macro_f1_mean"] == [0.70, 0.80]
    assert comparison.deltas["slm_macro_f1_mean"][1] == pytest.approx(0.10)
    assert comparison.metrics["slm_macro_f1_gain"] == pytest.approx([0.20, 0.30])
    assert comparison.metrics["epsilon_max"] == [8.0, math.inf]  # a non-private run spends inf
    assert "| epsilon spent (max over clients) | 8.000 | inf (inf) |" in markdown(comparison)
    assert comparison.metrics["synthetic_acceptance"] == [0.4, 0.4]
    assert comparison.config_differences == {"privacy.dp": ["True", "False"]}


def test_the_command_prints_and_writes_markdown_csv_and_the_curves(tmp_path: Path) -> None:
    first = make_run(tmp_path, "a", {"privacy": {"dp": True}}, [0.5, 0.6], 8.0)
    second = make_run(tmp_path, "b", {"privacy": {"dp": False}, "task": {"name": "other | task"}}, [0.5, 0.4], 0.0)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", str(first), str(second), "--out", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "comparison.md").read_text()
    assert "| SLM macro-F1 (mean, last round) | 0.600 | 0.400 (-0.200) |" in md
    assert "| `task.name` | (unset) | other \\| task |" in md
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    f1 = next(r for r in rows if r["name"] == "slm_macro_f1_mean")
    assert (f1[first.name], f1[second.name], f1[f"delta {second.name}"]) == ("0.600", "0.400", "-0.200")
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "-0.200" in result.output and "wrote " in result.output


def test_a_folder_that_is_not_a_run_is_one_sentence(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nothing")])
    assert result.exit_code != 0
    assert "is not a run folder (no config.yaml); pass runs/<run-id>" in result.output.replace("\n", "")


def test_a_paired_difference_is_the_difference_of_points_with_an_interval_on_the_shared_records(
    tmp_path: Path,
) -> None:
    base_llm, run_llm = answers(90, 3), answers(90, 7, offset=2)
    base = kept_run(tmp_path, "base", [{"llm": base_llm, "client-1": answers(30, 3, prefix="a")}])
    shuffled = Predictions(run_llm.records[::-1], run_llm.labels[::-1], run_llm.predicted[::-1])
    run = kept_run(tmp_path, "run", [{"llm": shuffled, "client-1": answers(30, 9, prefix="a")}])
    comparison = compare_runs([base.root, run.root])
    for key in ("llm_macro_f1", "slm_macro_f1_mean"):
        difference = comparison.paired[key][1]
        assert difference is not None and comparison.paired[key][0] is None
        assert difference.point == pytest.approx(comparison.metrics[key][1] - comparison.metrics[key][0])
        assert difference.low < difference.point < difference.high
    # paired on the records (the run stored them in reverse order), not on positions
    assert comparison.paired["llm_macro_f1"][1] == paired_difference([(run_llm, base_llm)], 3)
    assert comparison.unpaired == [None, None]
    first = comparison.intervals["llm_macro_f1"][0]
    assert first is not None and first.low <= comparison.metrics["llm_macro_f1"][0] <= first.high
    assert f"| LLM macro-F1 (last round) | {first.text()} |" in markdown(comparison)


def test_runs_on_other_test_records_are_compared_without_a_paired_difference_and_say_why(tmp_path: Path) -> None:
    base = kept_run(tmp_path, "base", [{"llm": answers(60, 3)}])
    other = kept_run(tmp_path, "other", [{"llm": answers(60, 3, prefix="x")}])
    comparison = compare_runs([base.root, other.root])
    assert comparison.paired["llm_macro_f1"] == [None, None]
    assert "were evaluated on different test records for llm_macro_f1 (0 of 60 and 60" in str(comparison.unpaired[1])


def test_report_with_a_baseline_on_other_test_records_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    run = kept_run(tmp_path, "run", [{"llm": answers(60, 3)}])
    other = kept_run(tmp_path, "other", [{"llm": answers(59, 3)}])
    result = CliRunner().invoke(app, ["report", str(run.root), "--baseline", str(other.root)])
    assert result.exit_code != 0
    message = " ".join(result.output.split())
    assert "were evaluated on different test records for llm_macro_f1 (59 of 60 and 59 test records are shared)" in (
        message
    )
    assert not (run.root / "summary.md").exists() and not (run.root / "report.html").exists()


def test_report_with_a_baseline_puts_it_beside_the_run_on_the_page(tmp_path: Path) -> None:
    base = kept_run(tmp_path, "base", [{"llm": answers(60, 2)}])
    run = kept_run(tmp_path, "run", [{"llm": answers(60, 2)}, {"llm": answers(60, 6)}])
    result = CliRunner().invoke(app, ["report", str(run.root), "--baseline", str(base.root)])
    assert result.exit_code == 0, result.output
    page = (run.root / "report.html").read_text()
    beside = page[page.index('<section id="baseline">') :].split("</section>", 1)[0]
    difference = paired_difference([(answers(60, 6), answers(60, 2))], 3)
    assert "<td>LLM macro-F1</td><td>" in beside and f"<td>{difference.text(signed=True)}</td>" in beside
    assert f"Against the baseline {base.run_id}" in beside


def test_report_refuses_the_run_itself_as_its_baseline(tmp_path: Path) -> None:
    run = kept_run(tmp_path, "run", [{"llm": answers(30, 3)}])
    result = CliRunner().invoke(app, ["report", str(run.root), "--baseline", str(run.root)])
    assert result.exit_code != 0
    assert f"the baseline is {run.run_id} itself; pass another run as --baseline" in " ".join(result.output.split())
