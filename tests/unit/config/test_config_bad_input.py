"""Config input that used to pass `config --check` and fail later (or crash the CLI) is one sentence now."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crosslm_secure.config import apply_override, load_config
from crosslm_secure.errors import ConfigError, CrossLMError
from crosslm_secure.preflight import check_paths

ROOT = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("task:\n  classify_template: 'Review: {text} {oops}'\n", "task.classify_template has placeholder {oops}"),
        ("task:\n  classify_template: 'Review: {text} {0}'\n", "task.classify_template has placeholder {0}"),
        ("task:\n  classify_template: 'Review: {text} {'\n", "task.classify_template is not a valid template"),
        ("task:\n  generation_instructions: ['Write {label} {n}']\n", "generation_instructions[0] has placeholder {n}"),
        ("privacy:\n  epsilon_max: .inf\n", "config: privacy.epsilon_max"),
        ("privacy:\n  max_grad_norm: .inf\n", "config: privacy.max_grad_norm"),
        ("slm:\n  learning_rate: .inf\n", "config: slm.learning_rate"),
        ("tuning:\n  learning_rate: .nan\n", "config: tuning.learning_rate"),
        ("generation:\n  temperature: .inf\n", "config: generation.temperature"),
        ("task:\n  labels: [Good, good]\n", "task.labels has duplicates (ignoring case"),
        ("task:\n  labels: [good, '']\n", "task.labels has an empty label"),
        ("run:\n  device: 'tpu:7'\n", "run.device must be auto, cpu, cuda or cuda:N"),
        ("run:\n  name: ../../x\n", "run.name must be one folder name"),
        ("run:\n  name: a/b\n", "run.name must be one folder name"),
        ("run:\n  name: ..\n", "run.name must be one folder name"),
        (
            "privacy:\n  target_epsilon: null\n  noise_multiplier: 0.001\n",
            "privacy.noise_multiplier 0.001 is below 0.3",
        ),
        ("run:\n  metod: x\n", "check its spelling against `crosslm config` (prints every field)"),
        ("slm:\n  synthetic_weight: half\n", "slm.synthetic_weight: must be a finite number >= 0 or ratio"),
        ("slm:\n  synthetic_weight: -1\n", "slm.synthetic_weight: must be a finite number >= 0 or ratio"),
        ("slm:\n  synthetic_weight: .inf\n", "slm.synthetic_weight: must be a finite number >= 0 or ratio"),
    ],
)
def test_config_check_refuses_what_would_fail_later(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_no_target_epsilon_still_means_inf_and_a_sane_noise_multiplier_passes(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "privacy:\n  target_epsilon: .inf\n  noise_multiplier: 0.3\n"))
    assert config.privacy.noise_multiplier == 0.3 and not config.privacy.uses_target_epsilon


def test_non_utf8_yaml_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"run:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text .*save it as UTF-8"):
        load_config(path)


@pytest.mark.parametrize("item", ["run.name=[x", "run.name=\tx", "audit.seed=[x", "run.name={a", "=3", "run..x=1"])
def test_malformed_set_values_are_one_sentence(item: str) -> None:
    raw: dict = {"run": {"name": "kept"}}
    with pytest.raises(ConfigError, match="override"):
        apply_override(raw, item)
    assert raw == {"run": {"name": "kept"}}


def test_missing_data_path_is_caught_by_the_check(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"data:\n  source: csv\n  path: {tmp_path / 'nope.csv'}\n"))
    with pytest.raises(ConfigError, match=r"data.path .*nope.csv is not a file"):
        check_paths(config)


def test_a_data_file_over_the_cap_is_refused_with_its_size_and_the_setting(tmp_path: Path) -> None:
    data = tmp_path / "big.csv"
    data.write_text("review,rating\n" + "x" * 2_100_000 + ",good\n")
    config = load_config(write(tmp_path, f"data:\n  source: csv\n  path: {data}\n  max_file_mb: 2\n"))
    with pytest.raises(ConfigError, match=r"is 2.1 MB, over data.max_file_mb \(2 MB\)"):
        check_paths(config)


def test_output_dir_that_is_a_file_or_read_only_is_caught(tmp_path: Path) -> None:
    a_file = tmp_path / "runs"
    a_file.write_text("not a folder")
    with pytest.raises(ConfigError, match="is under the file"):
        check_paths(load_config(write(tmp_path, f"run:\n  output_dir: {a_file / 'sub'}\n")))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores modes; the file case above still ran
            return
        with pytest.raises(ConfigError, match="is not writable"):
            check_paths(load_config(write(tmp_path, f"run:\n  output_dir: {locked / 'runs'}\n")))
    finally:
        locked.chmod(0o700)


def test_cli_config_check_reports_the_missing_data_path(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from crosslm_secure.cli import app

    path = write(tmp_path, f"data:\n  source: jsonl\n  path: {tmp_path / 'gone.jsonl'}\n")
    result = CliRunner().invoke(app, ["config", "--check", str(path)])
    assert result.exit_code == 2 and "gone.jsonl is not a file" in result.output


_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_sections = ["run", "data", "task", "partition", "llm", "generation", "tuning", "slm", "feedback", "privacy", "eval"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.dictionaries(st.sampled_from(_sections) | st.text(max_size=8), _yaml_values, max_size=4),
    noise=st.binary(max_size=64),
)
def test_the_config_loader_raises_only_config_errors(tmp_path: Path, raw: dict, noise: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        load_config(path)
    except ConfigError:
        pass
    path.write_bytes(noise)
    try:
        load_config(path)
    except ConfigError:
        pass


@settings(max_examples=150, deadline=None)
@given(item=st.text(max_size=30))
def test_set_overrides_raise_only_config_errors(item: str) -> None:
    raw: dict = {}
    try:
        apply_override(raw, item)
    except CrossLMError:
        pass


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("slm.batch_size", 10**9, "does not fit in memory"),
        ("slm.eval_batch_size", 10**6, "does not fit in memory"),
        ("tuning.batch_size", 10**6, "does not fit in memory"),
        ("generation.batch_size", 10**6, "does not fit in memory"),
        ("eval.llm_batch_size", 10**6, "does not fit in memory"),
        ("slm.private_epochs", 10**6, "already takes days"),
        ("slm.synthetic_epochs", 10**6, "already takes days"),
        ("tuning.epochs", 10**6, "already takes days"),
        ("tuning.learning_rate", 1e9, "throws the weights to infinity"),
        ("slm.learning_rate", 1e9, "throws the weights to infinity"),
        ("slm.private_learning_rate", 1e9, "throws the weights to infinity"),
        ("tuning.max_length", 10**6, "whole context"),
        ("eval.llm_max_length", 10**6, "whole context"),
        ("eval.perplexity_chunk_tokens", 10**6, "whole context"),
        ("llm.lora.r", 4096, "adapts more weights than the model has"),
        ("generation.min_chars", 10**6, "every sample would be dropped"),
    ],
)
def test_numbers_beyond_what_a_run_can_use_are_refused_with_the_reason(
    tmp_path: Path, field: str, value: float, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "run:\n  name: bounds\n"), [f"{field}={value}"])
    message = str(caught.value)
    assert message.startswith(f"config: {field}: at most ") and reason in message and "\n" not in message
