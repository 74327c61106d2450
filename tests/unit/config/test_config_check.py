"""`crosslm config --check` refuses, in one short sentence each, what a run could not use.

Two layers: the config's own validation (types and ranges, each bound with its reason) and the
preflight against this machine (model folders, the data's header and label set), which needs no
model weights and reads no more of a data file than its header and label column.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crosslm_secure.config import load_config
from crosslm_secure.errors import ConfigError, CrossLMError

MAX_SENTENCE = 400


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message and len(message) <= MAX_SENTENCE, message[:500]
    return message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f"run:\n  seed: {2**70}\n", "run.seed: must be between 0 and 4294967295"),
        ("run:\n  seed: -1\n", "run.seed: must be between 0 and 4294967295"),
        ("run:\n  rounds: true\n", "run.rounds: true/false is not a whole number"),
        ("run:\n  min_clients: yes\n", "run.min_clients: true/false is not a whole number"),
        ("slm:\n  learning_rate: true\n", "slm.learning_rate: true/false is not a number"),
        ("slm:\n  class_weights: [1, true, 1]\n", "slm.class_weights: true/false is not a number"),
        ("generation:\n  samples_per_label: 1e12\n", "generation.samples_per_label"),
        ("generation:\n  samples_per_label: 1000000000000\n", "generation.samples_per_label: at most 10000"),
        ("privacy:\n  target_epsilon: 1e-300\n", "privacy.target_epsilon: at least 0.01"),
        ("privacy:\n  target_epsilon: 0.001\n", "privacy.target_epsilon: at least 0.01"),
        ("privacy:\n  noise_source: random\n", "privacy.noise_source: Input should be 'os' or 'seeded'"),
        ("generation:\n  temperature: 1e308\n", "generation.temperature: at most 5"),
        ("generation:\n  temperature: 1.0e+308\n", "generation.temperature: at most 5"),
        ("run:\n  name: " + "a" * 300 + "\n", "run.name is 300 characters; at most 100"),
        ("llm:\n  gguf_file: ../../etc/passwd\n", "llm.gguf_file must be a file name inside llm.model"),
        ("llm:\n  gguf_file: /etc/passwd\n", "llm.gguf_file must be a file name inside llm.model"),
        ("llm:\n  gguf_file: ..\n", "llm.gguf_file must be a file name inside llm.model"),
        (
            "partition:\n  scheme: dirichlet\n  records_per_class: 8\n",
            "partition.records_per_class applies to scheme iid only (got scheme dirichlet)",
        ),
        ("partition:\n  records_per_class: 0\n", "partition.records_per_class"),
    ],
)
def test_values_a_run_cannot_use_are_refused_with_the_reason(tmp_path: Path, text: str, needle: str) -> None:
    assert needle in refused(tmp_path, text)


def test_each_bound_says_why(tmp_path: Path) -> None:
    assert "torch seeds" in refused(tmp_path, f"run:\n  seed: {2**70}\n")
    assert "noise multiplier" in refused(tmp_path, "privacy:\n  target_epsilon: 1e-300\n")
    assert "uniformly" in refused(tmp_path, "generation:\n  temperature: 1e308\n")
    assert "every round" in refused(tmp_path, "generation:\n  samples_per_label: 1000000000000\n")
    assert "255" in refused(tmp_path, "run:\n  name: " + "a" * 300 + "\n")


def test_values_at_the_bounds_still_load(tmp_path: Path) -> None:
    text = (
        "run:\n  seed: 4294967295\n  name: " + "a" * 100 + "\n"
        "generation:\n  samples_per_label: 10000\n  temperature: 5\n"
        "privacy:\n  target_epsilon: 0.01\n  noise_source: seeded\n"
        "llm:\n  gguf_file: model-q8.gguf\n"
        "tuning:\n  classification_pairs: true\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.run.seed == 2**32 - 1 and config.llm.gguf_file == "model-q8.gguf"
    assert config.privacy.noise_source == "seeded"


def test_a_yaml_alias_bomb_is_refused_in_one_short_sentence(tmp_path: Path) -> None:
    # Six levels of ten aliases: a million strings from a 400-byte file (more levels only take longer
    # to refuse before the fix; the refusal itself never expands them).
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level, name in enumerate("bcdef"):
        previous = "abcdef"[level]
        bomb.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    bomb.append("run:\n  name: *f")
    message = refused(tmp_path, "\n".join(bomb) + "\n")
    assert "aliases" in message


def test_a_huge_refused_value_is_not_repeated_in_the_sentence(tmp_path: Path) -> None:
    message = refused(tmp_path, "run:\n  name: [" + ", ".join(["xxxxxxxxxx"] * 5_000) + "]\n")
    assert message.startswith("config: run.name")


# --- the preflight: this machine's model folders and data ------------------------------------

ROOT = Path(__file__).resolve().parents[3]
ROWS = "".join(f"review number {i},{['negative', 'positive'][i % 2]}\n" for i in range(60))


def preflight_refusal(tmp_path: Path, text: str) -> str:
    from crosslm_secure.preflight import check_config

    config = load_config(write(tmp_path, text))
    with pytest.raises(CrossLMError) as caught:
        check_config(config)
    message = str(caught.value)
    assert "\n" not in message and len(message) <= MAX_SENTENCE, message[:500]
    return message


def _model_folder(tmp_path: Path, name: str, *, config_json: bool = True) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    if config_json:
        (folder / "config.json").write_text("{}")
    return folder


def _csv(tmp_path: Path, header: str = "review,rating", rows: str = ROWS) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(f"{header}\n{rows}", encoding="utf-8")
    return path


CSV_TASK = "task:\n  labels: [negative, positive]\n"


def test_a_missing_slm_folder_is_refused(tmp_path: Path) -> None:
    message = preflight_refusal(tmp_path, f"slm:\n  model: {tmp_path / 'no-such-bert'}\n")
    assert "slm.model folder" in message and "no-such-bert not found" in message


def test_an_slm_folder_without_config_json_is_refused(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, "bert", config_json=False)
    assert "has no config.json" in preflight_refusal(tmp_path, f"slm:\n  model: {folder}\n")


def test_a_client_s_own_slm_folder_is_checked_under_its_own_name(tmp_path: Path) -> None:
    message = preflight_refusal(tmp_path, f"slm_overrides:\n  client-2:\n    model: {tmp_path / 'gone'}\n")
    assert message.startswith("slm_overrides.client-2.model folder")


def test_a_missing_llm_folder_or_gguf_file_is_refused(tmp_path: Path) -> None:
    assert "LLM folder" in preflight_refusal(tmp_path, f"llm:\n  model: {tmp_path / 'no-llm'}\n")
    folder = _model_folder(tmp_path, "llm")
    text = f"llm:\n  model: {folder}\n  gguf_file: model-q8.gguf\n"
    assert "model-q8.gguf not found" in preflight_refusal(tmp_path, text)


def test_a_text_column_not_in_the_file_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    text = f"data:\n  source: csv\n  path: {path}\n  text_column: note\n{CSV_TASK}"
    assert "column 'note' is not in" in preflight_refusal(tmp_path, text)


def test_labels_that_are_not_the_file_s_are_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    text = f"data:\n  source: csv\n  path: {path}\ntask:\n  labels: [good, bad]\n"
    assert "label 'negative'" in preflight_refusal(tmp_path, text) and "not a task label" in preflight_refusal(
        tmp_path, text
    )


def test_more_clients_than_the_records_can_serve_are_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    text = f"data:\n  source: csv\n  path: {path}\npartition:\n  clients: 30\n{CSV_TASK}"
    assert "cannot give 30 clients 4 each" in preflight_refusal(tmp_path, text)


def test_a_delta_too_large_for_a_client_s_records_is_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path)
    text = f"data:\n  source: csv\n  path: {path}\nprivacy:\n  delta: 0.1\n{CSV_TASK}"
    assert "privacy.delta (0.1) must be below 1/n" in preflight_refusal(tmp_path, text)


def test_a_good_csv_job_passes_the_preflight(tmp_path: Path) -> None:
    from crosslm_secure.preflight import check_config

    path = _csv(tmp_path)
    check_config(load_config(write(tmp_path, f"data:\n  source: csv\n  path: {path}\n{CSV_TASK}")))


@pytest.mark.parametrize("name", ["default.yaml", "quick.yaml"])
def test_the_shipped_configs_pass_the_preflight(name: str) -> None:
    from crosslm_secure.preflight import check_config

    check_config(load_config(ROOT / "experiments" / "configs" / name))


def test_cli_config_check_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from crosslm_secure.cli import app

    path = write(tmp_path, f"slm:\n  model: {tmp_path / 'no-such-bert'}\n")
    result = CliRunner().invoke(app, ["config", "--check", str(path)])
    assert result.exit_code == 2 and "no-such-bert not found" in result.output


PATH_FIELDS = [
    ("run", "output_dir"),
    ("data", "path"),
    ("data", "test_path"),
    ("llm", "model"),
    ("llm", "cache_dir"),
    ("llm", "gguf_file"),
    ("slm", "model"),
]


@pytest.mark.parametrize(("section", "field"), PATH_FIELDS)
@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("n" * 300, "a name of 300 bytes"),
        ("/".join(["d" * 200] * 25), "a path of 5,024 bytes"),
        ("bad\\0name", "holds a NUL character"),
        ("two\\nlines", "holds the control character '\\n'"),
    ],
)
def test_paths_the_filesystem_cannot_hold_are_refused(
    tmp_path: Path, section: str, field: str, value: str, needle: str
) -> None:
    message = refused(tmp_path, f'{section}:\n  {field}: "{value}"\n')
    assert message.startswith(f"config: {section}.{field}: ") and needle in message


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(PATH_FIELDS),
    value=st.text(max_size=40) | st.text(alphabet="ab/.\\\x00", min_size=250, max_size=5_000),
)
@example(field=("llm", "model"), value="~0")  # the home of a user this machine does not have
@example(field=("slm", "model"), value="~nobody-here/model")
def test_any_path_value_is_checked_or_refused_in_one_sentence(tmp_path: Path, field: tuple, value: str) -> None:
    from crosslm_secure.preflight import check_config

    section, name = field
    raw = {section: {name: value}} | ({"data": {"source": "csv", name: value}} if section == "data" else {})
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    try:
        check_config(load_config(path))
    except CrossLMError as refusal:
        assert "\n" not in str(refusal) and len(str(refusal)) <= MAX_SENTENCE
