"""Whole sweeps on tiny models: every cell is a real `crosslm run` process; a failing cell is
reported while the others finish; re-running skips finished cells; results aggregate."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.storage import atomic_write_text, read_jsonl
from crosslm_secure.sweep.aggregate import collect, gains_table, mean_std, summary_table
from crosslm_secure.sweep.execute import cell_command, cell_run_dir, run_state
from crosslm_secure.sweep.spec import load_sweep
from tests.tiny_models import tiny_bert_dir, tiny_llm_dir, write_sentiment_csv

REPO = Path(__file__).resolve().parents[3]
SMOKE = REPO / "experiments" / "sweeps" / "smoke.yaml"


def tiny_job(root: Path) -> list[str]:
    """--set items that put a sweep on tiny random models and a toy CSV (seconds per cell)."""
    data = write_sentiment_csv(root / "notes.csv", 72)
    return [
        "data.source=csv",
        f"data.path={data}",
        "data.text_column=note",
        "data.label_column=outcome",
        f"llm.model={tiny_llm_dir(root)}",
        "llm.lora.r=2",
        "llm.lora.alpha=4",
        f"slm.model={tiny_bert_dir(root)}",
        "slm.max_length=16",
        "slm.batch_size=8",
        "generation.samples_per_label=2",
        "generation.max_new_tokens=12",
        "generation.min_chars=2",
        "generation.batch_size=6",
        "tuning.max_length=48",
        "tuning.batch_size=4",
        "feedback.ckks_preset=n4096",
        "feedback.threshold=0.0",
        "eval.llm_examples=6",
        "eval.perplexity_chunks=1",
        "eval.perplexity_chunk_tokens=16",
        "eval.llm_max_length=64",
        "run.threads=1",
    ]


def sweep_args(spec: Path, out: Path, tiny: list[str]) -> list[str]:
    args = ["sweep", str(spec), "--output", str(out), "--no-progress"]
    for item in tiny:
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("smoke")
    tiny = tiny_job(root)
    out = root / "sweep"
    result = CliRunner().invoke(app, sweep_args(SMOKE, out, tiny))
    return {"root": root, "tiny": tiny, "out": out, "result": result}


def test_the_smoke_sweep_runs_every_cell_as_an_ordinary_run(smoke: dict) -> None:
    assert smoke["result"].exit_code == 0, smoke["result"].output
    cells = sorted((smoke["out"] / "cells").iterdir())
    assert [c.name.rsplit("-", 1)[0] for c in cells] == [
        "crosslm-eps8-s0",
        "crosslm-epsinf-s0",
        "standalone-eps8-s0",
        "standalone-epsinf-s0",
    ]
    for cell in cells:
        run = cell_run_dir(cell)
        assert run is not None and run_state(run) == "finished"
        assert json.loads((cell / "cell.json").read_text())["status"] == "done"
        assert "$ run " in (cell / "log.txt").read_text()
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["run"]["rounds"] == 1 and config["data"]["source"] == "csv"
        assert config["privacy"]["dp"] is ("epsinf" not in cell.name)


def test_results_csv_has_a_row_per_cell_with_every_metric(smoke: dict) -> None:
    rows = list(csv.DictReader((smoke["out"] / "results.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"done"}
    by_cell = {r["cell"].rsplit("-", 1)[0]: r for r in rows}
    assert math.isinf(float(by_cell["crosslm-epsinf-s0"]["epsilon"]))
    assert math.isinf(float(by_cell["crosslm-epsinf-s0"]["epsilon_spent_max"]))
    assert 0 < float(by_cell["crosslm-eps8-s0"]["epsilon_spent_max"]) <= 8.0 + 1e-6
    for row in rows:
        for metric in (
            "slm_accuracy_mean",
            "slm_macro_f1_mean",
            "llm_accuracy",
            "llm_perplexity",
            "round0_llm_accuracy",
        ):
            assert 0 <= float(row[metric]) < math.inf
        assert row["rounds_completed"] == "1"
    # The untuned LLM of standalone is evaluated once; CrossLM's is re-evaluated after tuning.
    assert by_cell["standalone-eps8-s0"]["llm_accuracy"] == by_cell["standalone-eps8-s0"]["round0_llm_accuracy"]
    assert "synthetic_accepted" in by_cell["crosslm-eps8-s0"]


def test_tables_and_plots_come_from_the_real_run_folders(smoke: dict) -> None:
    out = smoke["out"]
    tables = (out / "tables.md").read_text()
    assert "| method | epsilon | n | SLM macro-F1 | LLM macro-F1 | SLM acc | LLM acc | LLM perplexity" in tables
    assert "| crosslm | inf (no DP) | 1 |" in tables and "crosslm - standalone" in tables
    for name in (
        "epsilon_vs_slm_macro_f1_mean",
        "epsilon_vs_llm_macro_f1",
        "epsilon_vs_slm_accuracy_mean",
        "epsilon_vs_llm_accuracy",
        "rounds_vs_macro_f1",
        "rounds_vs_accuracy",
    ):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert not (out / "plots" / "epsilon_vs_mia_slm_auc_mean.png").exists()  # no audit ran
    gains = list(csv.DictReader((out / "gains.csv").open()))
    assert {(g["method"], g["baseline"]) for g in gains} == {("crosslm", "standalone")}  # no data_free_kd cells
    results = collect(out)
    crosslm = next(r for r in results.rows if r["method"] == "crosslm" and r["epsilon"] == 8.0)
    standalone = next(r for r in results.rows if r["method"] == "standalone" and r["epsilon"] == 8.0)
    gain = 100 * (crosslm["slm_macro_f1_mean"] - standalone["slm_macro_f1_mean"])
    shown = f"{gain:+.1f}".replace("-0.0", "+0.0")
    assert f"| 8 | crosslm - standalone | 1 | {shown} |" in gains_table(results)  # one pair: no interval
    # A second seed of each setting turns the table's cells into mean ± std [95% CI] over the seeds.
    twin = [
        dict(r, seed=1, cell=r["cell"] + "-twin", slm_macro_f1_mean=r["slm_macro_f1_mean"] + 0.1) for r in results.rows
    ]
    results.rows += twin
    mean, std, n = mean_std([crosslm["slm_macro_f1_mean"], crosslm["slm_macro_f1_mean"] + 0.1])
    assert n == 2 and std == pytest.approx(0.0707, abs=1e-4)
    half = 12.7062 * std / math.sqrt(2)  # t_{0.975, 1}
    cell = f"{mean:.3f} ± {std:.3f} [{mean - half:.3f}, {mean + half:.3f}]"
    assert f"| crosslm | 8 | 2 | {cell} |" in summary_table(results)
    assert "| 8 | crosslm - standalone | 2 |" in gains_table(results)


def test_rerunning_skips_finished_cells(smoke: dict) -> None:
    logs = {p: p.read_text() for p in (smoke["out"] / "cells").glob("*/log.txt")}
    runs = sorted((smoke["out"] / "cells").glob("*/runs/*"))
    again = CliRunner().invoke(app, sweep_args(SMOKE, smoke["out"], smoke["tiny"]))
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped") == 4
    assert {p: p.read_text() for p in logs} == logs  # no process was started
    assert sorted((smoke["out"] / "cells").glob("*/runs/*")) == runs


def test_a_partial_run_is_resumed_and_an_empty_one_restarted(smoke: dict, tmp_path: Path) -> None:
    sweep = load_sweep(SMOKE, extra_set=smoke["tiny"], output_dir=smoke["out"])
    cell = sweep.cells()[0]
    finished = next((smoke["out"] / "cells").glob(f"*-{cell.config_hash}"))
    copy = tmp_path / finished.name
    shutil.copytree(finished, copy)
    run = cell_run_dir(copy)
    events = [e for e in read_jsonl(run / "events.jsonl") if e["event"] != "run_finished"]
    atomic_write_text(run / "events.jsonl", "".join(json.dumps(e) + "\n" for e in events))
    argv, state = cell_command(sweep, cell, copy)
    assert state == "partial" and argv[-3:] == ["run", "--resume", str(run)]
    (run / "state.json").unlink()
    argv, state = cell_command(sweep, cell, copy)
    assert state == "empty" and not run.exists()  # nothing to resume from: start over
    assert argv[3:5] == ["run", str(sweep.base_config)] and f"run.output_dir={copy / 'runs'}" in argv


def test_a_failing_cell_is_reported_and_the_others_finish(smoke: dict, tmp_path: Path) -> None:
    good = next(i.split("=", 1)[1] for i in smoke["tiny"] if i.startswith("data.path="))
    spec = tmp_path / "mixed.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "mixed",
                "base_config": str(REPO / "experiments" / "configs" / "quick.yaml"),
                "max_parallel": 1,
                "set": {"run.rounds": 1, "run.method": "standalone"},
                "grid": {"data.path": [str(tmp_path / "missing.csv"), good]},
            },
            sort_keys=False,
        )
    )
    tiny = [i for i in smoke["tiny"] if not i.startswith("data.path=")]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, sweep_args(spec, out, tiny))
    assert result.exit_code == 1
    assert "1 of 2 cells failed" in result.output and "FAILED" in result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["status"] for r in rows] == ["failed", "done"]  # grid order: the missing file first
    assert "missing.csv" in rows[0]["error"] and float(rows[1]["slm_accuracy_mean"]) >= 0
    assert "Cells not finished" in (out / "tables.md").read_text()
    status = json.loads((out / "status.json").read_text())
    assert status["failed"] == 1


def test_report_re_aggregates_a_sweep_folder_and_refuses_other_folders(smoke: dict, tmp_path: Path) -> None:
    (smoke["out"] / "results.csv").unlink()
    result = CliRunner().invoke(app, ["sweep", "report", str(smoke["out"])])
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader((smoke["out"] / "results.csv").open()))) == 4
    refused = CliRunner().invoke(app, ["sweep", "report", str(tmp_path)])
    assert refused.exit_code == 2 and "holds no cells.json" in refused.output


def test_audits_in_a_sweep_add_attack_numbers_verdicts_and_the_mia_plot(smoke: dict, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    shutil.copytree(smoke["out"], out)  # the finished cells are reused; only the audits run
    raw = yaml.safe_load(SMOKE.read_text())
    raw["base_config"] = str((SMOKE.parent / raw["base_config"]).resolve())
    raw["audits"] = ["mia"]
    raw["grid"]["run.method"] = ["crosslm"]  # two of the four finished cells: eps 8 and inf
    spec = tmp_path / "smoke-mia.yaml"
    spec.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, sweep_args(spec, out, smoke["tiny"]))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"}
    assert sorted(float(r["epsilon"]) for r in rows) == [8, math.inf]
    for row in rows:
        assert 0 <= float(row["mia_slm_auc_mean"]) <= 1 and row["mia_verdict"] in {"pass", "fail"}
        cell = out / "cells" / row["cell"]
        assert json.loads((cell / "cell.json").read_text())["audit_error"] is None
        assert (cell_run_dir(cell) / "audit" / "mia.json").is_file()
    assert (out / "plots" / "epsilon_vs_mia_slm_auc_mean.png").stat().st_size > 1000


def test_a_cell_another_sweep_is_running_is_left_alone(smoke: dict) -> None:
    import fcntl

    from crosslm_secure.sweep.execute import LOCK_FILE, _Processes, cell_folder, run_cell

    sweep = load_sweep(SMOKE, extra_set=smoke["tiny"], output_dir=smoke["out"])
    cell = sweep.cells()[0]
    folder = cell_folder(sweep, cell)
    before = (folder / "cell.json").read_text()
    with open(folder / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        outcome = run_cell(sweep, cell, _Processes())
    assert outcome.status == "failed" and "another sweep process is running this cell" in outcome.error
    assert (folder / "cell.json").read_text() == before
    assert run_cell(sweep, cell, _Processes()).status == "skipped"  # lock released: finished, so skipped


def test_a_finished_cell_is_still_found_after_a_config_field_is_added(smoke: dict, tmp_path: Path) -> None:
    from crosslm_secure.sweep.execute import cell_folder

    sweep = load_sweep(SMOKE, extra_set=smoke["tiny"], output_dir=tmp_path / "sweep")
    cell = sweep.cells()[0]
    finished = next((smoke["out"] / "cells").glob(f"*-{cell.config_hash}"))
    renamed = sweep.cells_dir / "from-an-older-version-0000000000"
    shutil.copytree(finished, renamed)
    config_file = cell_run_dir(renamed) / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    del config["audit"]  # the run predates the audit section
    config_file.write_text(yaml.safe_dump(config))
    assert cell_folder(sweep, cell) == renamed
    config["run"]["seed"] = 7  # a real difference is not waved through
    config_file.write_text(yaml.safe_dump(config))
    assert cell_folder(sweep, cell) == sweep.cells_dir / cell.cell_id
