"""YAML into raw config mappings: reading a file that must hold a mapping, and ``--set`` overrides.

Both refuse bad input in one sentence: a file that is missing, not UTF-8, not YAML, too deep or
an alias bomb; an override that is not ``section.field=value``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from crosslm_secure.errors import ConfigError

YAML_VALUES_MAX = 100_000
"""Most values a config file may hold once its YAML aliases are expanded; the shipped ones hold a few hundred."""


def _more_values_than(root: Any, limit: int) -> bool:
    """Whether ``root`` holds more than ``limit`` values, counting a shared (aliased) one at each use.

    Stops counting at ``limit``, so an alias bomb (nine levels of ten aliases: a billion values
    from a few hundred bytes) is found without expanding it.
    """
    stack, seen = [root], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def read_yaml_mapping(path: Path, what: str, example: str, error: type[Exception]) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping.

    Raises:
        error: the file is missing, not YAML, or not a mapping (one sentence naming the fix).
    """
    if not path.is_file():
        raise error(f"{what}: file {path} not found; pass a YAML file such as {example}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise error(f"{what}: {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(f"{what}: {path} is not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise error(f"{what}: {path} nests too deeply to read; flatten it") from None
    except OSError as exc:
        raise error(f"{what}: cannot read {path} ({exc.strerror}); check the path and its permissions") from None
    if not isinstance(raw, dict):
        raise error(f"{what}: {path} must hold a mapping, not {type(raw).__name__}")
    if _more_values_than(raw, YAML_VALUES_MAX):
        raise error(
            f"{what}: {path} holds more than {YAML_VALUES_MAX:,} values once its YAML aliases (*name) are expanded, "
            "which no config needs (an alias bomb?); write the values out"
        )
    return raw


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in a raw config mapping; value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"config: override {item!r} must look like section.field=value")
    dotted, value = item.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ConfigError(f"config: override {item!r} must look like section.field=value")
    try:
        parsed = yaml.safe_load(value)
    except (yaml.YAMLError, RecursionError):
        raise ConfigError(
            f"config: override {item!r}: the value is not valid YAML; quote it, e.g. {dotted}='\"text\"'"
        ) from None
    node = raw
    for key in keys[:-1]:  # checked before any section is added, so a refused override changes nothing
        child = node.get(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config: override {dotted!r}: {key} is not a section")
        node = child
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = parsed
