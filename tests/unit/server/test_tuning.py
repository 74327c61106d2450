"""Feedback-weighted LoRA tuning: the weight mapping, the training items, and that tuning learns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from crosslm_secure.config import LLMConfig, LoraConfig, TaskConfig, TuningConfig
from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.errors import ModelError
from crosslm_secure.eval.llm_eval import classification_prompt, label_answers
from crosslm_secure.models.device import eval_mode
from crosslm_secure.models.llm import LoadedLLM, encode_prompt, load_llm
from crosslm_secure.models.lora import add_lora
from crosslm_secure.server.generation import sample_id, sample_prompt
from crosslm_secure.server.tuning import (
    build_tuning_items,
    counter_weights,
    feedback_weights,
    offset_weights,
    tune_llm,
)
from crosslm_secure.server.tuning_loss import IGNORE, sequence_losses
from tests.tiny_models import tiny_llm_dir

TASK = TaskConfig()
TEXTS = [
    "terrible nausea and pain, this drug was useless",
    "it was okay, mild side effects, average relief",
    "great medicine, it helped my pain a lot",
    "awful, it made my pain worse",
    "fine for now, mixed results",
    "excellent relief, I love this drug",
]
SAMPLES = [SyntheticSample(sample_id(1, i % 3, i // 3), text, i % 3) for i, text in enumerate(TEXTS)]


def feedback_loss(
    llm: LoadedLLM,
    samples: Sequence[SyntheticSample],
    mean_scores: np.ndarray,
    task: TaskConfig,
    tuning: TuningConfig,
    *,
    accepted: np.ndarray,
) -> float:
    """The tuning objective on this feedback, without training (mean over items); built from the
    library's own items and per-sequence losses, so it measures what ``tune_llm`` minimises."""
    items = build_tuning_items(llm.tokenizer, samples, mean_scores, task, tuning, accepted=accepted)
    if not items:
        return 0.0
    total = 0.0
    with eval_mode(llm.model), torch.no_grad():
        for start in range(0, len(items), tuning.batch_size):
            batch = items[start : start + tuning.batch_size]
            losses = sequence_losses(llm.model, batch, llm.tokenizer.pad_token_id)
            coefficients = torch.tensor([i.coefficient for i in batch], device=losses.device)
            total += float((losses * coefficients).sum())
    return total / len(items)


@pytest.fixture()
def tiny_llm(tmp_path) -> LoadedLLM:
    llm = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path))), torch.device("cpu"))
    llm.model = add_lora(llm.model, LoraConfig(r=4, alpha=8, dropout=0.0))
    return llm


def test_weights_are_zero_below_threshold_and_average_one_above() -> None:
    scores = np.array([0.1, 0.49, 0.5, 0.9, 1.3, -0.2])
    weights, mask = feedback_weights(scores, accepted=np.asarray(scores) >= 0.5, unlikelihood_threshold=0.2)
    assert weights[[0, 1, 5]].tolist() == [0.0, 0.0, 0.0]
    accepted = weights[[2, 3, 4]]
    assert accepted.mean() == pytest.approx(1.0)
    assert accepted[0] < accepted[1] < accepted[2], "a higher score weighs more (1.3 is clipped to 1)"
    assert accepted[2] / accepted[0] == pytest.approx(1.0 / 0.5)
    assert mask.tolist() == [True, False, False, False, False, True]


def test_no_accepted_sample_gives_all_zero_weights() -> None:
    weights, mask = feedback_weights(
        np.array([0.1, 0.3]), accepted=np.array([False, False]), unlikelihood_threshold=0.2
    )
    assert not weights.any() and mask.tolist() == [True, False]


def test_bad_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        feedback_weights(np.array([0.5, np.nan]), accepted=np.array([True, False]), unlikelihood_threshold=0.2)
    with pytest.raises(ValueError, match="1-D"):
        feedback_weights(np.ones((2, 2)), accepted=np.ones((2, 2), dtype=bool), unlikelihood_threshold=0.2)


def test_every_sample_weighting_weighs_each_label_to_mean_one_by_score() -> None:
    scores = np.array([0.9, 0.3, 0.0, 0.6, 0.6, 1.4])
    labels = np.array([0, 0, 0, 1, 1, 1])
    accepted = np.array([True, False, False, True, False, False])
    weights, mask = feedback_weights(
        scores, accepted=accepted, unlikelihood_threshold=0.2, labels=labels, weighting="every_sample"
    )
    assert weights[labels == 0].mean() == pytest.approx(1.0) and weights[labels == 1].mean() == pytest.approx(1.0)
    assert weights[0] / weights[1] == pytest.approx(3.0), "within a label, weight follows the score"
    assert weights[1] > 0, "a sample the acceptance rule left out still counts"
    assert weights[2] == 0.0 and weights[5] == pytest.approx(1.0 / (2.2 / 3)), "scores are clipped to [0, 1]"
    assert mask.tolist() == [False, False, True, False, False, False], "only a sample that weighs 0 is pushed down"


