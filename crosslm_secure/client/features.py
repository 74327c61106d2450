"""Frozen sentence features of a head-only SLM: computed once per record, centred on public text.

With ``slm.trainable: head`` the encoder never changes, so DP-SGD sees each record only
through its sentence embedding. Embedding every record once and training the head on the
cached vectors runs the same mechanism (Poisson rate, clipping, noise, steps) at a fraction
of the cost of re-encoding texts on every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from crosslm_secure.data.public_text import public_texts
from crosslm_secure.models.batches import sentence_embeddings
from crosslm_secure.models.pooling import MeanPoolingClassifier


class FeatureHead(nn.Module):
    """The trainable part of a head-only SLM: dropout + linear classifier on its input features.

    ``classifier`` may be the SLM's own layer (training it trains the SLM) or a copy.
    """

    def __init__(self, classifier: nn.Linear, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features))


def trains_on_features(model: nn.Module, trainable: str, lora_rank: int) -> bool:
    """True when only a linear head on mean-pooled embeddings trains (frozen encoder, no LoRA)."""
    return isinstance(model, MeanPoolingClassifier) and trainable == "head" and lora_rank == 0


def own_head(model: MeanPoolingClassifier) -> FeatureHead:
    """A head that shares ``model``'s classifier: training it trains the SLM."""
    return FeatureHead(model.classifier, float(model.dropout.p))


def set_public_centre(tokenizer: Any, model: MeanPoolingClassifier, *, max_length: int, batch_size: int) -> None:
    """Set ``model.feature_mean`` to the mean embedding of public text (no private record involved)."""
    vectors = sentence_embeddings(tokenizer, model, public_texts(), max_length=max_length, batch_size=batch_size)
    with torch.no_grad():
        model.feature_mean.copy_(vectors.mean(dim=0).to(model.feature_mean.device))


class FeatureCache:
    """Embeddings of records by uid, computed once (the encoder is frozen). Lives with its client."""

    def __init__(self) -> None:
        self._vectors: dict[str, torch.Tensor] = {}

    def features(
        self, tokenizer: Any, model: MeanPoolingClassifier, uids: Sequence[str], texts: Sequence[str], **encode: int
    ) -> torch.Tensor:
        """``[len(uids), hidden]`` embeddings (uncentred), embedding only the uids not seen before."""
        missing = [i for i, uid in enumerate(uids) if uid not in self._vectors]
        if missing:
            fresh = sentence_embeddings(tokenizer, model, [texts[i] for i in missing], **encode)
            for row, i in enumerate(missing):
                self._vectors[uids[i]] = fresh[row]
        if not uids:
            return torch.zeros(0, model.classifier.in_features)
        return torch.stack([self._vectors[uid] for uid in uids])
