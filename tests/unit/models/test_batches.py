"""Batching: Opacus-safe input shapes, input filtering, seeded shuffles, ordered probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslm_secure.config import SLMConfig
from crosslm_secure.data.records import Example
from crosslm_secure.models.batches import (
    encode_examples,
    encode_texts,
    iterate_batches,
    model_inputs,
    num_batches,
    predict_proba,
    sentence_embeddings,
)
from crosslm_secure.models.slm import load_slm
from tests.tiny_models import tiny_bert_dir

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, torch.nn.Module]:
    folder = tiny_bert_dir(tmp_path_factory.mktemp("batches"))
    return load_slm(SLMConfig(model=str(folder)), 3, CPU, seed=0)


def test_every_input_has_a_real_batch_dimension(tiny: tuple) -> None:
    tokenizer, _ = tiny
    inputs = encode_texts(tokenizer, ["good", "the drug was great and helped"], max_length=6)
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids", "position_ids"}
    for tensor in inputs.values():
        assert tensor.shape == (2, 6) and tensor.dtype == torch.long
        assert tensor.is_contiguous() and tensor.stride(0) == 6  # not a broadcast view
    assert inputs["position_ids"].tolist() == [list(range(6))] * 2
    assert inputs["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]


def test_pad_to_max_length_fixes_the_shape(tiny: tuple) -> None:
    tokenizer, _ = tiny
    inputs, labels = encode_examples(tokenizer, [Example("a", "good", 2)], max_length=12, pad_to_max_length=True)
    assert inputs["input_ids"].shape == (1, 12)
    assert labels.tolist() == [2]


def test_model_inputs_drop_what_a_model_does_not_take(tiny: tuple) -> None:
    tokenizer, model = tiny
    inputs = encode_texts(tokenizer, ["fine"], max_length=8)

    class NoPositions(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return input_ids

    assert set(model_inputs(model, inputs, CPU)) == set(inputs)
    assert set(model_inputs(NoPositions(), inputs, CPU)) == {"input_ids", "attention_mask"}


def test_iterate_batches_is_seeded_and_covers_everything() -> None:
    examples = [Example(str(i), "x", 0) for i in range(10)]

    def order(seed: int | None) -> list[list[str]]:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return [[ex.uid for ex in batch] for batch in iterate_batches(examples, 4, generator=generator)]

    assert order(None) == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]
    assert order(1) == order(1) != order(2)
    assert sorted(uid for batch in order(1) for uid in batch) == sorted(ex.uid for ex in examples)
    assert [len(b) for b in iterate_batches(examples, 4, drop_last=True)] == [4, 4]
    assert num_batches(10, 4) == 3 and num_batches(10, 4, drop_last=True) == 2
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(iterate_batches(examples, 0))


def test_predict_proba_keeps_input_order_and_mode(tiny: tuple) -> None:
    tokenizer, model = tiny
    texts = ["the drug was great and it helped my pain", "bad", "okay fine", "i"]
    model.train()
    batched = predict_proba(tokenizer, model, texts, max_length=16, batch_size=2, device=CPU)
    assert model.training
    model.eval()
    single = np.stack([predict_proba(tokenizer, model, [t], max_length=16, batch_size=1, device=CPU)[0] for t in texts])
    assert batched.dtype == np.float64 and batched.shape == (4, 3)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-6)
    assert predict_proba(tokenizer, model, [], max_length=16, batch_size=2, device=CPU).shape == (0, 0)


def test_a_sentence_embedding_depends_only_on_its_own_text(tiny: tuple) -> None:
    # The site cache reuses embeddings across runs: a warm cache must not change a run's numbers,
    # so an embedding may not depend on its batch-mates, the batch size or the thread count.
    tokenizer, model = tiny
    texts = [
        "good",
        "the drug helped my pain a lot and i slept well for the first time in weeks",
        "no change",
        "it made me dizzy and tired for two days",
        "fine",
    ]
    together = sentence_embeddings(tokenizer, model, texts, max_length=24, batch_size=8)
    for i, text in enumerate(texts):
        alone = sentence_embeddings(tokenizer, model, [text], max_length=24, batch_size=1)
        assert torch.equal(alone[0], together[i]), f"text {i} changed with its batch"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = sentence_embeddings(tokenizer, model, texts[::-1], max_length=24, batch_size=2)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one_thread.flip(0), together)
