"""Client-side scoring of synthetic samples: ``s_i = P_SLM(intended_label_i | text_i)``.

These per-sample scores are the only signal derived from private data that leaves a
silo (SECURITY.md, "What crosses a silo boundary"); protection (noise, masks, encryption) is applied by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.errors import DataError
from crosslm_secure.models.batches import predict_proba


def score_samples(
    tokenizer: Any,
    model: torch.nn.Module,
    samples: Sequence[SyntheticSample],
    *,
    max_length: int,
    batch_size: int,
    device: torch.device | str,
    calibrate: bool = False,
) -> np.ndarray:
    """Score each synthetic sample by the SLM's probability of its intended label.

    With ``calibrate`` the SLM's probabilities are first temperature-scaled (one temperature
    fitted on this very batch by likelihood of the intended labels, see :func:`fit_temperature`).
    The batch is public, so this costs no privacy; the fitted temperature stays on the client.

    Args:
        tokenizer: the client's SLM tokenizer.
        model: the client's SLM classifier (its train/eval mode is restored afterwards).
        samples: the broadcast synthetic batch, in protocol order.
        max_length: tokens per text.
        batch_size: texts per forward pass.
        device: where the model lives.
        calibrate: temperature-scale the probabilities first.

    Returns:
        ``float64`` array of ``len(samples)`` scores in ``[0, 1]``, in sample order.

    Raises:
        DataError: a sample's intended label is not a class of the model.
    """
    if not samples:
        return np.zeros(0, dtype=np.float64)
    probs = predict_proba(
        tokenizer,
        model,
        [sample.text for sample in samples],
        max_length=max_length,
        batch_size=batch_size,
        device=device,
    )
    num_labels = probs.shape[1]
    labels = np.array([sample.intended_label for sample in samples], dtype=np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_labels))
    if bad.size:
        first = samples[int(bad[0])]
        raise DataError(
            f"synthetic sample {first.sample_id} has intended label {first.intended_label}, "
            f"but the SLM has labels 0..{num_labels - 1}"
        )
    if calibrate:
        probs = tempered(probs, fit_temperature(probs, labels))
    scores = probs[np.arange(len(samples)), labels]
    return np.clip(scores, 0.0, 1.0).astype(np.float64, copy=False)


TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
"""Candidate temperatures, log-spaced from 1/4 to 8."""


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)`` row-wise: temperature scaling of the logits."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature (from :data:`TEMPERATURES`) that maximizes the likelihood of ``labels``.

    Fitted on the synthetic batch, whose labels are the LLM's intentions: a sample the LLM got
    wrong pulls the temperature up, so the scores read as "how likely the intended label is
    right", flatter where the SLM disagrees with the LLM often.

    Each sample keeps its own order of labels, and with two labels the order of samples too
    (the score is a monotone function of the logit margin). With three or more it does not:
    a sample whose intended label leads one close rival can overtake, as the temperature
    grows, one that leads two far rivals by more. Acceptance ranks samples of a label by
    these calibrated scores (server/acceptance.py), so the temperature is part of what is
    ranked, by design: the scores a client reports are the calibrated probabilities.

    Args:
        probs: ``[n, labels]`` probabilities.
        labels: ``[n]`` label indices.
    """
    if len(labels) == 0:
        return 1.0
    rows = np.arange(len(labels))
    losses = [-np.log(np.clip(tempered(probs, t)[rows, labels], 1e-12, 1.0)).mean() for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])
