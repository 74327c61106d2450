"""Step 1 of a round: the server LLM writes label-conditioned synthetic samples.

Prompt building and cleaning are pure functions; ``generate_synthetic`` is the only one
that runs the model. Tuning rebuilds each sample's prompt with ``sample_prompt`` so the
LLM is tuned on exactly the prompt that produced the text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, PreTrainedTokenizerBase

from crosslm_secure.config import GenerationConfig, TaskConfig
from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.models.device import eval_mode
from crosslm_secure.models.llm import LoadedLLM, encode_prompt, left_pad, render_prompt
from crosslm_secure.models.sampling import draws, sampling_processors

log = logging.getLogger(__name__)

_ID_PATTERN = re.compile(r"^r(\d+)-(\d+)-(\d+)$")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class PromptSlot:
    """One sample to ask for: its label, its number within the label, and its id."""

    label_index: int
    number: int
    sample_id: str


def sample_id(round_index: int, label_index: int, number: int) -> str:
    """The id of the ``number``-th sample of a label in a round: ``r{round}-{label}-{n:04d}``."""
    return f"r{round_index}-{label_index}-{number:04d}"


def parse_sample_id(value: str) -> tuple[int, int, int] | None:
    """``(round, label_index, number)`` of an id from ``sample_id``, or None if it is foreign."""
    match = _ID_PATTERN.match(value)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def instruction_for(task: TaskConfig, label_index: int, number: int) -> str:
    """The instruction for one sample; instructions rotate per sample (offset per label)."""
    instructions = task.generation_instructions
    template = instructions[(number + label_index) % len(instructions)]
    return template.format(label=task.verbalizer(task.labels[label_index]))


def generation_prompt(tokenizer: PreTrainedTokenizerBase, task: TaskConfig, label_index: int, number: int) -> str:
    """The rendered prompt (chat template when the model has one) for one sample."""
    return render_prompt(tokenizer, instruction_for(task, label_index, number))


def sample_prompt(tokenizer: PreTrainedTokenizerBase, task: TaskConfig, sample: SyntheticSample) -> str:
    """The prompt that produced ``sample`` (number 0's instruction for foreign ids)."""
    parsed = parse_sample_id(sample.sample_id)
    number = parsed[2] if parsed else 0
    return generation_prompt(tokenizer, task, sample.intended_label, number)


def prompt_slots(task: TaskConfig, gen: GenerationConfig, round_index: int) -> list[PromptSlot]:
    """All samples to ask for in a round, labels interleaved so every batch mixes them."""
    return [
        PromptSlot(label, number, sample_id(round_index, label, number))
        for number in range(gen.samples_per_label)
        for label in range(len(task.labels))
    ]


def normalize_text(text: str) -> str:
    """Lower-case words joined by single spaces: the key for de-duplication and echo checks."""
    return " ".join(_WORD.findall(text.lower()))


def clean_text(raw: str) -> str:
    """Strip whitespace and wrapping quotes; collapse runs of whitespace to one space."""
    text = " ".join(raw.split())
    while len(text) >= 2 and text[0] in "\"'" and text[-1] == text[0]:
        text = text[1:-1].strip()
    return text


def rejection_reason(text: str, instruction: str, min_chars: int) -> str | None:
    """Why a cleaned sample is unusable (too short, degenerate, echoed prompt), or None.

    Degenerate means mostly repeated words: fewer than 35% distinct words, or one word
    making up more than 40% of a text of 8 words or more.
    """
    if len(text) < min_chars:
        return "short"
    words = normalize_text(text).split()
    if not words:
        return "short"
    if len(words) >= 8:
        top = max(words.count(w) for w in set(words))
        if len(set(words)) / len(words) < 0.35 or top / len(words) > 0.4:
            return "degenerate"
    norm, asked = " ".join(words), normalize_text(instruction)
    if asked and (asked in norm or norm in asked):
        return "echo"
    return None


def clean_batch(
    candidates: Iterable[tuple[PromptSlot, str]], task: TaskConfig, min_chars: int
) -> tuple[list[SyntheticSample], dict[str, int]]:
    """Clean raw generations, drop unusable ones and duplicates (normalized text).

    Returns:
        The kept samples in input order, and counts of dropped samples by reason.
    """
    kept: list[SyntheticSample] = []
    dropped: dict[str, int] = {}
    seen: set[str] = set()
    for slot, raw in candidates:
        text = clean_text(raw)
        reason = rejection_reason(text, instruction_for(task, slot.label_index, slot.number), min_chars)
        key = normalize_text(text)
        if reason is None and key in seen:
            reason = "duplicate"
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        seen.add(key)
        kept.append(SyntheticSample(sample_id=slot.sample_id, text=text, intended_label=slot.label_index))
    return kept, dropped


def batch_seed(seed: int, round_index: int, batch_index: int) -> int:
    """A 63-bit torch seed for one generation batch, independent across (seed, round, batch)."""
    state = np.random.SeedSequence([seed, round_index, batch_index, 0x6E6E]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1))


