"""Configs validate on load, and every error is one sentence naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crosslm_secure.config import Config, load_config, render_defaults
from crosslm_secure.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["default.yaml", "quick.yaml", "drug_reviews.yaml", "icd10.yaml", "sweep.yaml"])
def test_shipped_configs_load(name: str) -> None:
    assert isinstance(load_config(ROOT / "experiments" / "configs" / name), Config)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("partition:\n  clients: 1\n", "config: partition.clients: Input should be greater than or equal to 2 (got 1)"),
        ("run:\n  metod: crosslm\n", "config: unknown field run.metod"),
        ("run:\n  method: magic\n", "config: run.method"),
        ("data:\n  source: csv\n", "data.path is required when data.source is 'csv'"),
        ("task:\n  labels: [a]\n", "task.labels needs at least 2 labels"),
        ("task:\n  classify_template: 'no slot'\n", "task.classify_template must contain {text}"),
        ("slm_overrides:\n  client-9: {}\n", "slm_overrides names unknown clients ['client-9']"),
        ("run:\n  min_clients: 5\n", "run.min_clients (5) cannot exceed partition.clients (3)"),
        ("slm:\n  class_weights: [1, 2]\n", "slm.class_weights has 2 weights for 3 labels"),
        ("slm:\n  class_weights: [1, 0, 2]\n", "config: slm.class_weights.1: Input should be greater than 0"),
        ("run: [1, 2\n", "is not valid YAML at line"),
        ("- a\n- b\n", "must hold a mapping"),
    ],
)
def test_bad_configs_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_missing_file_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; pass a YAML file"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_and_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "run:\n  rounds: 1\n")
    config = load_config(path, ["run.rounds=4", "partition.scheme=dirichlet", "slm.learning_rate=1e-4"])
    assert (config.run.rounds, config.partition.scheme, config.slm.learning_rate) == (4, "dirichlet", 1e-4)
    with pytest.raises(ConfigError, match="run.rounds"):
        load_config(path, ["run.rounds=-1"])
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(path, ["run.rounds"])


def test_rendered_defaults_round_trip_to_the_default_config() -> None:
    rendered = yaml.safe_load(render_defaults())
    assert Config.model_validate(rendered) == Config()