def test_every_sample_weighting_of_flat_scores_is_uniform_and_needs_labels() -> None:
    flat = np.full(4, 0.5)
    weights, _ = feedback_weights(
        flat,
        accepted=np.zeros(4, dtype=bool),
        unlikelihood_threshold=0.2,
        labels=np.array([0, 1, 0, 1]),
        weighting="every_sample",
    )
    assert weights.tolist() == [1.0, 1.0, 1.0, 1.0], "uninformative scores tune on every sample alike"
    with pytest.raises(ValueError, match="one intended label per score"):
        feedback_weights(flat, accepted=np.zeros(4, dtype=bool), unlikelihood_threshold=0.2, weighting="every_sample")


def test_the_label_offsets_weigh_each_pair_by_its_clipped_score() -> None:
    # Label 1's samples (positions 1 and 4) are the ones the clients doubt.
    scores = np.array([0.9, 0.1, 0.8, 0.7, -0.2, 1.3])
    accepted = np.array([True, False, True, True, False, True])
    every = offset_weights(SAMPLES, scores, TuningConfig(), accepted=accepted, weighting="every_pair")
    assert every.tolist() == [0.9, 0.1, 0.8, 0.7, 0.0, 1.0]
    by_label = [every[[i for i, s in enumerate(SAMPLES) if s.intended_label == c]].sum() for c in range(3)]
    assert by_label[1] < min(by_label[0], by_label[2])
    # Pairs only for the accepted samples under "accepted"; equal scores weigh every pair 1.
    only = offset_weights(SAMPLES, scores, TuningConfig(), accepted=accepted, weighting="accepted")
    assert only.tolist() == [0.9, 0.0, 0.8, 0.7, 0.0, 1.0]
    flat = offset_weights(SAMPLES, np.ones(6), TuningConfig(), accepted=np.ones(6, bool), weighting="accepted")
    assert flat.tolist() == [1.0] * 6


def test_every_sample_weighting_tunes_on_samples_the_rule_left_out(tiny_llm: LoadedLLM) -> None:
    scores = np.array([0.9, 0.1, 0.6, 0.4, 0.8, 0.05])
    accepted = scores >= 0.5
    tuning = TuningConfig(max_length=256)
    chosen = build_tuning_items(tiny_llm.tokenizer, SAMPLES, scores, TASK, tuning, accepted=accepted)
    every = build_tuning_items(
        tiny_llm.tokenizer, SAMPLES, scores, TASK, tuning, accepted=accepted, weighting="every_sample"
    )
    assert [i.kind for i in chosen].count("generation") == 3
    assert [i.kind for i in every].count("generation") == 6 and [i.kind for i in every].count("pair") == 6
    generation = [i.coefficient for i in every if i.kind == "generation"]
    assert generation[1] == pytest.approx(0.1 / np.mean([0.1, 0.8])), "SAMPLES[1] and [4] are label 1"
    assert generation[5] == pytest.approx(0.05 / np.mean([0.6, 0.05]))


def test_every_pair_weighting_writes_like_accepted_and_classifies_every_sample(tiny_llm: LoadedLLM) -> None:
    scores = np.array([0.9, 0.1, 0.6, 0.4, 0.8, 0.05])
    accepted = scores >= 0.5
    tuning = TuningConfig(max_length=256, unlikelihood_weight=0.5)
    chosen = build_tuning_items(tiny_llm.tokenizer, SAMPLES, scores, TASK, tuning, accepted=accepted)
    pairs = build_tuning_items(
        tiny_llm.tokenizer, SAMPLES, scores, TASK, tuning, accepted=accepted, weighting="every_pair"
    )
    written = [(i.input_ids, i.coefficient) for i in chosen if i.kind != "pair"]
    assert [(i.input_ids, i.coefficient) for i in pairs if i.kind != "pair"] == written
    assert [i.kind for i in pairs].count("unlikelihood") == 2, "the rejected low scorers are still pushed down"
    coefficients = [i.coefficient for i in pairs if i.kind == "pair"]
    assert len(coefficients) == 6
    assert coefficients[1] == pytest.approx(0.1 / np.mean([0.1, 0.8]))


