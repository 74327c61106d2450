"""LoRA adapters on the LLM: add, save atomically, load for resume, and wrap without library notices."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from crosslm_secure.config import LLMConfig, LoraConfig
from crosslm_secure.errors import ModelError
from crosslm_secure.models.llm import load_llm
from crosslm_secure.models.lora import add_lora, load_lora, save_lora
from tests.tiny_models import tiny_llm_dir, tiny_llm_logits

CPU = torch.device("cpu")


def test_lora_round_trip_restores_the_adapter(tmp_path: Path) -> None:
    folder = tiny_llm_dir(tmp_path)
    lora = LoraConfig(r=4, alpha=8, dropout=0.0)
    llm = load_llm(LLMConfig(model=str(folder)), CPU)
    tuned = add_lora(llm.model, lora)
    trainable = [n for n, p in tuned.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    expected = tiny_llm_logits(tuned, llm.tokenizer)
    save_lora(tuned, tmp_path / "adapter")
    save_lora(tuned, tmp_path / "adapter")  # overwriting an existing adapter is atomic too

    fresh = load_llm(LLMConfig(model=str(folder)), CPU)
    assert not torch.allclose(tiny_llm_logits(fresh.model, fresh.tokenizer), expected)
    resumed = load_lora(fresh.model, tmp_path / "adapter")
    assert torch.allclose(tiny_llm_logits(resumed, fresh.tokenizer), expected, atol=1e-6)
    assert any(p.requires_grad for p in resumed.parameters())

    wrapped = add_lora(load_llm(LLMConfig(model=str(folder)), CPU).model, lora)
    assert torch.allclose(tiny_llm_logits(load_lora(wrapped, tmp_path / "adapter"), llm.tokenizer), expected, atol=1e-6)


def test_missing_or_corrupt_adapter_is_one_sentence(tmp_path: Path) -> None:
    folder = tiny_llm_dir(tmp_path)
    model = load_llm(LLMConfig(model=str(folder)), CPU).model
    with pytest.raises(ModelError, match="missing or incomplete"):
        load_lora(model, tmp_path / "nope")
    save_lora(add_lora(model, LoraConfig(r=4)), tmp_path / "adapter")
    other_rank = add_lora(load_llm(LLMConfig(model=str(folder)), CPU).model, LoraConfig(r=8))
    with pytest.raises(ModelError, match="does not fit this LLM"):
        load_lora(other_rank, tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"garbage")
    fresh = load_llm(LLMConfig(model=str(folder)), CPU).model
    with pytest.raises(ModelError, match="corrupt"):
        load_lora(fresh, tmp_path / "adapter")


def test_lora_with_unknown_target_modules_is_refused(tmp_path: Path) -> None:
    model = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path))), CPU).model
    with pytest.raises(ModelError, match="match no module"):
        add_lora(model, LoraConfig(target_modules=["no_such_proj"]))


def test_wrapping_and_resuming_print_no_library_deprecation_notice(tmp_path: Path) -> None:
    """peft reads transformers' deprecated ``is_gradient_checkpointing``: that notice reached every run's output."""
    folder = tiny_llm_dir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = add_lora(load_llm(LLMConfig(model=str(folder)), CPU).model, LoraConfig(r=4))
        save_lora(tuned, tmp_path / "adapter")
        load_lora(load_llm(LLMConfig(model=str(folder)), CPU).model, tmp_path / "adapter")
    notices = [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert not notices, notices
