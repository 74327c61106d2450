"""LLM zero-shot task accuracy (label log-likelihood) and perplexity on general text."""

from __future__ import annotations

import math

import pytest
import torch

from crosslm_secure.config import EvalConfig, LLMConfig, TaskConfig
from crosslm_secure.data.public_text import general_text
from crosslm_secure.data.records import Example
from crosslm_secure.errors import ConfigError
from crosslm_secure.eval.llm_eval import (
    CONTENT_FREE,
    calibrated_predictions,
    classification_prompt,
    fit_label_bias,
    label_answers,
    label_logits,
    label_token_ids,
    llm_perplexity,
    llm_task_accuracy,
    perplexity_chunks,
)
from crosslm_secure.models.llm import LoadedLLM, encode_prompt, left_pad, load_llm, render_prompt
from tests.tiny_models import separable_examples, tiny_llm_dir

TASK = TaskConfig()
EVAL = EvalConfig(llm_batch_size=4, llm_max_length=96, perplexity_chunks=3, perplexity_chunk_tokens=32)


def test_accuracy_is_in_range_and_counts_every_example(tiny_llm: LoadedLLM) -> None:
    examples = separable_examples(4)[:10]
    result = llm_task_accuracy(tiny_llm, examples, TASK, EVAL, progress=False)
    assert set(result) == {"accuracy", "macro_f1", "n", "predicted"}
    assert result["n"] == 10 and len(result["predicted"]) == 10
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["macro_f1"] <= 1.0
    assert not tiny_llm.model.training


def test_batched_prediction_equals_one_by_one_with_left_padding(tiny_llm: LoadedLLM) -> None:
    """Left padding must not change a prediction: compare batched scores with single ones."""
    texts = ["bad", "the drug was fine and it helped my pain a lot, great relief"]
    targets = label_token_ids(tiny_llm.tokenizer, TASK)
    encoded = [classification_prompt(tiny_llm.tokenizer, TASK, t) for t in texts]
    with torch.no_grad():
        ids, mask, positions = left_pad(encoded, tiny_llm.tokenizer.pad_token_id, torch.device("cpu"))
        batched = tiny_llm.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]
        for row, single in enumerate(encoded):
            alone = tiny_llm.model(input_ids=torch.tensor([single])).logits[0, -1]
            assert torch.allclose(batched[row, targets], alone[targets], atol=1e-4)


def test_prompt_is_chat_templated_and_only_the_text_is_truncated(tiny_llm: LoadedLLM) -> None:
    tokenizer = tiny_llm.tokenizer
    short = classification_prompt(tokenizer, TASK, "it helped")
    expected = render_prompt(tokenizer, TASK.classify_template.format(text="it helped"))
    assert short == encode_prompt(tokenizer, expected)
    long_text = "great relief and no pain at all " * 60
    cut = classification_prompt(tokenizer, TASK, long_text, max_tokens=80)
    assert len(cut) <= 80
    rendered = tokenizer.decode(cut)
    assert "Is the sentiment of this review negative, neutral or positive?" in rendered
    assert rendered.rstrip().endswith("assistant")
    with pytest.raises(ConfigError, match="needs .* tokens without the text"):
        classification_prompt(tokenizer, TASK, long_text, max_tokens=8)


def test_answers_follow_the_prompt_style(tmp_path) -> None:
    plain = load_llm(LLMConfig(model=str(tiny_llm_dir(tmp_path, chat=False))), torch.device("cpu"))
    assert label_answers(plain.tokenizer, TASK) == [" negative", " neutral", " positive"]
    custom = TaskConfig(verbalizers={"positive": "good"})
    assert label_answers(plain.tokenizer, custom)[2] == " good"


def test_verbalizers_sharing_a_first_token_are_refused(tiny_llm: LoadedLLM) -> None:
    ids = label_token_ids(tiny_llm.tokenizer, TASK)
    assert len(set(ids)) == 3
    clash = TaskConfig(verbalizers={"negative": "not good", "positive": "not bad"})
    with pytest.raises(ConfigError, match=r"\['negative', 'positive'\] start with the same LLM token"):
        llm_task_accuracy(tiny_llm, [Example("a", "x", 0)], clash, EVAL, progress=False)


def test_general_text_is_deterministic_english() -> None:
    text = general_text()
    assert text == general_text() and len(text) > 100_000
    assert general_text(500) == text[:500]
    assert sum(text.count(w) for w in (" the ", " and ", " is ")) > 1000


def test_perplexity_chunks_are_consecutive_general_text(tiny_llm: LoadedLLM) -> None:
    tokenizer = tiny_llm.tokenizer
    chunks = perplexity_chunks(tokenizer, EVAL)
    assert len(chunks) == 3 and all(len(c) == 32 for c in chunks)
    start = tokenizer(general_text(2000), add_special_tokens=False)["input_ids"]
    assert sum(chunks, []) == start[: 3 * 32]


def test_perplexity_is_finite_deterministic_and_near_vocab_size_for_random_weights(
    tiny_llm: LoadedLLM,
) -> None:
    first = llm_perplexity(tiny_llm, EVAL, progress=False)
    assert first == llm_perplexity(tiny_llm, EVAL, progress=False)
    assert math.isfinite(first) and first > 1.0
    # A random model is no better than guessing, so its perplexity is of the vocabulary's order.
    assert first > len(tiny_llm.tokenizer) / 10


