"""A sweep file -> validated spec -> the grid's cells, each an ordinary run configuration.

A sweep is a base config, fixed overrides (``set``) and a grid of config fields, each with
a list of values; every combination is one cell. A grid entry under a name that is no config
field is a *bundle*: each value is a mapping of fields set together (``sites:
[{partition.scheme: dirichlet, partition.alpha: 0.1}, ...]``), for settings that are no cross
product. ``privacy.target_epsilon: inf`` in a grid means a non-private cell
(``privacy.dp=false``). A cell is named by its grid values plus a hash of its resolved
configuration, so two sweeps that share a cells folder share exactly the cells whose whole
configuration is identical.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crosslm_secure.config import Config, apply_override, config_from_dict, config_to_dict, read_yaml_mapping
from crosslm_secure.errors import ConfigError, CrossLMError

EPSILON_FIELD = "privacy.target_epsilon"
SEED_FIELD = "run.seed"
METHOD_FIELD = "run.method"
AuditName = Literal["mia", "dp"]
# Fields a sweep owns in every cell (where the run folder goes); they do not change results.
CELL_FIELDS = ("run.output_dir", "run.name", "run.progress")
# Left out of a cell's identity too: they change how fast a cell runs, not what it computes.
SPEED_FIELDS = ("run.threads",)


class SweepError(CrossLMError):
    """A sweep file is invalid, or a sweep folder cannot be read."""


class ReportSpec(BaseModel):
    """How the sweep's results are tabulated and drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: str = Field(EPSILON_FIELD, description="Grid field on the x axis of the trade-off plots.")
    baseline_method: list[str] = Field(
        ["standalone", "data_free_kd"],
        description="Methods CrossLM's gains are measured against, paired by seed and setting; each is "
        "also compared with the ones listed before it (data_free_kd - standalone).",
    )


class SweepSpec(BaseModel):
    """One sweep file (``experiments/sweeps/<name>.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = Field(
        description="Sweep name (letters, digits, _ . -)."
    )
    description: str = Field("", description="What the sweep answers.")
    base_config: Path = Field(description="Run config every cell starts from; relative to the sweep file.")
    output_dir: Path | None = Field(
        None, description="Sweep folder (results, plots, logs); default sweeps/<name>, relative to the working dir."
    )
    cells_dir: Path | None = Field(
        None,
        description="Folder of cell run folders; default <output_dir>/cells. Sweeps sharing one reuse each "
        "other's cells whose resolved configuration is identical.",
    )
    max_parallel: Annotated[int, Field(ge=1, le=64)] = Field(1, description="Cells run at once (processes).")
    cell_timeout_minutes: Annotated[float, Field(gt=0)] | None = Field(
        None, description="A cell running longer is stopped and recorded as failed (it resumes on re-run)."
    )
    set: dict[str, Any] = Field(default_factory=dict, description="section.field: value fixed in every cell.")
    grid: dict[str, list[Any]] = Field(description="section.field: [values]; every combination is a cell.")
    audits: list[AuditName] = Field(default_factory=list, description="`crosslm audit <name>` run after each cell.")
    report: ReportSpec = Field(default_factory=ReportSpec)

    @field_validator("grid")
    @classmethod
    def _grid_not_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid:
            raise ValueError("grid is empty; give at least one field with a list of values, e.g. run.seed: [0, 1]")
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid field {key} has no values; give a non-empty list")
            if len({_canonical(v) for v in values}) != len(values):
                raise ValueError(f"grid field {key} repeats a value; give each value once")
        return grid

    @model_validator(mode="after")
    def _fields_exist(self) -> SweepSpec:
        bundled = [field for key, values in self.grid.items() if is_bundle(key, values) for field in _fields_of(values)]
        for key in [*(k for k, v in self.grid.items() if not is_bundle(k, v)), *bundled, *self.set]:
            check_field(key)
            if key in CELL_FIELDS:
                raise ValueError(f"{key} is set by the sweep for each cell; remove it from grid/set")
        overlap = (set(self.grid) | set(bundled)) & set(self.set)
        if overlap:
            raise ValueError(f"{sorted(overlap)[0]} is in both grid and set; keep it in one of them")
        for value in self.grid.get(EPSILON_FIELD, []):
            epsilon = parse_epsilon(value)
            if epsilon is None or epsilon <= 0:
                raise ValueError(f"grid {EPSILON_FIELD} value {value!r} is not a positive number or inf")
        return self


def check_field(dotted: str) -> None:
    """Raise ValueError unless ``dotted`` names a field of the run config (dict fields accept any key)."""
    model: type[BaseModel] = Config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            raise ValueError(f"{dotted} is not a config field (see `crosslm config`); fix its spelling")
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if i != len(parts) - 1 and not _is_mapping(annotation):
            raise ValueError(f"{dotted}: {'.'.join(parts[: i + 1])} is a value, not a section; fix the path")
        return
    raise ValueError(f"{dotted} is a section, not a field; name a field inside it")


def is_bundle(key: str, values: list[Any]) -> bool:
    """True for a grid entry whose name is no config field and whose values all map fields to values."""
    return "." not in key and key not in Config.model_fields and all(isinstance(v, dict) and v for v in values)


def _fields_of(values: list[dict[str, Any]]) -> list[str]:
    return sorted({field for value in values for field in value})


def _is_mapping(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is dict


def parse_epsilon(value: Any) -> float | None:
    """A grid epsilon as a float (inf for "inf"/.inf), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "infinity"):
        return math.inf
    return None


