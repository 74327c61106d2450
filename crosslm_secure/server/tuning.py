"""Step 7 of a round: LoRA-tune the server LLM on the clients' aggregate feedback.

The objective per sample i with mean score s_i (docs/researchers.md, "What a run does", step 6):

* likelihood of ``prompt(label_i) -> text_i`` (completion tokens only), weighted by
  ``feedback_weights`` (the accepted samples, or every sample with ``tuning.weighting:
  every_sample``);
* if ``tuning.classification_pairs``: likelihood of ``classify(text_i) -> label_i``, weighted
  the same way (every sample's pair with ``tuning.weighting: every_pair``), so the LLM's task
  accuracy improves;
* if ``tuning.counter_pairs``: a sample the clients read as another label (``s_i`` below 1/K for
  K labels) also pairs ``classify(text_i)`` with every other label, each weighted
  ``(1 - s_i) / (K - 1)`` over its label's mean score, so the LLM learns the label the clients
  read where generation wrote the wrong one;
* if ``tuning.unlikelihood_weight > 0``: ``-log(1 - p(token))`` on the completion tokens of
  samples below ``tuning.unlikelihood_threshold``, times that weight.

Prompts come from ``server.generation.sample_prompt`` and ``eval.llm_eval.classification_prompt``,
the very functions generation and evaluation use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from crosslm_secure.config import TaskConfig, TuningConfig
from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.errors import ModelError
from crosslm_secure.eval.llm_eval import classification_prompt, label_answers
from crosslm_secure.models.llm import LoadedLLM, encode_prompt
from crosslm_secure.server.generation import sample_prompt
from crosslm_secure.server.tuning_loss import IGNORE, ItemKind, TuningItem, sequence_losses

Weighting = Literal["accepted", "every_pair", "every_sample"]


def feedback_weights(
    mean_scores: np.ndarray,
    *,
    accepted: np.ndarray,
    unlikelihood_threshold: float,
    labels: np.ndarray | None = None,
    weighting: Literal["accepted", "every_sample"] = "accepted",
) -> tuple[np.ndarray, np.ndarray]:
    """Map aggregate mean scores to likelihood weights and an unlikelihood mask.

    Scores are first clipped to [0, 1] (DP noise can push a mean outside). With ``weighting``
    ``"accepted"`` (``tuning.weighting``), an accepted sample (``server.acceptance.accept_samples``)
    with score ``s`` gets weight ``s / mean(accepted scores)``, so accepted weights average 1 and
    better-scored samples count more; every other sample gets weight 0. With ``"every_sample"``,
    every sample gets ``s / mean(scores of its intended label)``: each label's weights average 1,
    so the label balance generation wrote is kept, a sample the clients think mislabelled counts
    little, and flat (uninformative) scores give every sample weight 1. The unlikelihood mask marks
    samples with ``s < unlikelihood_threshold`` that were not accepted (and, with every_sample,
    that weigh 0).

    Args:
        mean_scores: one mean score per synthetic sample, shape ``(n,)``.
        accepted: boolean mask ``(n,)`` of accepted samples.
        unlikelihood_threshold: scores below this are pushed down (``tuning.unlikelihood_threshold``).
        labels: each sample's intended label index, shape ``(n,)``; needed by ``"every_sample"``.
        weighting: ``"accepted"`` or ``"every_sample"``, as above.

    Returns:
        ``(weights, mask)``: float64 weights ``(n,)`` and a boolean mask ``(n,)``.

    Raises:
        ValueError: the scores are not a 1-D array of finite numbers, or the mask differs in shape.
    """
    scores = np.asarray(mean_scores, dtype=np.float64)
    if scores.ndim != 1 or not np.all(np.isfinite(scores)):
        raise ValueError("feedback_weights: mean_scores must be a 1-D array of finite numbers")
    accepted = np.asarray(accepted, dtype=bool)
    if accepted.shape != scores.shape:
        raise ValueError(f"feedback_weights: {accepted.shape} accepted flags for {scores.shape} scores")
    scores = np.clip(scores, 0.0, 1.0)
    weights = np.zeros_like(scores)
    if weighting == "every_sample":
        if labels is None or np.shape(labels) != scores.shape:
            raise ValueError("feedback_weights: every_sample weighting needs one intended label per score")
        labels = np.asarray(labels)
        for label in np.unique(labels):
            group = labels == label
            weights[group] = scores[group] / max(scores[group].mean(), 1e-12)
    elif accepted.any():
        weights[accepted] = scores[accepted] / max(scores[accepted].mean(), 1e-12)
    mask = (scores < unlikelihood_threshold) & ~accepted & (weights == 0)
    return weights, mask


@dataclass
class TuneReport:
    """What one tuning call did."""

    steps: int
    mean_loss: float
    seconds: float
    weighted_samples: int
    """Samples whose generation likelihood had weight > 0."""
    label_pairs: int
    """``text -> label`` pairs added."""
    unlikelihood_samples: int = 0


def item_weights(
    samples: Sequence[SyntheticSample],
    mean_scores: np.ndarray,
    tuning: TuningConfig,
    *,
    accepted: np.ndarray,
    weighting: Weighting = "accepted",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: the generation weight, the unlikelihood mask and the text -> label pair weight.

    ``"accepted"`` weighs both by ``feedback_weights`` over the accepted samples; ``"every_sample"``
    weighs both by each sample's score over its label's mean; ``"every_pair"`` weighs the
    generation as ``"accepted"`` and the pairs as ``"every_sample"``.

    Raises:
        ValueError: scores and samples differ in number.
    """
    if len(samples) != len(np.asarray(mean_scores)):
        raise ValueError(f"tuning: {len(samples)} samples but {len(np.asarray(mean_scores))} mean scores")
    labels = np.array([s.intended_label for s in samples], dtype=np.int64)
    chosen = feedback_weights(mean_scores, accepted=accepted, unlikelihood_threshold=tuning.unlikelihood_threshold)
    if weighting == "accepted":
        return chosen[0], chosen[1], chosen[0]
    every = feedback_weights(
        mean_scores,
        accepted=accepted,
        unlikelihood_threshold=tuning.unlikelihood_threshold,
        labels=labels,
        weighting="every_sample",
    )
    weights, mask = chosen if weighting == "every_pair" else every
    return weights, mask, every[0]


