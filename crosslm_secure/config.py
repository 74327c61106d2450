"""YAML -> validated configuration. Every field has a default and a doc line.

Errors name the field and the fix, e.g.
``config: partition.clients must be >= 2 (got 1)``.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from crosslm_secure.config_sections import (
    DataConfig,
    EvalConfig,
    FitsFilesystem,
    GenerationConfig,
    LLMConfig,
    LoraConfig,
    PartitionConfig,
    SLMConfig,
    TaskConfig,
    TuningConfig,
    _Section,
    within,
)
from crosslm_secure.config_yaml import apply_override, read_yaml_mapping
from crosslm_secure.errors import ConfigError
from crosslm_secure.privacy.settings import PrivacyConfig

__all__ = [
    "MIN_QUORUM",
    "AuditConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "FeedbackConfig",
    "GenerationConfig",
    "LLMConfig",
    "LoraConfig",
    "Method",
    "PartitionConfig",
    "PrivacyConfig",
    "RunConfig",
    "SLMConfig",
    "SyntheticTiming",
    "TaskConfig",
    "TuningConfig",
    "apply_override",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "read_yaml_mapping",
    "render_defaults",
]
"""Every section is importable from here, wherever it is defined."""

Method = Literal[
    "crosslm",
    "standalone",
    "data_free_kd",
    "llm_zero_shot",
    "crosslm_no_feedback",
    "crosslm_random_feedback",
    "llm_zero_shot_calibrated",
]
SyntheticTiming = Literal["next_round", "same_round", "same_round_after_first"]


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""Devices a run accepts: what :func:`crosslm_secure.runner.resolve_device` can resolve."""

MIN_QUORUM = 2
"""Fewest contributors an aggregate may be decrypted from: one contributor's "aggregate" is its own scores."""

RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")
"""A run name is one folder name under ``output_dir``: no separators, no ``..``, no leading dot."""

RUN_NAME_MAX = 100
"""Longest run name: the folder ``<name>-s<seed>-<stamp>`` must fit 255 bytes, with room to spare."""

SEED_MAX = 2**32 - 1
"""Largest run seed: torch seeds derived from it (x 1000 + client, x 1,000,003 + round) stay 64-bit."""


class RunConfig(_Section):
    name: str = Field("default", description="Run name; the run folder is <output_dir>/<name>-<seed>-<stamp>.")
    seed: Annotated[
        int,
        within(
            0,
            SEED_MAX,
            why="NumPy takes no negative seed, and the torch seeds derived from it (x 1000 + client, then "
            "x 1,000,003 + round) must fit 64 bits",
        ),
    ] = Field(0, description="Seed for data split, generation, training and evaluation (0 to 2**32 - 1).")
    output_dir: Annotated[Path, FitsFilesystem] = Field(Path("runs"), description="Folder that holds run folders.")
    rounds: Annotated[int, Field(ge=0, le=100)] = Field(
        2, description="CrossLM rounds after round 0 (round 0 = before any training)."
    )
    synthetic_timing: SyntheticTiming = Field(
        "next_round",
        description="next_round: a round's kept synthetic samples join the next round's SLM training; same_round: "
        "they are generated, scored, tuned on and sent first and join this round's (round 1 scored by round-0 SLMs); "
        "same_round_after_first: round 1 as next_round, later rounds as same_round (scored by the last round's SLMs).",
    )
    method: Method = Field(
        "crosslm",
        description="crosslm | standalone (SLM on private data only) | data_free_kd "
        "(SLMs on unfiltered LLM data, no feedback, LLM untuned) | llm_zero_shot (LLM untuned, evaluated) | "
        "llm_zero_shot_calibrated (the same, contextually calibrated) | crosslm_no_feedback (LLM tuned on and SLMs "
        "enhanced with every sample, nothing scored) | crosslm_random_feedback (as many samples as the feedback "
        "accepts, drawn at random).",
    )
    min_clients: Annotated[int, Field(ge=1)] = Field(
        2,
        description="Fewest clients a round may run with; also the quorum for decrypting an aggregate (at least "
        "2 there). Below it the run ends cleanly with the reason in the summary.",
    )
    rejoin: bool = Field(
        True,
        description="Take a client that dropped out (crashed, disconnected, timed out) back at the start of a "
        "later round once it answers again; the key ceremony is redone for it. false: dropped stays out.",
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    threads: Annotated[int, Field(ge=0)] = Field(0, description="torch CPU threads; 0 = all cores.")
    progress: bool = Field(True, description="Show progress bars.")

    def decryption_quorum(self) -> int:
        """Fewest participants whose summed scores may be decrypted: ``min_clients``, never below :data:`MIN_QUORUM`.

        The one definition: the server announces it and deals keys for it, each client node
        checks the announcement against its own and its decryptor's verifier refuses fewer.
        """
        return max(MIN_QUORUM, self.min_clients)

    @field_validator("name")
    @classmethod
    def _name_is_one_folder(cls, name: str) -> str:
        if len(name) > RUN_NAME_MAX:
            raise ValueError(
                f"run.name is {len(name)} characters; at most {RUN_NAME_MAX}: the run folder is "
                "<name>-s<seed>-<stamp> and filesystems allow 255 bytes per name; shorten it"
            )
        if not RUN_NAME_PATTERN.fullmatch(name) or ".." in name:
            raise ValueError(
                "run.name must be one folder name of letters, digits and _ . + = - (no /, \\, .. or leading "
                "dot), so the run folder stays inside output_dir"
            )
        return name

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not DEVICE_PATTERN.fullmatch(device):
            raise ValueError("run.device must be auto, cpu, cuda or cuda:N")
        return device


class FeedbackConfig(_Section):
    max_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        3, description="Score-aggregation attempts per round when participants drop (fresh masks each time)."
    )
    aggregator: Literal["ckks", "plaintext"] = Field(
        "ckks",
        description="ckks: scores CKKS-encrypted with pairwise masks, summed blind by the server, decrypted "
        "only as an aggregate by a verifying client; plaintext: unprotected (prices the protection).",
    )
    ckks_preset: Literal["n8192", "n4096"] = Field(
        "n8192", description="CKKS parameters, both 128-bit secure; n4096 costs ~32 B per score instead of ~81."
    )
    noise_sigma: Annotated[float, Field(ge=0)] = Field(
        0.05,
        description="Std of the Gaussian noise in each per-sample score sum (each client adds sigma/sqrt(K)); "
        "floods CKKS decryption noise and is recorded in each client's ledger as a release.",
    )
    threshold: Annotated[float, Field(ge=0, le=1)] | None = Field(
        None,
        description="Fixed mean score at or above which a synthetic sample is accepted; None = adaptive: "
        "per label, scores above chance + accept_margin and in that label's top accept_fraction.",
    )
    accept_margin: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0,
        description="Adaptive acceptance: a sample's mean score must exceed chance (1/labels) by more than this. "
        "Calibrated scores of a weak SLM stay near chance, so the default only asks for better than chance.",
    )
    accept_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5, description="Adaptive acceptance: keep at most this top share of each label's samples."
    )
    balance: bool = Field(
        True, description="Keep the same number of accepted samples per label (the best-scored of each)."
    )


