"""experiments/records_curve.py: pairing CrossLM with standalone by task, records per class and seed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def _script():
    spec = importlib.util.spec_from_file_location("records_curve", ROOT / "experiments" / "records_curve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


curve = _script()


def write_run(
    root: Path, name: str, *, method: str, seed: int, records: int | None, values: list[float], eps: float = 8.0
):
    """A finished run's two files: config.yaml and one metrics.csv row per round."""
    folder = root / name / "run"
    folder.mkdir(parents=True)
    config = {
        "run": {"name": "movies", "seed": seed, "method": method, "output_dir": str(root / name), "rounds": 2},
        "partition": {"records_per_class": records, "clients": 3},
        "privacy": {"target_epsilon": eps},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rows = "\n".join(f"{r},{v}" for r, v in enumerate(values))
    (folder / "metrics.csv").write_text(f"round,slm_macro_f1_mean\n{rows}\n")


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    for seed, (cl, sa) in enumerate([(0.60, 0.50), (0.58, 0.52), (0.49, 0.51)]):
        write_run(tmp_path, f"cl16-{seed}", method="crosslm", seed=seed, records=16, values=[0.3, 0.4, cl])
        write_run(tmp_path, f"sa16-{seed}", method="standalone", seed=seed, records=16, values=[0.3, 0.4, sa])
        write_run(tmp_path, f"kd16-{seed}", method="data_free_kd", seed=seed, records=16, values=[0.3, 0.4, 0.9])
    write_run(tmp_path, "cl8-0", method="crosslm", seed=0, records=8, values=[0.2, 0.3, 0.45])
    write_run(tmp_path, "sa8-0", method="standalone", seed=0, records=8, values=[0.2, 0.3, 0.40])
    write_run(tmp_path, "cl8-1", method="crosslm", seed=1, records=8, values=[0.2, 0.3, 0.45])
    write_run(tmp_path, "sa8-1", method="standalone", seed=1, records=8, values=[0.2, 0.3])  # still running
    (tmp_path / "sweep-table").mkdir()
    (tmp_path / "sweep-table" / "metrics.csv").write_text("round,slm_macro_f1_mean\n2,0.99\n")  # no config: not a run
    return tmp_path


def test_gains_pair_the_final_round_by_seed_and_leave_unfinished_runs_and_other_methods_out(runs: Path) -> None:
    rows = curve.gains(curve.collect([runs]))
    assert [(r["task"], r["records"], r["n"], r["ahead"]) for r in rows] == [("movies", 8, 1, 1), ("movies", 16, 3, 2)]
    assert rows[0]["mean"] == pytest.approx(5.0)
    assert rows[1]["mean"] == pytest.approx((10 + 6 - 2) / 3)
    assert rows[1]["low"] < rows[1]["mean"] < rows[1]["high"], "three paired seeds give an interval"


def test_two_runs_of_one_cell_or_different_settings_are_refused(runs: Path, tmp_path_factory) -> None:
    write_run(runs, "cl8-0-again", method="crosslm", seed=0, records=8, values=[0.2, 0.3, 0.5])
    with pytest.raises(SystemExit, match="are both"):
        curve.collect([runs])
    unset = tmp_path_factory.mktemp("unset")
    write_run(unset, "a", method="crosslm", seed=0, records=None, values=[0.4])
    with pytest.raises(SystemExit, match="no partition.records_per_class"):
        curve.collect([unset])
    other = tmp_path_factory.mktemp("other")
    write_run(other, "a", method="crosslm", seed=0, records=8, values=[0.4])
    write_run(other, "b", method="standalone", seed=0, records=8, values=[0.4], eps=1.0)
    with pytest.raises(SystemExit, match="differ in more than method"):
        curve.collect([other])


def test_values_join_the_runs_and_a_seed_in_both_is_refused(runs: Path) -> None:
    extra = {"drug": {"16": {"crosslm": {"0": 0.4}, "standalone": {"0": 0.3}}}}
    rows = curve.gains(curve.merge(curve.collect([runs]), extra))
    assert ("drug", 16, 1) in [(r["task"], r["records"], r["n"]) for r in rows]
    with pytest.raises(SystemExit, match=r"seeds \['0'\]"):
        curve.merge(curve.collect([runs]), {"movies": {"16": {"crosslm": {"0": 0.7}}}})


def test_main_writes_the_values_and_the_plot(runs: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out" / "records_curve"
    monkeypatch.setattr(sys, "argv", ["records_curve.py", str(runs), "--out", str(out)])
    curve.main()
    assert json.loads(out.with_suffix(".json").read_text()) == curve.collect([runs])
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr()
    assert "| movies | 16 | 3 |" in printed.out
    assert "sa8-1" in printed.err and "has not finished" in printed.err
