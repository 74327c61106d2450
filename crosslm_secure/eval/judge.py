"""An independent judge of synthetic-data quality.

The evaluator trains a linear probe on frozen all-MiniLM-L6-v2 embeddings of its own
labelled split (never client data) and asks, for each synthetic sample, whether it agrees
with the intended label. If the clients' feedback means anything, the judge agrees more
often with the accepted samples than with the rejected ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from crosslm_secure.config import SLMConfig
from crosslm_secure.data.records import Example
from crosslm_secure.errors import ModelError
from crosslm_secure.models.batches import sentence_embeddings
from crosslm_secure.models.pooling import MeanPoolingClassifier
from crosslm_secure.models.slm import load_slm

JUDGE_STEPS = 300
JUDGE_LEARNING_RATE = 0.05


class Judge:
    """A linear probe on frozen sentence embeddings, trained on the evaluator's examples.

    Args:
        examples: the evaluator's labelled split.
        num_labels: task labels.
        device: where the encoder runs.
        seed: seeds the probe's initialization.
        encoder: the encoder's settings (default: the embedded all-MiniLM-L6-v2).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        num_labels: int,
        device: torch.device,
        *,
        seed: int,
        encoder: SLMConfig | None = None,
    ) -> None:
        settings = encoder or SLMConfig()
        self._tokenizer, model = load_slm(
            settings.model_copy(update={"pooling": "mean"}), num_labels, device, seed=seed
        )
        if not isinstance(model, MeanPoolingClassifier):
            raise ModelError("the judge needs a mean-pooling encoder")
        self._model = model
        self._settings = settings
        features = self._embed([ex.text for ex in examples])
        self._centre = features.mean(dim=0)
        labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
        counts = torch.bincount(labels, minlength=num_labels).clamp(min=1).float()
        weights = len(labels) / (num_labels * counts)  # the evaluator's own labels: balanced loss
        generator = torch.Generator().manual_seed(seed)
        self._weight = (torch.randn(num_labels, features.shape[1], generator=generator) * 0.01).requires_grad_()
        self._bias = torch.zeros(num_labels, requires_grad=True)
        optimizer = torch.optim.Adam([self._weight, self._bias], lr=JUDGE_LEARNING_RATE)
        x = features - self._centre
        for _ in range(JUDGE_STEPS):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ self._weight.T + self._bias, labels, weight=weights)
            loss.backward()
            optimizer.step()

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        return sentence_embeddings(
            self._tokenizer,
            self._model,
            texts,
            max_length=self._settings.max_length,
            batch_size=self._settings.eval_batch_size,
        )

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """The judge's label for each text."""
        if not texts:
            return np.zeros(0, dtype=np.int64)
        with torch.no_grad():
            logits = (self._embed(texts) - self._centre) @ self._weight.T + self._bias
        return logits.argmax(dim=1).numpy()