class AuditConfig(_Section):
    """Settings ``crosslm audit`` reads from the run's config (override with ``--set audit.x=y``)."""

    reference_models: Annotated[int, Field(ge=1, le=64)] = Field(
        8,
        description="Reference (shadow) models per client for RMIA and LiRA, trained the same way on population "
        "data. A head-only SLM's reference model is a linear probe on frozen features: seconds each on a CPU.",
    )
    population_records: Annotated[int, Field(ge=10)] = Field(
        4000,
        description="Records (disjoint from every client's training data) used as population: half are the "
        "non-members (and RMIA's z samples), half the reference-model pool. 4000 gives the 2000 non-members that "
        "resolve TPR at 0.1% FPR where the task has that many spare records.",
    )
    canaries: Annotated[int, Field(ge=10)] = Field(
        1000, description="Canaries for the one-run DP audit; each is included with probability 1/2."
    )
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = Field(
        0.95, description="Confidence level of the empirical epsilon lower bound."
    )
    bootstrap: Annotated[int, Field(ge=10)] = Field(200, description="Bootstrap resamples for metric intervals.")
    llm_records: Annotated[int, Field(ge=10)] = Field(
        100, description="Client records (members and non-members) used to attack the server LLM."
    )
    seed: int = Field(0, description="Seed for canaries, reference models and bootstrap.")
    mia_max_auc: Annotated[float, Field(gt=0.5, le=1)] = Field(
        0.6, description="The MIA check fails when an SLM attack's AUC lower confidence bound exceeds this."
    )
    rmia_a: Annotated[float, Field(ge=0, le=1)] = Field(
        0.3, description="RMIA offline parameter a: Pr(x) ~ ((1 + a) * mean_out(x) + 1 - a) / 2 (Zarifzadeh et al.)."
    )
    rmia_gamma: Annotated[float, Field(ge=1)] = Field(
        2.0, description="RMIA threshold gamma on the pairwise likelihood ratio LR(x) / LR(z)."
    )
    canary_guess_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.2,
        description="Share of canaries the one-run DP audit guesses (half top scores as in, half bottom as out), "
        "fixed before looking at the scores; the rest abstain.",
    )
    dp_client: str | None = Field(
        None, description="Client whose training the one-run DP audit re-runs with canaries (default: the first)."
    )
    dp_mode: Literal["auto", "white-box", "black-box"] = Field(
        "auto",
        description="One-run DP audit: white-box = gradient canaries in the linear head, scored on per-step "
        "updates (head-only SLMs); black-box = input canaries scored on the final model's outputs; auto = "
        "white-box for a head-only SLM, else black-box.",
    )
    whitebox_guess_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.15, description="Share of gradient canaries the white-box audit guesses (half in, half out)."
    )


