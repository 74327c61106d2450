"""LLM loading and the converted-weights cache; the embedded SmolLM2 (e2e). LoRA: test_lora.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
)

from crosslm_secure.config import EvalConfig, GenerationConfig, LLMConfig, TaskConfig
from crosslm_secure.errors import ModelError
from crosslm_secure.models.llm import (
    MANIFEST,
    WEIGHTS,
    cache_is_valid,
    ensure_model_cache,
    load_llm,
    write_model_cache,
)
from tests.tiny_models import tiny_llm_dir, tiny_llm_logits

CPU = torch.device("cpu")


def test_loads_a_local_folder_left_padded_in_eval_mode(tmp_path: Path) -> None:
    folder = tiny_llm_dir(tmp_path)
    llm = load_llm(LLMConfig(model=str(folder)), CPU)
    assert llm.tokenizer.padding_side == "left"
    assert llm.tokenizer.pad_token is not None
    assert not llm.model.training
    assert llm.device == CPU
    assert llm.source == str(folder)
    assert len(llm.fingerprint) == 64 and int(llm.fingerprint, 16) >= 0
    again = load_llm(LLMConfig(model=str(folder)), CPU)
    other = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path, seed=1, name="other"))), CPU)
    assert again.fingerprint == llm.fingerprint != other.fingerprint


def test_missing_folder_and_non_model_folder_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"not found; set llm.model"):
        load_llm(LLMConfig(model=str(tmp_path / "nope")), CPU)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"has no config.json"):
        load_llm(LLMConfig(model=str(tmp_path / "empty")), CPU)
    with pytest.raises(ModelError, match=r"GGUF file .* not found"):
        load_llm(LLMConfig(model=str(tmp_path / "empty"), gguf_file="x.gguf"), CPU)


def test_cache_is_written_once_verified_and_rebuilt_when_corrupt(tmp_path: Path) -> None:
    source_dir = tiny_llm_dir(tmp_path)
    source = source_dir / "model.safetensors"
    calls: list[int] = []

    def convert():
        calls.append(1)
        llm = load_llm(LLMConfig(model=str(source_dir)), CPU)
        return llm.model, llm.tokenizer

    cache = tmp_path / "cache" / "tiny"
    assert ensure_model_cache(cache, source=source, convert=convert) == cache
    assert cache_is_valid(cache, source=source)
    manifest = json.loads((cache / MANIFEST).read_text())
    assert load_llm(LLMConfig(model=str(cache)), CPU).fingerprint == manifest["weights_sha256"]
    ensure_model_cache(cache, source=source, convert=convert)
    assert len(calls) == 1, "a valid cache must be reused"

    weights = cache / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated by a crash or a full disk
    assert not cache_is_valid(cache, source=source)
    ensure_model_cache(cache, source=source, convert=convert)
    assert len(calls) == 2 and cache_is_valid(cache, source=source)
    reloaded = load_llm(LLMConfig(model=str(cache)), CPU)
    original = load_llm(LLMConfig(model=str(source_dir)), CPU)
    expected = tiny_llm_logits(original.model, original.tokenizer)
    assert torch.equal(tiny_llm_logits(reloaded.model, reloaded.tokenizer), expected)
    assert not list(cache.parent.glob(".*")), "no temporary folders may be left behind"


def test_cache_of_another_source_is_not_reused(tmp_path: Path) -> None:
    source_dir = tiny_llm_dir(tmp_path)
    llm = load_llm(LLMConfig(model=str(source_dir)), CPU)
    cache = tmp_path / "cache"
    write_model_cache(llm.model, llm.tokenizer, cache, source=source_dir / "model.safetensors")
    assert not cache_is_valid(cache, source=source_dir / "config.json")
    (cache / MANIFEST).unlink()
    assert not cache_is_valid(cache, source=source_dir / "model.safetensors")


def test_cache_writer_drops_a_gguf_quantization_config(tmp_path: Path) -> None:
    llm = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path))), CPU)
    llm.model.config.quantization_config = {"quant_method": "gguf"}
    write_model_cache(llm.model, llm.tokenizer, tmp_path / "cache", source=tmp_path / "tiny-llm" / "config.json")
    saved = json.loads((tmp_path / "cache" / "config.json").read_text())
    assert "quantization_config" not in saved
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "cache") is not None


@pytest.mark.e2e
def test_embedded_smollm2_loads_from_cache_and_runs(tmp_path: Path) -> None:
    from crosslm_secure.eval.llm_eval import llm_perplexity
    from crosslm_secure.server.generation import generate_synthetic

    llm = load_llm(LLMConfig(), CPU)
    assert "SmolLM2" in llm.source and len(llm.fingerprint) == 64
    samples = generate_synthetic(
        llm,
        TaskConfig(),
        GenerationConfig(samples_per_label=1, max_new_tokens=24, min_chars=5),
        round_index=0,
        seed=0,
        progress=False,
    )
    assert samples and all(s.text for s in samples)
    perplexity = llm_perplexity(llm, EvalConfig(perplexity_chunks=2, perplexity_chunk_tokens=64), progress=False)
    assert 1.0 < perplexity < 200.0