def test_contextual_calibration_removes_the_bias_the_prompt_alone_shows() -> None:
    # The raw scores favour label 0 for every example by the same margin the content-free inputs show.
    bias = torch.tensor([2.0, 0.0, 0.0])
    signal = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.5, 0.0]])
    scores = signal + bias
    assert scores.argmax(dim=1).tolist() == [0, 0, 0, 0]
    free = torch.stack([bias, bias + 0.0, bias])
    assert calibrated_predictions(scores, free).tolist() == [2, 1, 0, 1]


def test_calibrated_accuracy_scores_the_content_free_prompts_once_more(tiny_llm: LoadedLLM) -> None:
    examples = separable_examples(4)[:10]
    plain = llm_task_accuracy(tiny_llm, examples, TASK, EVAL, progress=False)
    calibrated = llm_task_accuracy(tiny_llm, examples, TASK, EVAL, progress=False, calibrate=True)
    assert calibrated["n"] == plain["n"] == 10
    targets = label_token_ids(tiny_llm.tokenizer, TASK)
    prompts = [classification_prompt(tiny_llm.tokenizer, TASK, e.text, EVAL.llm_max_length) for e in examples]
    free = [classification_prompt(tiny_llm.tokenizer, TASK, t, EVAL.llm_max_length) for t in CONTENT_FREE]
    scores, free_scores = label_logits(tiny_llm, prompts, targets, 4), label_logits(tiny_llm, free, targets, 4)
    expected = calibrated_predictions(scores, free_scores)
    hits = sum(p == e.label for p, e in zip(expected.tolist(), examples, strict=True))
    assert calibrated["accuracy"] == pytest.approx(hits / 10)


def _texts_with_a_drift(offset: list[float], n: int = 300) -> tuple[torch.Tensor, list[int]]:
    """Label logits that carry each text's label (+3) and a drift the same for every text."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(offset), (n,), generator=generator)
    signal = 3 * torch.nn.functional.one_hot(labels, len(offset)) + 0.5 * torch.randn(
        n, len(offset), generator=generator
    )
    return signal + torch.tensor(offset), labels.tolist()


def test_the_label_bias_fit_undoes_a_drift_toward_one_label() -> None:
    scores, labels = _texts_with_a_drift([2.0, -1.0, -1.0])
    bias = fit_label_bias(scores, labels, [1.0] * len(labels))
    assert bias == pytest.approx([-2.0, 1.0, 1.0], abs=0.15)
    assert sum(bias) == pytest.approx(0.0, abs=1e-9)
    undrifted, _ = _texts_with_a_drift([0.0, 0.0, 0.0])
    assert fit_label_bias(undrifted, labels, [1.0] * len(labels)) == pytest.approx([0.0, 0.0, 0.0], abs=0.15)


def test_the_label_bias_fit_follows_the_weights() -> None:
    scores, labels = _texts_with_a_drift([1.0, 0.0])
    # The same texts twice: their true labels at weight 1, and all-label-0 copies at weight 0.
    doubled = torch.cat([scores, scores])
    wrong = labels + [0] * len(labels)
    weights = [1.0] * len(labels) + [0.0] * len(labels)
    assert fit_label_bias(doubled, wrong, weights) == pytest.approx(fit_label_bias(scores, labels, [1.0] * len(labels)))
    # Weighted toward label-0 texts, the fit must not push label 0 down as far.
    heavy = [3.0 if y == 0 else 1.0 for y in labels]
    assert fit_label_bias(scores, labels, heavy)[0] > fit_label_bias(scores, labels, [1.0] * len(labels))[0]


def test_a_label_no_text_carries_gets_a_finite_offset_below_the_others() -> None:
    scores, labels = _texts_with_a_drift([0.0, 0.0, 0.0])
    only_two = [i for i, y in enumerate(labels) if y != 2]
    bias = fit_label_bias(scores[only_two], [labels[i] for i in only_two], [1.0] * len(only_two))
    assert all(math.isfinite(b) for b in bias) and bias[2] < min(bias[:2])


@pytest.mark.parametrize("weights", [[0.0, 0.0], [1.0, -1.0], [1.0]])
def test_the_label_bias_fit_refuses_weights_that_define_nothing(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="fit_label_bias"):
        fit_label_bias(torch.zeros(2, 2), [0, 1], weights)


def test_a_label_bias_moves_the_answers_and_the_unbiased_score_is_kept(tiny_llm: LoadedLLM) -> None:
    examples = separable_examples(4)[:10]
    plain = llm_task_accuracy(tiny_llm, examples, TASK, EVAL, progress=False)
    zero = llm_task_accuracy(tiny_llm, examples, TASK, EVAL, progress=False, label_bias=[0.0, 0.0, 0.0])
    assert zero["predicted"] == plain["predicted"] and zero["macro_f1_without_bias"] == plain["macro_f1"]
    pushed = llm_task_accuracy(tiny_llm, examples, TASK, EVAL, progress=False, label_bias=[0.0, 0.0, 100.0])
    assert pushed["predicted"] == [2] * 10 and pushed["macro_f1_without_bias"] == plain["macro_f1"]
