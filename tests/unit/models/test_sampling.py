"""NucleusWarper keeps exactly the tokens transformers' TopPLogitsWarper keeps, without the sort."""

from __future__ import annotations

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from crosslm_secure.config import GenerationConfig, TaskConfig
from crosslm_secure.models.sampling import NucleusWarper, reference_processors, sampling_processors
from crosslm_secure.server.generation import generate_synthetic

VOCAB = 49152


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0, 4.0, 6.0, 12.0])
def test_keeps_the_same_tokens_as_transformers(top_p: float, scale: float) -> None:
    # Scales from nearly flat (the nucleus is most of the vocabulary: the full-sort fallback)
    # to peaked (a handful of tokens: the top-256 window); 4.0 puts several rows within 2e-6
    # of the boundary, where the tie rule has to hand the row to a full sort.
    scores = torch.randn(32, VOCAB, generator=torch.Generator().manual_seed(int(scale * 100))) * scale
    expected = TopPLogitsWarper(top_p)(None, scores.clone())
    got = NucleusWarper(top_p)(None, scores.clone())
    assert torch.equal(got, expected)


def test_uses_each_width_and_the_full_sort() -> None:
    # One peaked row fits the first window, one needs the second, one needs the full sort.
    scores = torch.full((3, VOCAB), -30.0)
    scores[0, :5] = 10.0
    scores[1, :1000] = 5.0
    scores[2, :] = torch.linspace(0, 1, VOCAB)
    expected = TopPLogitsWarper(0.9)(None, scores.clone())
    got = NucleusWarper(0.9)(None, scores.clone())
    assert torch.equal(got, expected)
    kept = (~torch.isinf(got)).sum(dim=-1).tolist()
    assert kept[0] == 5 and 256 < kept[1] <= 1000 and kept[2] > 4096


def test_always_keeps_the_most_likely_token() -> None:
    scores = torch.zeros(2, 10)
    scores[:, 3] = 50.0
    got = NucleusWarper(0.01)(None, scores)
    assert (~torch.isinf(got)).sum(dim=-1).tolist() == [1, 1]
    assert got[:, 3].tolist() == [50.0, 50.0]


@pytest.mark.parametrize("top_p", [0.0, -0.1, 1.5])
def test_refuses_a_probability_outside_zero_one(top_p: float) -> None:
    with pytest.raises(ValueError, match="top_p"):
        NucleusWarper(top_p)


def test_processors_apply_temperature_then_nucleus() -> None:
    processors = sampling_processors(0.7, 0.9)
    assert [type(p) for p in processors] == [TemperatureLogitsWarper, NucleusWarper]
    assert len(sampling_processors(1.0, 1.0)) == 0
    assert [type(p) for p in reference_processors(0.7, 0.9)] == [TemperatureLogitsWarper, TopPLogitsWarper]


def test_generation_draws_the_same_samples_as_transformers_top_p(tiny_llm) -> None:
    task = TaskConfig(labels=["negative", "positive"], generation_instructions=["Write a {label} review."])
    gen = GenerationConfig(samples_per_label=6, max_new_tokens=12, batch_size=4, min_chars=1, temperature=0.8)
    ours = generate_synthetic(tiny_llm, task, gen, round_index=1, seed=3, progress=False)
    theirs = generate_synthetic(
        tiny_llm, task, gen, round_index=1, seed=3, progress=False, sampling=reference_processors
    )
    assert [(s.sample_id, s.text) for s in ours] == [(s.sample_id, s.text) for s in theirs]
    assert len(ours) > 0


def test_processors_sample_what_generates_own_warpers_sample(tiny_llm) -> None:
    tokenizer, model = tiny_llm.tokenizer, tiny_llm.model
    encoded = tokenizer(["the film was", "a story of"], return_tensors="pt", padding=True)
    common = {"do_sample": True, "top_k": 0, "max_new_tokens": 16, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(11)
    builtin = model.generate(**encoded, temperature=0.8, top_p=0.9, **common)
    torch.manual_seed(11)
    ours = model.generate(
        **encoded, temperature=1.0, top_p=1.0, logits_processor=sampling_processors(0.8, 0.9), **common
    )
    assert torch.equal(ours, builtin)
