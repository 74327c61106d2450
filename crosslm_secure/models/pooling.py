"""A sequence classifier that mean-pools its encoder's token states.

Sentence-embedding encoders such as all-MiniLM-L6-v2 are trained for mean pooling: their
``[CLS]`` vectors barely differ between sentences, so the stock ``*ForSequenceClassification``
head (which reads ``[CLS]`` through a pooler) sees nearly the same features for every text
and can only learn the label prior. Measured on the drug reviews: every client collapsed to
the majority class. Averaging the token states over the attention mask fixes that.

The head reads the embedding minus ``feature_mean``, a public centre (the mean embedding of
public text, set by the client's trainer; zero until then). Unit-norm sentence embeddings share
a large common direction; removing it helps a linear probe learn in few, noisy DP steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from crosslm_secure.errors import ModelError

HEAD_FILE = "mean_pooling_head.safetensors"
HEAD_CONFIG = "mean_pooling_head.json"


class MeanPoolingClassifier(nn.Module):
    """``encoder`` -> masked mean of token states -> L2 normalization -> dropout -> linear head.

    Args:
        encoder: a Hugging Face encoder (``AutoModel``); its pooler, if any, is dropped
            because it would receive no gradient (DP-SGD and the moved-weights check need
            every trainable tensor to be used).
        num_labels: classes.
        dropout: dropout before the head.
    """

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None
        self.encoder = encoder
        self.config = encoder.config
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        self.register_buffer("feature_mean", torch.zeros(encoder.config.hidden_size))

    @property
    def num_labels(self) -> int:
        return self.classifier.out_features

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        embedding = self.embed(input_ids, attention_mask, token_type_ids, position_ids)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(embedding - self.feature_mean)))

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The unit-norm sentence embedding of each text (before centring), ``[batch, hidden]``."""
        extra = {"token_type_ids": token_type_ids, "position_ids": position_ids}
        hidden = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            **{k: v for k, v in extra.items() if v is not None},
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        # Unit-norm sentence embeddings, as sentence-transformers models are trained to give;
        # it also keeps per-sample head gradients near DP-SGD's clipping norm.
        return nn.functional.normalize(pooled, dim=-1)

    def save_pretrained(self, folder: str | Path) -> None:
        """Encoder in Hugging Face format plus the head, so ``load_head`` restores both."""
        folder = Path(folder)
        self.encoder.save_pretrained(folder)
        head = {k: v.detach().contiguous().cpu() for k, v in self.classifier.state_dict().items()}
        head["feature_mean"] = self.feature_mean.detach().contiguous().cpu()
        save_file(head, folder / HEAD_FILE)
        (folder / HEAD_CONFIG).write_text(json.dumps({"num_labels": self.num_labels}) + "\n")


def load_head(model: MeanPoolingClassifier, folder: Path) -> bool:
    """Restore a saved head from ``folder`` if it has one of the right size; False if none.

    Raises:
        ModelError: the head files are corrupt or for another number of labels.
    """
    weights = Path(folder) / HEAD_FILE
    if not weights.is_file():
        return False
    try:
        saved: dict[str, Any] = json.loads((Path(folder) / HEAD_CONFIG).read_text())
        state = load_file(str(weights))
    except (OSError, ValueError) as exc:
        raise ModelError(f"SLM head in {folder} is unreadable ({type(exc).__name__}); remove {HEAD_FILE}") from None
    if saved.get("num_labels") != model.num_labels:
        raise ModelError(
            f"SLM head in {folder} has {saved.get('num_labels')} labels, the task has {model.num_labels}; "
            f"remove {HEAD_FILE} to start a fresh head"
        )
    centre = state.pop("feature_mean", None)
    model.classifier.load_state_dict(state)
    if centre is not None:
        if centre.shape != model.feature_mean.shape:
            raise ModelError(f"SLM head in {folder} has a feature centre of the wrong size; remove {HEAD_FILE}")
        model.feature_mean.copy_(centre)
    return True
