"""NucleusWarper keeps exactly the tokens transformers' TopPLogitsWarper keeps, without the sort;
NucleusSampler draws from them with top-p sampling's probabilities."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from crosslm_secure.config import GenerationConfig, TaskConfig
from crosslm_secure.models.sampling import (
    NucleusSampler,
    NucleusWarper,
    draws,
    reference_processors,
    sampling_processors,
)
from crosslm_secure.server.generation import generate_synthetic

VOCAB = 49152
TASK = TaskConfig(labels=["negative", "positive"], generation_instructions=["Write a {label} review."])


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


def test_processors_apply_temperature_then_draw_from_the_nucleus() -> None:
    processors = sampling_processors(0.7, 0.9)
    assert [type(p) for p in processors] == [TemperatureLogitsWarper, NucleusSampler]
    assert [type(p) for p in sampling_processors(1.0, 1.0)] == [NucleusSampler]
    assert draws(processors)
    reference = reference_processors(0.7, 0.9)
    assert [type(p) for p in reference] == [TemperatureLogitsWarper, TopPLogitsWarper]
    assert not draws(reference)


@pytest.mark.parametrize("top_p", [0.9, 1.0])
def test_sampler_draws_with_top_p_probabilities(top_p: float) -> None:
    # Four rows, one for each of the sampler's paths at top-p 0.9: a peaked row (the top-256
    # window), a thousand near-equal tokens (the 2048 window), a flat row (the full sort), and a
    # dominant token. 2,000 draws from each against the probabilities transformers' warper
    # leaves: every draw inside the nucleus, frequencies within sampling error of them.
    vocab, per_call, calls = 8192, 200, 10
    noise = torch.randn(4, vocab, generator=torch.Generator().manual_seed(7))
    base = torch.stack([noise[0] * 6, noise[1] * 0.5 - 30, noise[2] * 0.5, noise[3]])
    base[1, :1000] += 35
    base[3, 0] = 8.0
    expected = TopPLogitsWarper(top_p)(None, base.clone()).softmax(dim=-1) if top_p < 1 else base.softmax(dim=-1)
    torch.manual_seed(5)
    drawn = []
    for _ in range(calls):
        out = NucleusSampler(top_p)(None, base.repeat(per_call, 1))
        assert ((out == 0).sum(dim=-1) == 1).all() and torch.isinf(out).sum() == out.numel() - len(out)
        drawn.append(out.argmax(dim=-1).view(per_call, len(base)))
    tokens = torch.cat(drawn).T
    assert (expected.gather(1, tokens) > 0).all(), "a token outside the nucleus was drawn"
    # Total variation from the distribution, against a control drawn with torch.multinomial
    # from the expected probabilities (what generate(do_sample=True) does).
    control = torch.multinomial(expected, per_call * calls, replacement=True)
    tv, control_tv = _total_variation(tokens, expected), _total_variation(control, expected)
    assert (tv < control_tv * 1.2 + 0.02).all(), (tv, control_tv)


def _total_variation(tokens: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    frequency = torch.stack([torch.bincount(row, minlength=probs.shape[-1]) for row in tokens]) / tokens.shape[1]
    return (frequency - probs).abs().sum(dim=-1) / 2


def test_sampler_with_a_greedy_generate_samples_and_repeats_per_seed(tiny_llm) -> None:
    gen = GenerationConfig(samples_per_label=6, max_new_tokens=12, batch_size=4, min_chars=1, temperature=0.8)
    first = generate_synthetic(tiny_llm, TASK, gen, round_index=1, seed=3, progress=False)
    again = generate_synthetic(tiny_llm, TASK, gen, round_index=1, seed=3, progress=False)
    other = generate_synthetic(tiny_llm, TASK, gen, round_index=1, seed=4, progress=False)
    assert [(s.sample_id, s.text) for s in first] == [(s.sample_id, s.text) for s in again]
    assert len({s.text for s in first}) > len(first) // 2, "greedy decoding of the same prompts would repeat texts"
    assert [s.text for s in first] != [s.text for s in other]


def test_processors_filter_what_generates_own_warpers_filter(tiny_llm) -> None:
    # The warper on its own in generate(do_sample=True) draws what transformers' top-p draws.
    tokenizer, model = tiny_llm.tokenizer, tiny_llm.model
    encoded = tokenizer(["the film was", "a story of"], return_tensors="pt", padding=True)
    common = {"do_sample": True, "top_k": 0, "max_new_tokens": 16, "pad_token_id": tokenizer.pad_token_id}
    torch.manual_seed(11)
    builtin = model.generate(**encoded, temperature=0.8, top_p=0.9, **common)
    torch.manual_seed(11)
    ours = model.generate(
        **encoded,
        temperature=1.0,
        top_p=1.0,
        logits_processor=[TemperatureLogitsWarper(0.8), NucleusWarper(0.9)],
        **common,
    )
    assert torch.equal(ours, builtin)


def test_the_models_own_sampling_settings_change_nothing_and_raise_no_warning(tiny_llm, caplog, monkeypatch) -> None:
    # A model whose generation config samples at its own temperature and top-p: our draw is the
    # only one, and generate reports no flags it ignores. monkeypatch restores the shared model.
    config = tiny_llm.model.generation_config
    gen = GenerationConfig(samples_per_label=4, max_new_tokens=12, batch_size=8, min_chars=1)
    plain = generate_synthetic(tiny_llm, TASK, gen, round_index=1, seed=3, progress=False)
    for name, value in {"do_sample": True, "temperature": 0.3, "top_p": 0.5, "top_k": 5}.items():
        monkeypatch.setattr(config, name, value)
    with caplog.at_level(logging.WARNING):
        sampled = generate_synthetic(tiny_llm, TASK, gen, round_index=1, seed=3, progress=False)
    assert not [r.getMessage() for r in caplog.records if "generation flags" in r.getMessage()]
    assert [s.text for s in sampled] == [s.text for s in plain]