def generate_synthetic(
    llm: LoadedLLM,
    task: TaskConfig,
    gen: GenerationConfig,
    *,
    round_index: int,
    seed: int,
    progress: bool = True,
    sampling: Callable[[float, float], LogitsProcessorList] = sampling_processors,
) -> list[SyntheticSample]:
    """Write ``gen.samples_per_label`` label-conditioned samples per label, cleaned.

    Sampling is seeded per batch from ``(seed, round_index, batch)``, so the same inputs give
    the same batch; the global torch RNG is left as it was.

    Args:
        llm: the server LLM (possibly LoRA-wrapped).
        task: labels, verbalizers and generation instructions.
        gen: how many samples, sampling settings, batch size, minimum length.
        round_index: the round, part of every sample id and of the sampling seed.
        seed: the run seed.
        progress: show a progress bar.
        sampling: builds the processors from ``(temperature, top_p)``; the default's last one
            draws the token itself (``models.sampling.draws``), so ``generate`` decodes greedily.
            ``models.sampling.reference_processors`` gives transformers' own (the baseline).

    Returns:
        The kept samples (fewer than asked when some were dropped), ids unique.
    """
    tokenizer, model = llm.tokenizer, llm.model
    slots = prompt_slots(task, gen, round_index)
    batches = [slots[i : i + gen.batch_size] for i in range(0, len(slots), gen.batch_size)]
    candidates: list[tuple[PromptSlot, str]] = []
    eos = _stop_token_ids(tokenizer)
    bar = tqdm(total=len(slots), desc=f"generate r{round_index}", unit="sample", disable=not progress)
    with eval_mode(model), bar:
        for batch_index, batch in enumerate(batches):
            encoded = [
                encode_prompt(tokenizer, generation_prompt(tokenizer, task, s.label_index, s.number)) for s in batch
            ]
            ids, mask, _ = left_pad(encoded, tokenizer.pad_token_id, llm.device)
            processors = sampling(gen.temperature, gen.top_p)
            with torch.random.fork_rng(devices=_cuda_devices(llm.device)), torch.no_grad():
                torch.manual_seed(batch_seed(seed, round_index, batch_index))
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    **_decoding(processors),
                    logits_processor=processors,
                    max_new_tokens=gen.max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos,
                )
            texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
            candidates.extend(zip(batch, texts, strict=True))
            bar.update(len(batch))
    samples, dropped = clean_batch(candidates, task, gen.min_chars)
    if dropped:
        log.info(
            "round %d: kept %d of %d synthetic samples, dropped %s", round_index, len(samples), len(slots), dropped
        )
    return samples


def _decoding(processors: LogitsProcessorList) -> dict[str, Any]:
    """``generate``'s own sampling settings, so that only ``processors`` shape the draw:
    greedy decoding after processors that draw the token (``models.sampling.draws``), else
    sampling with the built-in warpers off."""
    if draws(processors):
        return {"do_sample": False}
    return {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0}


def _stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    unknown = tokenizer.unk_token_id
    return sorted(i for i in ids if isinstance(i, int) and i >= 0 and i != unknown)


def _cuda_devices(device: torch.device) -> Sequence[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