def offset_weights(
    samples: Sequence[SyntheticSample],
    mean_scores: np.ndarray,
    tuning: TuningConfig,
    *,
    accepted: np.ndarray,
    weighting: Weighting = "accepted",
) -> np.ndarray:
    """Per sample, its weight in the label-offset fit (``tuning.label_bias: fit``): its score
    clipped to [0, 1] where it has a text -> label pair (``item_weights``), else 0.

    A score is the clients' aggregate belief that the sample carries its intended label, so a
    label whose samples they do not believe weighs less in the offsets; equal scores (a method
    without feedback) give every pair weight 1.
    """
    _, _, pair_weights = item_weights(samples, mean_scores, tuning, accepted=accepted, weighting=weighting)
    return np.where(pair_weights > 0, np.clip(np.asarray(mean_scores, dtype=np.float64), 0.0, 1.0), 0.0)


def build_tuning_items(
    tokenizer: PreTrainedTokenizerBase,
    samples: Sequence[SyntheticSample],
    mean_scores: np.ndarray,
    task: TaskConfig,
    tuning: TuningConfig,
    *,
    accepted: np.ndarray,
    weighting: Weighting = "accepted",
) -> list[TuningItem]:
    """All training sequences for one round's feedback (see the module docstring).

    ``weighting`` (``tuning.weighting``; the coordinator passes ``"accepted"`` when the method's
    scores carry no feedback): ``"accepted"`` and ``"every_sample"`` weigh both the generation
    likelihood and the text -> label pairs as ``feedback_weights`` does; ``"every_pair"`` weighs
    the generation likelihood as ``"accepted"`` (the LLM learns to write what the clients kept)
    and the pairs as ``"every_sample"`` (it learns to classify every sample, each by how surely
    the clients read its intended label).

    Raises:
        ValueError: scores and samples differ in number.
    """
    weights, mask, pair_weights = item_weights(samples, mean_scores, tuning, accepted=accepted, weighting=weighting)
    counter = counter_weights(samples, mean_scores, len(task.labels)) if tuning.counter_pairs else None
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    answers = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in label_answers(tokenizer, task)]
    items: list[TuningItem] = []
    for index, (sample, weight, pair_weight, push_down) in enumerate(
        zip(samples, weights, pair_weights, mask, strict=True)
    ):
        unlikely = bool(push_down) and tuning.unlikelihood_weight > 0
        if weight > 0 or unlikely:
            prompt = encode_prompt(tokenizer, sample_prompt(tokenizer, task, sample))
            completion = tokenizer(sample.text, add_special_tokens=False)["input_ids"] + eos
            item = _completion_item(
                prompt,
                completion,
                tuning.max_length,
                coefficient=float(weight) if weight > 0 else tuning.unlikelihood_weight,
                kind="generation" if weight > 0 else "unlikelihood",
            )
            if item is not None:
                items.append(item)
        # The sample's own text -> label pair first, then its counter pairs in label order.
        targets = [(sample.intended_label, pair_weight if tuning.classification_pairs else 0.0)]
        targets += list(enumerate(counter[index])) if counter is not None else []
        for label, target_weight in targets:
            if target_weight > 0:
                answer = answers[label]
                prompt = classification_prompt(tokenizer, task, sample.text, tuning.max_length - len(answer))
                pair = _completion_item(
                    prompt, answer, tuning.max_length, coefficient=float(target_weight), kind="pair"
                )
                if pair is not None:
                    items.append(pair)
    return items


