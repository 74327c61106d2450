"""Synthetic-data generation: prompts, cleaning, de-duplication, seeded sampling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crosslm_secure.config import GenerationConfig, LLMConfig, TaskConfig
from crosslm_secure.models.llm import LoadedLLM, load_llm
from crosslm_secure.server.generation import (
    PromptSlot,
    clean_batch,
    clean_text,
    generate_synthetic,
    generation_prompt,
    instruction_for,
    parse_sample_id,
    prompt_slots,
    rejection_reason,
    sample_id,
    sample_prompt,
)
from tests.tiny_models import tiny_llm_dir

TASK = TaskConfig()
GEN = GenerationConfig(samples_per_label=3, max_new_tokens=8, batch_size=5, min_chars=1)


def test_instructions_rotate_and_name_the_label() -> None:
    firsts = {instruction_for(TASK, 2, n) for n in range(len(TASK.generation_instructions))}
    assert len(firsts) == len(TASK.generation_instructions)
    assert all(" positive " in f for f in firsts)
    custom = TaskConfig(verbalizers={"negative": "bad"})
    assert " bad " in instruction_for(custom, 0, 0)


def test_slots_interleave_labels_with_unique_parseable_ids() -> None:
    slots = prompt_slots(TASK, GenerationConfig(samples_per_label=3), round_index=7)
    assert [s.label_index for s in slots[:3]] == [0, 1, 2]
    ids = [s.sample_id for s in slots]
    assert len(set(ids)) == len(ids) == 9
    assert ids[0] == "r7-0-0000" == sample_id(7, 0, 0)
    assert parse_sample_id("r7-2-0013") == (7, 2, 13)
    assert parse_sample_id("external-1") is None


def test_prompts_use_the_chat_template_when_there_is_one(tmp_path: Path) -> None:
    chat = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path))), torch.device("cpu")).tokenizer
    plain = load_llm(
        LLMConfig(model=str(tiny_llm_dir(tmp_path, chat=False, name="plain"))), torch.device("cpu")
    ).tokenizer
    instruction = instruction_for(TASK, 1, 3)
    rendered = generation_prompt(chat, TASK, 1, 3)
    assert rendered.startswith("<|im_start|>user\n" + instruction)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert generation_prompt(plain, TASK, 1, 3) == instruction


def test_sample_prompt_rebuilds_the_prompt_that_produced_a_sample(tiny_llm: LoadedLLM) -> None:
    from crosslm_secure.data.records import SyntheticSample

    sample = SyntheticSample(sample_id=sample_id(3, 1, 6), text="x", intended_label=1)
    assert sample_prompt(tiny_llm.tokenizer, TASK, sample) == generation_prompt(tiny_llm.tokenizer, TASK, 1, 6)


def test_cleaning_strips_quotes_and_whitespace() -> None:
    assert clean_text('  "This drug   helped\n my pain."  ') == "This drug helped my pain."
    assert clean_text("'x'") == "x"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("too short", "short"),
        ("!!! ??? ...", "short"),
        ("good good good good good good good good good good", "degenerate"),
        ("it is it is it is it is it is it is it is", "degenerate"),
        ("Write a brief positive online review about a prescription drug's effects", "echo"),
        ("Sure! Write a brief positive online review about a prescription drug's effects and side effects.", "echo"),
        ("This medicine cleared my migraines within a week and I had no side effects.", None),
    ],
)
def test_rejection_reasons(text: str, reason: str | None) -> None:
    instruction = instruction_for(TASK, 2, 0)
    assert instruction.startswith("Write a brief positive online review")
    assert rejection_reason(text, instruction, min_chars=12) == reason


def test_clean_batch_drops_duplicates_and_keeps_order() -> None:
    slots = [PromptSlot(i % 3, i, sample_id(0, i % 3, i)) for i in range(4)]
    raw = [
        "It worked well for my back pain.",
        "it worked  WELL for my back pain!",
        "",
        "Terrible nausea every single morning.",
    ]
    kept, dropped = clean_batch(zip(slots, raw, strict=True), TASK, min_chars=5)
    assert [s.sample_id for s in kept] == [slots[0].sample_id, slots[3].sample_id]
    assert [s.intended_label for s in kept] == [0, 0]
    assert dropped == {"duplicate": 1, "short": 1}


def test_generation_is_seeded_labelled_and_leaves_the_global_rng(tiny_llm: LoadedLLM) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = generate_synthetic(tiny_llm, TASK, GEN, round_index=1, seed=5, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    again = generate_synthetic(tiny_llm, TASK, GEN, round_index=1, seed=5, progress=False)
    other_seed = generate_synthetic(tiny_llm, TASK, GEN, round_index=1, seed=6, progress=False)
    other_round = generate_synthetic(tiny_llm, TASK, GEN, round_index=2, seed=5, progress=False)
    assert first == again
    assert len(first) >= 5, "a random tiny model still writes mostly usable text"
    assert [s.text for s in first] != [s.text for s in other_seed]
    assert [s.text for s in first] != [s.text for s in other_round]
    ids = [s.sample_id for s in first]
    assert len(set(ids)) == len(ids)
    for sample in first:
        parsed = parse_sample_id(sample.sample_id)
        assert parsed is not None and parsed[0] == 1 and parsed[1] == sample.intended_label
        assert sample.text == sample.text.strip() and sample.text
    assert not tiny_llm.model.training