class Config(_Section):
    """The whole job. ``crosslm run CONFIG`` takes one of these as YAML."""

    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    slm: SLMConfig = Field(default_factory=SLMConfig)
    slm_overrides: dict[str, SLMConfig] = Field(
        default_factory=dict,
        description="Per-client SLM settings by client id (client-1, client-2, ...); sites may differ. Each names "
        "only the fields that differ; the others are the slm section's.",
    )
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    @model_validator(mode="before")
    @classmethod
    def _overrides_on_top_of_slm(cls, raw: Any) -> Any:
        """Each ``slm_overrides`` entry as the ``slm`` section with the entry's fields replaced.

        Merged before validation, so a bad field is reported where the user wrote it, and the
        resolved config holds every client's whole section (it loads back the same).
        """
        if not isinstance(raw, dict) or not isinstance(raw.get("slm_overrides"), dict):
            return raw
        base = raw.get("slm", {})
        if isinstance(base, BaseModel):
            base = base.model_dump()
        if not isinstance(base, dict):
            return raw  # the slm section's own validation says what is wrong with it
        merged = {
            client: {**base, **fields} if isinstance(fields, dict) else fields
            for client, fields in raw["slm_overrides"].items()
        }
        return {**raw, "slm_overrides": merged}

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.data.source != "embedded" and self.data.path is None:
            raise ValueError(f"data.path is required when data.source is {self.data.source!r}")
        if self.run.min_clients > self.partition.clients:
            raise ValueError(
                f"run.min_clients ({self.run.min_clients}) cannot exceed partition.clients ({self.partition.clients})"
            )
        for client, slm in [("slm", self.slm), *self.slm_overrides.items()]:
            if slm.class_weights is not None and len(slm.class_weights) != len(self.task.labels):
                raise ValueError(
                    f"{client}.class_weights has {len(slm.class_weights)} weights for {len(self.task.labels)} labels"
                )
        ids = set(self.client_ids())
        unknown = set(self.slm_overrides) - ids
        if unknown:
            raise ValueError(f"slm_overrides names unknown clients {sorted(unknown)}; known: {sorted(ids)}")
        return self

    def client_ids(self) -> list[str]:
        return [f"client-{i + 1}" for i in range(self.partition.clients)]

    def slm_for(self, client_id: str) -> SLMConfig:
        """The SLM settings of one client: its ``slm_overrides`` entry (merged onto ``slm``) or ``slm``."""
        return self.slm_overrides.get(client_id, self.slm)


def _format_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"config: unknown field {where}; check its spelling against `crosslm config` (prints every field)"
    given = first.get("input")
    suffix = "" if isinstance(given, dict) or given is None else f" (got {_SHORT.repr(given)})"
    return f"config: {where}: {message}{suffix}"


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # keyword arguments only from Python 3.12
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 2, 4, 4, 4
    short.maxstring, short.maxlong, short.maxother = 60, 40, 60
    return short


_SHORT = _short_repr()
"""Quotes a refused value in a sentence: a 5,000-item list is shown by its first items, not spelled out."""


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a mapping into a Config.

    Raises:
        ConfigError: one sentence naming the first bad field.
    """
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config and apply ``section.field=value`` overrides.

    Raises:
        ConfigError: the file is missing, not YAML, or a field is invalid.
    """
    raw = read_yaml_mapping(Path(path), "config", "experiments/configs/default.yaml", ConfigError)
    for item in overrides or []:
        apply_override(raw, item)
    return config_from_dict(raw)


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain, YAML-safe mapping of a config (paths as strings, inf kept as .inf)."""
    return config.model_dump(mode="json")


def render_defaults() -> str:
    """The default configuration as YAML, each field preceded by its doc line."""
    lines: list[str] = []
    _render_section(Config(), 0, lines)
    return "\n".join(lines) + "\n"


def _render_section(section: BaseModel, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, info in type(section).model_fields.items():
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _render_section(value, indent + 1, lines)
            continue
        if info.description:
            lines.append(f"{pad}# {info.description}")
        dumped = yaml.safe_dump({name: _plain(value)}, default_flow_style=True, width=10_000).strip()
        lines.append(pad + dumped.removeprefix("{").removesuffix("}"))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
