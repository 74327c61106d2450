"""Tokenization, batching and batched forward passes for client SLMs.

Training (plain and DP), scoring and evaluation all turn texts into model inputs here,
so that every path feeds the model the same tensors. Two details matter:

* ``position_ids`` and ``token_type_ids`` always carry a real batch dimension. Opacus
  computes per-sample gradients of the embedding layers; a broadcast ``[1, L]`` buffer
  makes ``opt.step()`` fail with "stack expects each tensor to be equal size".
* Only the inputs a model's ``forward`` accepts are passed to it, and ``position_ids``
  only to architectures whose default positions are ``0..L-1`` (RoBERTa-style models
  offset positions past the padding index and must compute their own).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from crosslm_secure.data.records import Example
from crosslm_secure.models.device import eval_mode
from crosslm_secure.models.pooling import MeanPoolingClassifier

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
"""Keys of the mapping ``encode_texts`` returns."""

_ARANGE_POSITION_MODELS = frozenset({"bert", "albert", "electra", "megatron-bert", "mobilebert"})
"""Model types whose default ``position_ids`` are ``arange(L)``, so passing them is exact."""


def encode_texts(
    tokenizer: Any, texts: Sequence[str], max_length: int, *, pad_to_max_length: bool = False
) -> dict[str, torch.Tensor]:
    """Tokenize texts into a padded batch of model inputs.

    Args:
        tokenizer: a Hugging Face tokenizer with a pad token.
        texts: the texts, in batch order.
        max_length: texts are truncated to this many tokens (special tokens included).
        pad_to_max_length: pad every row to ``max_length`` (fixed shapes, e.g. for a
            pre-tokenized dataset); otherwise pad to the longest text in the batch.

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids`` and ``position_ids``, each a
        contiguous ``int64`` tensor of shape ``[len(texts), L]`` on the CPU.
    """
    encoded = tokenizer(
        list(texts),
        padding="max_length" if pad_to_max_length else True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    input_ids = encoded["input_ids"].long()
    batch, length = input_ids.shape
    token_type_ids = encoded.get("token_type_ids")
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    return {
        "input_ids": input_ids,
        "attention_mask": encoded["attention_mask"].long(),
        "token_type_ids": token_type_ids.long().contiguous(),
        # A materialized copy, not an expand() view: per-sample gradient hooks need a real
        # batch dimension.
        "position_ids": torch.arange(length, dtype=torch.long).repeat(batch, 1),
    }


def encode_examples(
    tokenizer: Any, examples: Sequence[Example], max_length: int, *, pad_to_max_length: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Tokenize examples; returns ``(inputs, labels)`` with labels an ``int64`` tensor.

    Args:
        tokenizer: a Hugging Face tokenizer with a pad token.
        examples: the labelled texts.
        max_length: tokens per text.
        pad_to_max_length: as in :func:`encode_texts`.
    """
    inputs = encode_texts(tokenizer, [ex.text for ex in examples], max_length, pad_to_max_length=pad_to_max_length)
    labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
    return inputs, labels


