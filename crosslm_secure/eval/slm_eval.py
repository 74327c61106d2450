"""Evaluate a client's SLM on its held-out split: accuracy and macro-F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from crosslm_secure.data.records import Example
from crosslm_secure.eval.metrics import accuracy, macro_f1
from crosslm_secure.models.batches import predict_proba


def evaluate_slm(
    tokenizer: Any,
    model: torch.nn.Module,
    examples: Sequence[Example],
    *,
    num_labels: int,
    max_length: int,
    batch_size: int,
    device: torch.device | str,
) -> dict[str, Any]:
    """Classify ``examples`` with the SLM (argmax) and score the predictions.

    Args:
        tokenizer: the SLM's tokenizer.
        model: the SLM classifier (its train/eval mode is restored afterwards).
        examples: labelled held-out texts.
        num_labels: classes of the task (macro-F1 averages over all of them).
        max_length: tokens per text.
        batch_size: texts per forward pass.
        device: where the model lives.

    Returns:
        ``{"accuracy": float, "macro_f1": float, "n": int, "predicted": list[int]}`` (the
        predicted label of each example, in order); both scores are 0.0 when there are no examples.
    """
    if not examples:
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0, "predicted": []}
    probs = predict_proba(
        tokenizer,
        model,
        [ex.text for ex in examples],
        max_length=max_length,
        batch_size=batch_size,
        device=device,
    )
    predictions = probs.argmax(axis=1).tolist()
    truth = [ex.label for ex in examples]
    return {
        "accuracy": accuracy(truth, predictions),
        "macro_f1": macro_f1(truth, predictions, num_labels),
        "n": len(examples),
        "predicted": predictions,
    }
