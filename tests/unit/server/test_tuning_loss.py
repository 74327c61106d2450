"""The tuning loss with the batch's shared prompt prefix run once equals the full-sequence loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslm_secure.config import LLMConfig, LoraConfig, TaskConfig, TuningConfig
from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.models.llm import LoadedLLM, load_llm
from crosslm_secure.models.lora import add_lora
from crosslm_secure.server.generation import sample_id
from crosslm_secure.server.tuning import build_tuning_items
from crosslm_secure.server.tuning_loss import IGNORE, TuningItem, prompt_prefix, sequence_losses
from tests.tiny_models import tiny_llm_dir

TASK = TaskConfig()
TEXTS = [
    "terrible nausea and pain, this drug was useless",
    "ok",
    "great medicine, it helped my pain a lot and I would take it again without a second thought",
    "awful, it made my pain worse",
    "fine for now, mixed results",
    "excellent relief, I love this drug",
]
SAMPLES = [SyntheticSample(sample_id(1, i % 3, i // 3), text, i % 3) for i, text in enumerate(TEXTS)]


@pytest.fixture()
def lora_llm(tmp_path) -> LoadedLLM:
    llm = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path))), torch.device("cpu"))
    llm.model = add_lora(llm.model, LoraConfig(r=4, alpha=8, dropout=0.0), seed=3)
    with torch.no_grad():
        for name, param in llm.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)  # a tuned adapter, so its gradient path is exercised
    return llm


def _items(llm: LoadedLLM) -> list[TuningItem]:
    scores = np.array([0.9, 0.2, 0.7, 0.6, 0.4, 0.8])
    tuning = TuningConfig(weighting="every_pair", unlikelihood_weight=0.5, unlikelihood_threshold=0.3)
    return build_tuning_items(llm.tokenizer, SAMPLES, scores, TASK, tuning, accepted=scores >= 0.5)


def _loss_and_grads(llm: LoadedLLM, items: list[TuningItem], share: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    llm.model.train()
    llm.model.zero_grad(set_to_none=True)
    losses = sequence_losses(llm.model, items, llm.tokenizer.pad_token_id, share_prefix=share)
    coefficients = torch.tensor([i.coefficient for i in items])
    (losses * coefficients).sum().backward()
    grads = [p.grad.clone() for p in llm.model.parameters() if p.requires_grad]
    return losses.detach(), grads


def test_shared_prefix_losses_and_gradients_equal_the_full_sequences(lora_llm: LoadedLLM) -> None:
    items = _items(lora_llm)
    assert {i.kind for i in items} == {"generation", "pair", "unlikelihood"}, "the batch should mix every kind"
    assert prompt_prefix(items) > 3, "the chat template should give the items a common prefix"
    shared, shared_grads = _loss_and_grads(lora_llm, items, share=True)
    full, full_grads = _loss_and_grads(lora_llm, items, share=False)
    assert torch.allclose(shared, full, atol=1e-5), (shared - full).abs().max()
    assert len(shared_grads) == len(full_grads) > 0
    for a, b in zip(shared_grads, full_grads, strict=True):
        assert (a - b).norm() <= 1e-5 * b.norm(), (a - b).abs().max()
    # each row's loss is its own item's, not a neighbour's
    alone = sequence_losses(lora_llm.model, items[2:3], lora_llm.tokenizer.pad_token_id)
    assert torch.allclose(shared[2], alone[0], atol=1e-5)


def test_the_prefix_stops_before_the_token_that_predicts_a_target() -> None:
    same = TuningItem([1, 2, 3, 4, 5], [IGNORE, IGNORE, IGNORE, 4, 5], 1.0)
    assert prompt_prefix([same, same]) == 2, "position 2 gives the logit of target 4, so it is not shared"
    other = TuningItem([1, 2, 9, 9, 9, 9], [IGNORE] * 5 + [9], 1.0)
    assert prompt_prefix([same, other]) == 2
    unrelated = TuningItem([7, 2, 3, 4], [IGNORE, IGNORE, 3, 4], 1.0)
    assert prompt_prefix([same, unrelated]) == 0


def test_identical_items_share_all_but_their_targets(lora_llm: LoadedLLM) -> None:
    item = _items(lora_llm)[0]
    twice = sequence_losses(lora_llm.model, [item, item], lora_llm.tokenizer.pad_token_id)
    once = sequence_losses(lora_llm.model, [item], lora_llm.tokenizer.pad_token_id)
    assert torch.allclose(twice, once.expand(2), atol=1e-5)