def iterate_batches(
    examples: Sequence[Example],
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[list[Example]]:
    """Yield lists of examples, shuffled by ``generator`` (in order when it is None).

    Args:
        examples: what to batch.
        batch_size: examples per batch (the last batch may be smaller).
        generator: a seeded ``torch.Generator``; the same seed gives the same order.
        drop_last: skip a final batch smaller than ``batch_size``.

    Raises:
        ValueError: ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be >= 1 (got {batch_size})")
    if generator is None:
        order = list(range(len(examples)))
    else:
        order = torch.randperm(len(examples), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        if drop_last and len(chunk) < batch_size:
            return
        yield [examples[i] for i in chunk]


def num_batches(n: int, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches :func:`iterate_batches` yields for ``n`` examples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def model_inputs(
    model: torch.nn.Module, inputs: Mapping[str, torch.Tensor], device: torch.device | str
) -> dict[str, torch.Tensor]:
    """The subset of ``inputs`` that ``model`` takes, moved to ``device``.

    Args:
        model: a Hugging Face sequence classifier, possibly wrapped by Opacus
            (``GradSampleModule`` keeps the real model in ``_module``).
        inputs: a mapping from :func:`encode_texts`.
        device: where the model lives.
    """
    accepted = _accepted_inputs(_unwrap(model))
    return {key: value.to(device, non_blocking=True) for key, value in inputs.items() if key in accepted}


def forward_logits(
    model: torch.nn.Module, inputs: Mapping[str, torch.Tensor], device: torch.device | str
) -> torch.Tensor:
    """Run ``model`` on ``inputs`` and return its logits ``[batch, num_labels]``."""
    output = model(**model_inputs(model, inputs, device))
    return output.logits if hasattr(output, "logits") else output[0]


def predict_proba(
    tokenizer: Any,
    model: torch.nn.Module,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    device: torch.device | str,
) -> np.ndarray:
    """Class probabilities ``softmax(logits)`` for each text, in input order.

    Runs in eval mode without gradients and restores the model's previous mode. Texts are
    batched by length so that little time goes to padding.

    Args:
        tokenizer: the model's tokenizer.
        model: a sequence classifier.
        texts: the texts to classify.
        max_length: tokens per text.
        batch_size: texts per forward pass.
        device: where the model lives.

    Returns:
        ``float64`` array of shape ``[len(texts), num_labels]``; ``[0, 0]`` for no texts.

    Raises:
        ValueError: ``batch_size`` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be >= 1 (got {batch_size})")
    if not texts:
        return np.zeros((0, 0), dtype=np.float64)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows: list[np.ndarray] = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            logits = forward_logits(model, encode_texts(tokenizer, chunk, max_length), device)
            rows.append(torch.softmax(logits.float(), dim=-1).cpu().double().numpy())
    sorted_probs = np.concatenate(rows, axis=0)
    probs = np.empty_like(sorted_probs)
    probs[np.asarray(order)] = sorted_probs
    return probs


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "_module") and isinstance(model._module, torch.nn.Module):
        model = model._module
    return model


def _accepted_inputs(model: torch.nn.Module) -> frozenset[str]:
    parameters = inspect.signature(model.forward).parameters
    accepted = {key for key in INPUT_KEYS if key in parameters}
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _ARANGE_POSITION_MODELS:
        accepted.discard("position_ids")
    return frozenset(accepted)


EMBEDDING_BUCKET = 16
"""Sentence embeddings pad each text to the next multiple of this many tokens (see ``sentence_embeddings``)."""


def sentence_embeddings(
    tokenizer: Any,
    model: MeanPoolingClassifier,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    progress: str | None = None,
) -> torch.Tensor:
    """Unit-norm embeddings of ``texts`` (before centring), ``[len(texts), hidden]`` float32 on the CPU.

    Each text is padded to a length set by its own token count (the next multiple of
    ``EMBEDDING_BUCKET``, at most ``max_length``) and batched with texts of the same padded
    length. An embedding is therefore a function of its own text only: bitwise the same
    whatever else is embedded with it, the batch size or the torch thread count
    (``tests/unit/models/test_batches.py``), which lets a site cache keep embeddings across runs
    without a warm cache changing a run's inputs. Padding to the batch's longest text would make
    it depend on its batch-mates; padding every text to ``max_length`` took twice the time on the
    movie snippets. ``progress`` names a progress bar over the batches.
    """
    if not texts:
        return torch.zeros(0, model.classifier.in_features)
    device = next(model.parameters()).device
    counts = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    padded = [min(max_length, -(-count // EMBEDDING_BUCKET) * EMBEDDING_BUCKET) for count in counts]
    by_length: dict[int, list[int]] = {}
    for i, length in enumerate(padded):
        by_length.setdefault(length, []).append(i)
    batches = [
        rows[start : start + batch_size]
        for _, rows in sorted(by_length.items())
        for start in range(0, len(rows), batch_size)
    ]
    embeddings = torch.empty(len(texts), model.classifier.in_features)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for rows in tqdm(batches, desc=progress, disable=progress is None, leave=False):
                chunk = [texts[i] for i in rows]
                inputs = encode_texts(tokenizer, chunk, padded[rows[0]], pad_to_max_length=True)
                inputs = {key: value.to(device) for key, value in inputs.items()}
                embeddings[torch.tensor(rows)] = model.embed(**inputs).float().cpu()
    finally:
        model.train(was_training)
    return embeddings