def counter_weights(samples: Sequence[SyntheticSample], mean_scores: np.ndarray, num_labels: int) -> np.ndarray:
    """Per sample and label, the weight of pairing the sample's text with a label it was not written for.

    A sample whose clipped mean score ``s`` is below ``1 / num_labels`` (the clients read it as
    some other label) gets ``(1 - s) / (num_labels - 1)`` on every other label, over the mean score
    of its intended label's samples (the scale of its own pair's weight under ``every_sample``), so
    its pairs together carry the clients' aggregate reading; every other entry is 0.

    Returns:
        float64 array ``(len(samples), num_labels)``.
    """
    scores = np.clip(np.asarray(mean_scores, dtype=np.float64), 0.0, 1.0)
    labels = np.array([s.intended_label for s in samples], dtype=np.int64)
    weights = np.zeros((len(samples), num_labels))
    if num_labels < 2:
        return weights
    for label in np.unique(labels):
        group = labels == label
        doubted = group & (scores < 1.0 / num_labels)
        weights[doubted] = ((1.0 - scores[doubted]) / (num_labels - 1) / max(scores[group].mean(), 1e-12))[:, None]
    weights[np.arange(len(samples)), labels] = 0.0
    return weights


def tune_llm(
    llm: LoadedLLM,
    samples: Sequence[SyntheticSample],
    mean_scores: np.ndarray,
    task: TaskConfig,
    tuning: TuningConfig,
    *,
    accepted: np.ndarray,
    seed: int,
    weighting: Weighting = "accepted",
    progress: bool = True,
) -> TuneReport:
    """LoRA-tune the LLM on one round's aggregate feedback (AdamW on trainable params only).

    Args:
        llm: the server LLM, already wrapped by ``add_lora``.
        samples: the round's synthetic samples.
        mean_scores: aggregate mean score per sample, same order.
        task: labels, verbalizers, prompts.
        tuning: epochs, learning rate, batch size, max length, unlikelihood and pair settings.
        accepted: boolean mask of accepted samples (``server.acceptance``).
        seed: seeds the item order and LoRA dropout.
        weighting: which items the scores weigh (``build_tuning_items``).
        progress: show a progress bar.

    Returns:
        Steps taken, mean loss, seconds, and how many items of each kind were trained on.
        The model is left in eval mode.

    Raises:
        ModelError: the model has no trainable parameters (``add_lora`` was not called).
        ValueError: scores and samples differ in number.
    """
    started = time.perf_counter()
    model, tokenizer = llm.model, llm.tokenizer
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModelError("the LLM has no trainable parameters; wrap it with add_lora before tune_llm")
    items = build_tuning_items(tokenizer, samples, mean_scores, task, tuning, accepted=accepted, weighting=weighting)
    report = TuneReport(
        steps=0,
        mean_loss=math.nan,
        seconds=0.0,
        weighted_samples=sum(1 for i in items if i.kind == "generation"),
        label_pairs=sum(1 for i in items if i.kind == "pair"),
        unlikelihood_samples=sum(1 for i in items if i.kind == "unlikelihood"),
    )
    if not items or tuning.epochs == 0:
        report.seconds = time.perf_counter() - started
        return report
    optimizer = torch.optim.AdamW(params, lr=tuning.learning_rate, weight_decay=0.0)
    order_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7475]))
    batches_per_epoch = math.ceil(len(items) / tuning.batch_size)
    losses: list[float] = []
    bar = tqdm(total=tuning.epochs * batches_per_epoch, desc="tune LLM", disable=not progress)
    model.train()
    try:
        with torch.random.fork_rng(devices=_cuda_devices(llm.device)):
            torch.manual_seed(seed)
            for _ in range(tuning.epochs):
                order = order_rng.permutation(len(items))
                for start in range(0, len(items), tuning.batch_size):
                    batch = [items[k] for k in order[start : start + tuning.batch_size]]
                    per_item = sequence_losses(model, batch, tokenizer.pad_token_id)
                    coefficients = torch.tensor([i.coefficient for i in batch], device=per_item.device)
                    loss = (per_item * coefficients).sum() / len(batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    losses.append(loss.item())
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        bar.close()
        model.eval()
        optimizer.zero_grad(set_to_none=True)
    report.steps = len(losses)
    report.mean_loss = float(np.mean(losses))
    report.seconds = time.perf_counter() - started
    return report


def _completion_item(
    prompt: list[int],
    completion: list[int],
    max_length: int,
    *,
    coefficient: float,
    kind: ItemKind,
) -> TuningItem | None:
    """Prompt + completion cut to ``max_length``; None when no completion token survives."""
    ids = (prompt + completion)[:max_length]
    kept = len(ids) - len(prompt)
    if kept <= 0:
        return None
    labels = [IGNORE] * len(prompt) + ids[len(prompt) :]
    return TuningItem(ids, labels, coefficient, kind)


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
