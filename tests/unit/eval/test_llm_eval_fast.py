"""The fast label-scoring path (shared prefix cache, length buckets) matches the reference path."""

from __future__ import annotations

import torch

from crosslm_secure.config import EvalConfig, LoraConfig, TaskConfig
from crosslm_secure.data.records import Example
from crosslm_secure.eval.llm_eval import (
    classification_prompt,
    label_logits,
    label_token_ids,
    llm_task_accuracy,
    shared_prefix,
)
from crosslm_secure.models.llm import LoadedLLM
from crosslm_secure.models.lora import add_lora
from tests.tiny_models import separable_examples

TASK = TaskConfig()
EVAL = EvalConfig(llm_batch_size=4, llm_max_length=96)


def _texts() -> list[str]:
    """Texts of very different lengths, in an order that mixes short and long."""
    base = [e.text for e in separable_examples(4, seed=3)]
    return [t * (1 + (i * 7) % 5) for i, t in enumerate(base)][:11]


def test_shared_prefix_keeps_one_token_of_each_prompt() -> None:
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 7]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix([[5, 2], [6, 2]]) == 0
    assert shared_prefix([[4, 4, 4]]) == 2


def test_fast_scores_equal_reference_scores_for_every_prompt(tiny_llm: LoadedLLM) -> None:
    tokenizer = tiny_llm.tokenizer
    prompts = [classification_prompt(tokenizer, TASK, t, EVAL.llm_max_length) for t in _texts()]
    assert shared_prefix(prompts) > 3, "the chat template should give the prompts a common prefix"
    assert len({len(p) for p in prompts}) > 3, "the test needs prompts of different lengths"
    targets = label_token_ids(tokenizer, TASK)
    fast = label_logits(tiny_llm, prompts, targets, 4, fast=True)
    reference = label_logits(tiny_llm, prompts, targets, 4, fast=False)
    assert fast.shape == (len(prompts), len(targets))
    assert torch.allclose(fast, reference, atol=1e-4), (fast - reference).abs().max()
    assert torch.equal(fast.argmax(1), reference.argmax(1))
    # and each row is the prompt's own score, not a neighbour's after sorting
    with torch.no_grad():
        alone = tiny_llm.model(input_ids=torch.tensor([prompts[5]])).logits[0, -1, targets]
    assert torch.allclose(fast[5], alone, atol=1e-4)


def test_fast_and_reference_metrics_agree_with_a_lora_adapter(tiny_llm: LoadedLLM) -> None:
    examples = [Example(e.uid, t, e.label) for e, t in zip(separable_examples(4, seed=3), _texts(), strict=False)]
    wrapped = add_lora(tiny_llm.model, LoraConfig(r=2, alpha=4, target_modules=["q_proj", "v_proj"]), seed=1)
    try:
        with torch.no_grad():
            for name, param in wrapped.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.5)  # a tuned adapter changes the logits
        llm = LoadedLLM(tiny_llm.tokenizer, wrapped, tiny_llm.source, tiny_llm.fingerprint)
        fast = llm_task_accuracy(llm, examples, TASK, EVAL, progress=False, fast=True)
        reference = llm_task_accuracy(llm, examples, TASK, EVAL, progress=False, fast=False)
        assert fast == reference
    finally:
        wrapped.unload()
