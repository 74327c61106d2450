"""Sweep files: a grid expands into validated cells; bad files are refused in one sentence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from crosslm_secure.errors import CrossLMError
from crosslm_secure.sweep.spec import SweepError, load_sweep

REPO = Path(__file__).resolve().parents[3]


def write_sweep(tmp_path: Path, **fields) -> Path:
    raw = {"name": "t", "base_config": str(REPO / "experiments/configs/quick.yaml"), "grid": {"run.seed": [0, 1]}}
    raw.update(fields)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_grid_expands_to_every_combination_and_inf_turns_dp_off(tmp_path: Path) -> None:
    grid = {"run.method": ["crosslm", "standalone"], "privacy.target_epsilon": [1, "inf"], "run.seed": [0, 1]}
    sweep = load_sweep(write_sweep(tmp_path, grid=grid, set={"run.rounds": 1}))
    cells = sweep.cells()
    assert len(cells) == 8
    assert len({c.cell_id for c in cells}) == 8
    no_dp = [c for c in cells if math.isinf(c.values["privacy.target_epsilon"])]
    assert len(no_dp) == 4 and all("privacy.dp=false" in c.overrides for c in no_dp)
    private = [c for c in cells if c.values["privacy.target_epsilon"] == 1.0]
    assert all("privacy.target_epsilon=1.0" in c.overrides and "privacy.dp=true" in c.overrides for c in private)
    assert all("run.rounds=1" in c.overrides for c in cells)
    assert cells[0].slug == "crosslm-eps1-s0" and cells[-1].slug == "standalone-epsinf-s1"


def test_identical_configs_get_identical_cells_across_sweeps(tmp_path: Path) -> None:
    one = load_sweep(write_sweep(tmp_path / "a", grid={"run.method": ["crosslm"], "run.seed": [0, 1]}))
    two = load_sweep(write_sweep(tmp_path / "b", grid={"run.seed": [1, 2]}, set={"run.method": "crosslm"}))
    assert one.cells()[1].config_hash == two.cells()[0].config_hash
    changed = load_sweep(write_sweep(tmp_path / "c", grid={"run.seed": [1]}, set={"run.rounds": 5}))
    assert changed.cells()[0].config_hash != one.cells()[1].config_hash


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"grid": {}}, "grid is empty"),
        ({"grid": {"run.seed": []}}, "run.seed has no values"),
        ({"grid": {"privacy.target_epsilonn": [1]}}, "privacy.target_epsilonn is not a config field"),
        ({"grid": {"run": [1]}}, "run is a section, not a field"),
        ({"grid": {"run.seed": [0]}, "set": {"run.seed": 1}}, "in both grid and set"),
        ({"grid": {"privacy.target_epsilon": ["lots"]}}, "is not a positive number or inf"),
        ({"grid": {"run.method": ["crosslm", "nonsense"]}}, "cell nonsense"),
        ({"grid": {"run.seed": [0]}, "max_paralel": 2}, "unknown field max_paralel"),
        ({"grid": {"run.output_dir": ["x"]}}, "set by the sweep for each cell"),
        ({"grid": {"run.seed": [0]}, "base_config": "nowhere.yaml"}, "base_config nowhere.yaml not found"),
    ],
)
def test_a_bad_sweep_file_is_refused_with_the_field_named(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(SweepError, match=message) as caught:
        load_sweep(write_sweep(tmp_path, **fields))
    assert isinstance(caught.value, CrossLMError) and "\n" not in str(caught.value)


def test_a_file_that_is_not_yaml_or_missing_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(SweepError, match="not valid YAML at line"):
        load_sweep(broken)
    with pytest.raises(SweepError, match="not found"):
        load_sweep(tmp_path / "absent.yaml")
    with pytest.raises(SweepError, match="must look like section.field=value"):
        load_sweep(write_sweep(tmp_path), extra_set=["run.rounds"])
    with pytest.raises(SweepError, match="grid field"):
        load_sweep(write_sweep(tmp_path), extra_set=["run.seed=3"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "experiments" / "sweeps").glob("*.yaml")))
def test_the_shipped_sweeps_are_valid(name: str) -> None:
    sweep = load_sweep(REPO / "experiments" / "sweeps" / f"{name}.yaml")
    assert sweep.cells()


def test_speed_settings_do_not_change_a_cells_identity(tmp_path: Path) -> None:
    one = load_sweep(write_sweep(tmp_path / "a", set={"run.threads": 1}))
    two = load_sweep(write_sweep(tmp_path / "b", set={"run.threads": 2}))
    assert [c.config_hash for c in one.cells()] == [c.config_hash for c in two.cells()]


def test_a_bundle_sets_its_fields_together_in_one_grid_dimension(tmp_path: Path) -> None:
    sites = [
        {"partition.records_per_class": 8, "data.max_train_records": None},
        {"partition.scheme": "dirichlet", "partition.alpha": 0.1},
    ]
    cells = load_sweep(write_sweep(tmp_path, grid={"sites": sites, "privacy.target_epsilon": [8, "inf"]})).cells()
    assert len(cells) == 4
    assert cells[0].overrides == [
        "partition.records_per_class=8",
        "data.max_train_records=null",
        "privacy.dp=true",
        "privacy.target_epsilon=8.0",
    ]
    assert cells[0].job["partition"]["records_per_class"] == 8 and cells[0].job["data"]["max_train_records"] is None
    assert cells[2].job["partition"]["scheme"] == "dirichlet" and cells[2].job["partition"]["alpha"] == 0.1
    assert cells[2].slug == "schemedirichlet-alpha0.1-eps8"


@pytest.mark.parametrize(
    ("sites", "message"),
    [
        ([{"partition.records_per_clas": 8}], "partition.records_per_clas is not a config field"),
        ([{"run.output_dir": "x"}], "set by the sweep for each cell"),
        ([{"partition.scheme": "dirichlet", "partition.records_per_class": 8}], "applies to scheme iid only"),
    ],
)
def test_a_bad_bundle_is_refused_with_the_field_named(tmp_path: Path, sites: list, message: str) -> None:
    with pytest.raises(SweepError, match=message):
        load_sweep(write_sweep(tmp_path, grid={"sites": sites}))
