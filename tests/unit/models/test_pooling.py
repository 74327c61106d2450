"""The mean-pooling SLM: padding-invariant, round-trips its head, refuses a head of another size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crosslm_secure.config import SLMConfig
from crosslm_secure.errors import ModelError
from crosslm_secure.models.batches import encode_texts, forward_logits
from crosslm_secure.models.pooling import HEAD_FILE, MeanPoolingClassifier
from crosslm_secure.models.slm import load_slm
from tests.tiny_models import tiny_bert_dir

CPU = torch.device("cpu")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return tiny_bert_dir(tmp_path)


def test_mean_pooling_is_the_default_and_drops_the_unused_pooler(folder: Path) -> None:
    _, model = load_slm(SLMConfig(model=str(folder)), 3, CPU, seed=0)
    assert isinstance(model, MeanPoolingClassifier)
    assert getattr(model.encoder, "pooler", None) is None
    _, stock = load_slm(SLMConfig(model=str(folder), pooling="cls"), 3, CPU, seed=0)
    assert not isinstance(stock, MeanPoolingClassifier)


def test_padding_does_not_change_the_logits(folder: Path) -> None:
    tokenizer, model = load_slm(SLMConfig(model=str(folder)), 3, CPU, seed=0)
    alone = forward_logits(model, encode_texts(tokenizer, ["good relief"], 16), CPU)
    padded = forward_logits(
        model, encode_texts(tokenizer, ["good relief", "the drug was awful and my pain was worse"], 16), CPU
    )
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(padded[0], padded[1])


def test_saved_head_is_restored_and_a_wrong_size_is_refused(folder: Path, tmp_path: Path) -> None:
    tokenizer, model = load_slm(SLMConfig(model=str(folder)), 3, CPU, seed=0)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)
    saved = tmp_path / "checkpoint"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    assert (saved / HEAD_FILE).is_file()
    _, again = load_slm(SLMConfig(model=str(saved)), 3, CPU, seed=5)
    torch.testing.assert_close(again.classifier.weight, model.classifier.weight)
    with pytest.raises(ModelError, match="has 3 labels, the task has 4"):
        load_slm(SLMConfig(model=str(saved)), 4, CPU)