def test_items_mask_the_prompt_and_reuse_generation_and_eval_prompts(tiny_llm: LoadedLLM) -> None:
    tokenizer = tiny_llm.tokenizer
    scores = np.array([0.9, 0.1, 0.6, 0.4, 0.8, 0.05])
    tuning = TuningConfig(unlikelihood_weight=0.5, max_length=256)
    items = build_tuning_items(tokenizer, SAMPLES, scores, TASK, tuning, accepted=np.asarray(scores) >= 0.5)
    kinds = [i.kind for i in items]
    assert kinds.count("generation") == 3 and kinds.count("pair") == 3
    assert kinds.count("unlikelihood") == 2, "scores 0.1 and 0.05 are below 0.2; 0.4 is neither"
    first, pair = items[0], items[1]
    prompt = encode_prompt(tokenizer, sample_prompt(tokenizer, TASK, SAMPLES[0]))
    assert first.input_ids[: len(prompt)] == prompt
    assert first.labels[: len(prompt)] == [IGNORE] * len(prompt)
    assert first.labels[len(prompt) :] == first.input_ids[len(prompt) :]
    assert first.labels[-1] == tokenizer.eos_token_id
    question = classification_prompt(tokenizer, TASK, SAMPLES[0].text)
    answer = tokenizer(label_answers(tokenizer, TASK)[0], add_special_tokens=False)["input_ids"]
    assert pair.input_ids == question + answer
    assert pair.labels == [IGNORE] * len(question) + answer
    unlikely = [i for i in items if i.kind == "unlikelihood"]
    assert all(i.coefficient == 0.5 for i in unlikely)


def test_items_respect_max_length_and_pairs_can_be_off(tiny_llm: LoadedLLM) -> None:
    tuning = TuningConfig(max_length=40, classification_pairs=False)
    items = build_tuning_items(tiny_llm.tokenizer, SAMPLES, np.ones(6), TASK, tuning, accepted=np.ones(6, dtype=bool))
    assert items and all(i.kind == "generation" for i in items)
    assert all(len(i.input_ids) <= 40 for i in items)
    with pytest.raises(ValueError, match="6 samples but 2 mean scores"):
        build_tuning_items(tiny_llm.tokenizer, SAMPLES, np.ones(2), TASK, tuning, accepted=np.ones(2, dtype=bool))


def test_tuning_lowers_the_weighted_loss_and_leaves_eval_mode(tiny_llm: LoadedLLM) -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.95, 0.6])
    tuning = TuningConfig(epochs=4, learning_rate=3e-2, batch_size=4)
    before = feedback_loss(tiny_llm, SAMPLES, scores, TASK, tuning, accepted=scores >= 0.5)
    frozen = {n: p.clone() for n, p in tiny_llm.model.named_parameters() if not p.requires_grad}
    report = tune_llm(tiny_llm, SAMPLES, scores, TASK, tuning, accepted=scores >= 0.5, seed=0, progress=False)
    after = feedback_loss(tiny_llm, SAMPLES, scores, TASK, tuning, accepted=scores >= 0.5)
    assert after < 0.8 * before
    assert report.steps == 4 * 3 and report.weighted_samples == 5 and report.label_pairs == 5
    assert np.isfinite(report.mean_loss) and report.seconds > 0
    assert not tiny_llm.model.training
    for name, param in tiny_llm.model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"{name} is not a LoRA weight and must not move"


def test_unlikelihood_pushes_rejected_text_down(tiny_llm: LoadedLLM) -> None:
    scores = np.zeros(len(SAMPLES))
    probe = TuningConfig(unlikelihood_threshold=0.5, unlikelihood_weight=1.0, classification_pairs=False)
    likely = TuningConfig(classification_pairs=False)
    text_nll_before = feedback_loss(tiny_llm, SAMPLES, np.ones(6), TASK, likely, accepted=np.ones(6, dtype=bool))
    report = tune_llm(
        tiny_llm,
        SAMPLES,
        scores,
        TASK,
        probe.model_copy(update={"epochs": 3, "learning_rate": 1e-2}),
        accepted=scores >= 0.5,
        seed=0,
        progress=False,
    )
    assert report.unlikelihood_samples == 6 and report.weighted_samples == 0
    assert feedback_loss(tiny_llm, SAMPLES, np.ones(6), TASK, likely, accepted=np.ones(6, dtype=bool)) > text_nll_before


