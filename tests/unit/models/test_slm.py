"""SLM loading: local folders, fresh heads, seeding, errors; the embedded MiniLM (e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crosslm_secure.config import SLMConfig
from crosslm_secure.errors import ModelError
from crosslm_secure.models.slm import load_slm
from tests.tiny_models import tiny_bert_dir

CPU = torch.device("cpu")


def test_loads_a_local_folder_in_eval_mode_with_the_asked_head(tmp_path: Path) -> None:
    folder = tiny_bert_dir(tmp_path, num_labels=3)
    tokenizer, model = load_slm(SLMConfig(model=str(folder), pooling="cls", trainable="full"), 5, CPU)
    assert not model.training
    assert model.config.num_labels == 5
    assert next(model.parameters()).dtype == torch.float32
    encoded = tokenizer(["good drug"], return_tensors="pt")
    assert model(**encoded).logits.shape == (1, 5)


def test_seed_fixes_the_new_head_and_keeps_the_encoder(tmp_path: Path) -> None:
    folder = tiny_bert_dir(tmp_path, num_labels=2)
    _, first = load_slm(SLMConfig(model=str(folder), pooling="cls", trainable="full"), 4, CPU, seed=1)
    _, again = load_slm(SLMConfig(model=str(folder), pooling="cls", trainable="full"), 4, CPU, seed=1)
    _, other = load_slm(SLMConfig(model=str(folder), pooling="cls", trainable="full"), 4, CPU, seed=2)
    assert torch.equal(first.classifier.weight, again.classifier.weight)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)
    encoder = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(first.state_dict()[encoder], other.state_dict()[encoder])


def test_missing_folder_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"slm.model folder .*absent not found"):
        load_slm(SLMConfig(model=str(tmp_path / "absent")), 3, CPU)


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        load_slm(SLMConfig(model=str(tmp_path / "empty")), 3, CPU)


def test_broken_folder_is_refused(tmp_path: Path) -> None:
    folder = tiny_bert_dir(tmp_path)
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(ModelError, match="cannot load an SLM classifier"):
        load_slm(SLMConfig(model=str(folder)), 3, CPU)


def test_fewer_than_two_labels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="at least 2 labels"):
        load_slm(SLMConfig(model=str(tmp_path)), 1, CPU)


@pytest.mark.e2e
def test_embedded_minilm_loads() -> None:
    tokenizer, model = load_slm(SLMConfig(), 3, CPU, seed=0)
    assert model.config.model_type == "bert" and model.config.hidden_size == 384
    assert model.config.num_hidden_layers == 6
    assert not model.training
    logits = model(**tokenizer(["This medicine helped a lot."], return_tensors="pt")).logits
    assert logits.shape == (1, 3)
