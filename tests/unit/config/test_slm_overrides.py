"""``slm_overrides`` changes the fields it names for that client; every other field is the ``slm`` section's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from crosslm_secure.config import SLMConfig, config_from_dict, config_to_dict, load_config
from crosslm_secure.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _readme_example() -> dict:
    """The researchers' guide's own YAML block that shows ``slm_overrides``."""
    guide = (ROOT / "docs" / "researchers.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", guide, flags=re.DOTALL)
    (block,) = [b for b in blocks if "slm_overrides:" in b]
    return yaml.safe_load(block)


def test_the_readme_example_overrides_only_the_named_fields() -> None:
    raw = _readme_example()
    config = config_from_dict(raw)
    base, client_2 = config.slm_for("client-1"), config.slm_for("client-2")
    named = raw["slm_overrides"]["client-2"]
    assert {"model", "max_length"} <= set(named) and "class_weights" not in named and "learning_rate" not in named
    assert base.class_weights is not None, "the guide's slm section should show class_weights being kept"
    assert (client_2.model, client_2.max_length) == (named["model"], named["max_length"])
    assert client_2.class_weights == base.class_weights
    assert client_2.learning_rate == base.learning_rate == raw["slm"]["learning_rate"]
    assert client_2.model_dump(exclude={"model", "max_length"}) == base.model_dump(exclude={"model", "max_length"})
    assert base.model == raw["slm"]["model"] and base == config.slm


def test_a_command_line_change_to_slm_reaches_an_overridden_client(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_readme_example()))
    config = load_config(path, ["slm.learning_rate=0.5"])
    assert config.slm_for("client-2").learning_rate == 0.5 and config.slm_for("client-2").max_length == 128


def test_the_resolved_config_loads_back_the_same() -> None:
    config = config_from_dict(_readme_example())
    again = config_from_dict(config_to_dict(config))
    assert again == config and isinstance(again.slm_for("client-2"), SLMConfig)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"learning_rate": -1}, "config: slm_overrides.client-2.learning_rate: Input should be greater than 0"),
        ({"lerning_rate": 1}, "config: unknown field slm_overrides.client-2.lerning_rate"),
        ({"class_weights": [1, 2]}, "client-2.class_weights has 2 weights for 3 labels"),
        ("fast", "config: slm_overrides.client-2"),
    ],
)
def test_a_bad_override_names_its_client_and_field(override: object, needle: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config_from_dict({"slm_overrides": {"client-2": override}})
    assert needle in str(refused.value) and "\n" not in str(refused.value)