def test_same_seed_same_adapter(tmp_path) -> None:
    def tuned_weights(seed: int) -> torch.Tensor:
        llm = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path))), torch.device("cpu"))
        llm.model = add_lora(llm.model, LoraConfig(r=4, dropout=0.1))
        tune_llm(
            llm,
            SAMPLES,
            np.ones(6),
            TASK,
            TuningConfig(learning_rate=1e-2),
            accepted=np.ones(6, dtype=bool),
            seed=seed,
            progress=False,
        )
        return torch.cat([p.detach().flatten() for p in llm.model.parameters() if p.requires_grad])

    first = tuned_weights(0)
    assert torch.equal(first, tuned_weights(0))
    assert not torch.equal(first, tuned_weights(1))


def test_tuning_without_lora_is_refused(tmp_path) -> None:
    llm = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path))), torch.device("cpu"))
    for param in llm.model.parameters():
        param.requires_grad_(False)
    with pytest.raises(ModelError, match="add_lora"):
        tune_llm(
            llm, SAMPLES, np.ones(6), TASK, TuningConfig(), accepted=np.ones(6, dtype=bool), seed=0, progress=False
        )


def test_zero_epochs_or_nothing_accepted_trains_nothing(tiny_llm: LoadedLLM) -> None:
    before = [p.clone() for p in tiny_llm.model.parameters() if p.requires_grad]
    report = tune_llm(
        tiny_llm, SAMPLES, np.zeros(6), TASK, TuningConfig(), accepted=np.zeros(6, dtype=bool), seed=0, progress=False
    )
    assert report.steps == 0 and report.weighted_samples == 0 and report.label_pairs == 0
    report = tune_llm(
        tiny_llm,
        SAMPLES,
        np.ones(6),
        TASK,
        TuningConfig(epochs=0),
        accepted=np.ones(6, dtype=bool),
        seed=0,
        progress=False,
    )
    assert report.steps == 0 and report.label_pairs == 6
    after = [p for p in tiny_llm.model.parameters() if p.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_counter_pairs_teach_the_labels_the_clients_read_for_doubted_samples_only(tiny_llm: LoadedLLM) -> None:
    scores = np.array([0.9, 0.1, 0.6, 0.4, 0.8, 0.05])  # labels 0 1 2 0 1 2; below 1/3: samples 1 and 5
    accepted = scores >= 0.5
    plain = TuningConfig(max_length=256)
    counter = TuningConfig(max_length=256, counter_pairs=True)
    weights = counter_weights(SAMPLES, scores, 3)
    assert np.flatnonzero(weights.sum(axis=1)).tolist() == [1, 5]
    assert weights[1].tolist() == pytest.approx([0.9 / 2 / np.mean([0.1, 0.8]), 0.0, 0.9 / 2 / np.mean([0.1, 0.8])])
    assert weights[5, 2] == 0.0 and weights[5, 0] == pytest.approx(0.95 / 2 / np.mean([0.6, 0.05]))

    def pairs(tuning: TuningConfig, weighting: str, mean_scores: np.ndarray = scores) -> list[tuple[list[int], float]]:
        items = build_tuning_items(
            tiny_llm.tokenizer, SAMPLES, mean_scores, TASK, tuning, accepted=accepted, weighting=weighting
        )
        return [(i.input_ids, i.coefficient) for i in items if i.kind == "pair"]

    base, extra = pairs(plain, "every_pair"), pairs(counter, "every_pair")
    assert len(base) == 6 and len(extra) == 10, "two other labels for each of the two doubted samples"
    assert extra[:2] + extra[4:8] == base, "each sample's own pair is unchanged, its counter pairs follow it"
    relabelled = [(1, 0), (1, 2), (5, 0), (5, 1)]
    other = [SyntheticSample(SAMPLES[k].sample_id, SAMPLES[k].text, label) for k, label in relabelled]
    items = build_tuning_items(tiny_llm.tokenizer, other, np.ones(4), TASK, plain, accepted=np.ones(4, dtype=bool))
    expected = [
        (i.input_ids, weights[k, label])
        for i, (k, label) in zip([i for i in items if i.kind == "pair"], relabelled, strict=True)
    ]
    assert [ids for ids, _ in extra[2:4] + extra[8:]] == [ids for ids, _ in expected]
    assert [c for _, c in extra[2:4] + extra[8:]] == pytest.approx([c for _, c in expected])
    assert len(pairs(counter, "accepted")) == len(pairs(plain, "accepted")) + 4, "whichever samples the rest pairs"
    assert pairs(counter, "every_pair", np.full(6, 0.5)) == pairs(plain, "every_pair", np.full(6, 0.5))