@dataclass(frozen=True)
class Cell:
    """One grid point: its values, the overrides that make its config, and its identity."""

    values: dict[str, Any]
    """Grid field -> value (epsilon as a float, inf = non-private)."""
    overrides: list[str]
    """``section.field=value`` items applied to the base config (``--set`` of ``crosslm run``)."""
    config_hash: str
    slug: str
    job: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The resolved configuration without the where-/speed-fields (what the cell computes)."""

    @property
    def cell_id(self) -> str:
        return f"{self.slug}-{self.config_hash}"


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: the spec plus resolved paths."""

    spec: SweepSpec
    path: Path
    base_config: Path
    output_dir: Path
    cells_dir: Path
    extra_set: tuple[str, ...] = ()

    def cells(self) -> list[Cell]:
        """Every combination of the grid, in grid order, each validated as a run config.

        Raises:
            SweepError: a combination is not a valid run config (the config's error, named by cell).
        """
        base = read_yaml_mapping(self.base_config, "base config", "experiments/configs/sweep.yaml", SweepError)
        keys = list(self.spec.grid)
        cells = []
        for combo in itertools.product(*(self.spec.grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            overrides = [*(_override(k, v) for k, v in self.spec.set.items()), *self.extra_set]
            for key, value in values.items():
                overrides += cell_overrides(key, value)
            raw = json.loads(json.dumps(base))
            for item in overrides:
                apply_override(raw, item)
            try:
                config = config_from_dict(raw)
            except ConfigError as exc:
                raise SweepError(f"sweep {self.path}: cell {_slug(values)}: {exc}") from None
            shown = {k: parse_epsilon(v) if k == EPSILON_FIELD else v for k, v in values.items()}
            cells.append(Cell(shown, overrides, config_hash(config), _slug(shown), job_dict(config)))
        return cells


def cell_overrides(key: str, value: Any) -> list[str]:
    """The ``--set`` items for one grid value; epsilon inf turns DP off; a bundle's value sets each of its fields."""
    if isinstance(value, dict) and is_bundle(key, [value]):
        return [item for field, inner in value.items() for item in cell_overrides(field, inner)]
    if key == EPSILON_FIELD:
        epsilon = parse_epsilon(value)
        if epsilon is not None and math.isinf(epsilon):
            return ["privacy.dp=false"]
        return ["privacy.dp=true", f"{EPSILON_FIELD}={epsilon!r}"]
    return [_override(key, value)]


def job_dict(config: Config | dict[str, Any]) -> dict[str, Any]:
    """A resolved config as a mapping without the fields that only say where the run goes or how fast."""
    raw = config_to_dict(config) if isinstance(config, Config) else json.loads(json.dumps(config, default=str))
    for dotted in (*CELL_FIELDS, *SPEED_FIELDS):
        section, name = dotted.split(".")
        raw.get(section, {}).pop(name, None)
    return raw


def config_hash(config: Config) -> str:
    """Short hash of a config without the fields that only say where the run folder goes or how fast."""
    canonical = json.dumps(job_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def same_job(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """True when two job mappings agree on every field both have.

    A field only one side has was added to (or removed from) the code between the two runs with
    its default, so a sweep keeps recognising its finished cells across such a change.
    """
    for key in one.keys() & other.keys():
        a, b = one[key], other[key]
        if isinstance(a, dict) and isinstance(b, dict):
            if not same_job(a, b):
                return False
        elif _canonical(a) != _canonical(b):
            return False
    return True


def load_sweep(path: str | Path, *, extra_set: list[str] | None = None, output_dir: Path | None = None) -> Sweep:
    """Read and validate a sweep file; ``extra_set`` adds ``section.field=value`` to every cell;
    ``output_dir`` replaces the file's (and, unless the file names one, its cells folder).

    Raises:
        SweepError: the file is missing, not YAML, or a field is invalid (one sentence).
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep", "experiments/sweeps/smoke.yaml", SweepError)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise SweepError(f"sweep {path}: {_format_error(exc)}") from None
    for item in extra_set or []:
        if "=" not in item:
            raise SweepError(f"sweep: --set {item!r} must look like section.field=value")
        key = item.split("=", 1)[0].strip()
        try:
            check_field(key)
        except ValueError as exc:
            raise SweepError(f"sweep: --set {exc}") from None
        if key in spec.grid:
            raise SweepError(f"sweep: --set {key} is a grid field of {path}; change the grid instead")
    base = (path.parent / spec.base_config).resolve()
    if not base.is_file():
        raise SweepError(f"sweep {path}: base_config {spec.base_config} not found next to the sweep file; fix the path")
    output = output_dir or spec.output_dir or Path("sweeps") / spec.name
    cells_dir = (output / "cells") if output_dir is not None else (spec.cells_dir or output / "cells")
    sweep = Sweep(spec, path, base, output, cells_dir, tuple(extra_set or []))
    sweep.cells()  # validate every combination now, not halfway through the sweep
    return sweep


def _format_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown field {where}; known fields: {', '.join(SweepSpec.model_fields)}"
    if first["type"] == "missing":
        return f"field {where} is required; add it"
    return f"{where}: {message}" if where else message


def _override(key: str, value: Any) -> str:
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{key}={dumped.removesuffix('...').strip()}"


def _canonical(value: Any) -> str:
    epsilon = parse_epsilon(value)
    return repr(epsilon) if epsilon is not None else json.dumps(value, sort_keys=True, default=str)


def _slug(values: dict[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        if key == METHOD_FIELD:
            parts.append(str(value))
        elif key == EPSILON_FIELD:
            epsilon = parse_epsilon(value)
            parts.append("epsinf" if epsilon is not None and math.isinf(epsilon) else f"eps{value:g}")
        elif key == SEED_FIELD:
            parts.append(f"s{value}")
        elif isinstance(value, dict):
            parts.append("-".join(f"{field.rsplit('.', 1)[-1]}{inner}" for field, inner in value.items()))
        else:
            parts.append(f"{key.rsplit('.', 1)[-1]}{value}")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))[:80]
