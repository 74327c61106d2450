"""`crosslm config --check` refuses, in one short sentence each, what a run could not use.

Two layers: the config's own validation (types and ranges, each bound with its reason) and the
preflight against this machine (model folders, the data's header and label set), which needs no
model weights and reads no more of a data file than its header and label column.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crosslm_secure.config import load_config
from crosslm_secure.errors import ConfigError

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
        ("generation:\n  temperature: 1e308\n", "generation.temperature: at most 5"),
        ("generation:\n  temperature: 1.0e+308\n", "generation.temperature: at most 5"),
        ("run:\n  name: " + "a" * 300 + "\n", "run.name is 300 characters; at most 100"),
        ("llm:\n  gguf_file: ../../etc/passwd\n", "llm.gguf_file must be a file name inside llm.model"),
        ("llm:\n  gguf_file: /etc/passwd\n", "llm.gguf_file must be a file name inside llm.model"),
        ("llm:\n  gguf_file: ..\n", "llm.gguf_file must be a file name inside llm.model"),
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
        "privacy:\n  target_epsilon: 0.01\n"
        "llm:\n  gguf_file: model-q8.gguf\n"
        "tuning:\n  classification_pairs: true\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.run.seed == 2**32 - 1 and config.llm.gguf_file == "model-q8.gguf"


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
