"""The LLM's tuning items and their per-item loss, with the batch's shared prompt prefix run once.

Every tuning item is a chat-template prompt plus a completion, so the items of a batch begin
with the same tokens (the chat template's system turn, often the task template's opening words):
about a quarter of each sequence in the default job. ``sequence_losses`` runs that prefix once
per batch and repeats its key/value cache for every row. Causal attention makes the prefix's
activations independent of what follows, so the loss and its gradient are those of the full
sequences up to float rounding; with LoRA dropout on, the prefix's dropout mask is drawn once
per batch instead of once per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from crosslm_secure.eval.llm_eval import shared_prefix
from crosslm_secure.models.llm import follow_prefix, left_pad, tail_logits

IGNORE = -100
ItemKind = Literal["generation", "pair", "unlikelihood"]


@dataclass(frozen=True)
class TuningItem:
    """One training sequence: tokens, targets (IGNORE on the prompt) and its loss coefficient."""

    input_ids: list[int]
    labels: list[int]
    coefficient: float
    kind: ItemKind = "generation"

    @property
    def unlikelihood(self) -> bool:
        """Whether this item's loss is the unlikelihood term."""
        return self.kind == "unlikelihood"


def prompt_prefix(items: Sequence[TuningItem]) -> int:
    """Tokens every item shares that no target depends on: the token before an item's first
    target produces that target's logit, so the prefix stops short of it."""
    first_target = min(next((k for k, t in enumerate(i.labels) if t != IGNORE), len(i.labels)) for i in items)
    return max(min(shared_prefix([i.input_ids for i in items]), first_target - 1), 0)


def sequence_losses(
    model: torch.nn.Module, items: Sequence[TuningItem], pad_id: int, *, share_prefix: bool = True
) -> torch.Tensor:
    """Per-item loss: mean token NLL of the targets, or mean ``-log(1 - p)`` for unlikelihood.

    ``share_prefix=False`` runs every full sequence (the reference the unit tests compare with).
    """
    device = next(model.parameters()).device
    shared = prompt_prefix(items) if share_prefix and len(items) > 1 else 0
    ids, mask, positions = left_pad([i.input_ids[shared:] for i in items], pad_id, device)
    targets, _, _ = left_pad([i.labels[shared:] for i in items], IGNORE, device)
    past = None
    if shared:
        prefix = torch.tensor([items[0].input_ids[:shared]], device=device)
        past, mask, positions = follow_prefix(
            model(input_ids=prefix, use_cache=True).past_key_values, shared, mask, positions
        )
    # Targets are the tail of each left-padded row: only those positions need logits.
    keep = min(int((targets != IGNORE).sum(dim=1).max()) + 1, ids.shape[1])
    logits = tail_logits(model, ids, mask, positions, keep=keep, past_key_values=past)[:, :-1, :]
    targets = targets[:, ids.shape[1] - keep + 1 :]
    valid = targets != IGNORE
    logp = torch.log_softmax(logits.float(), dim=-1)
    token_logp = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    unlikely = torch.tensor([i.unlikelihood for i in items], device=device).unsqueeze(1)
    # -log(1 - p) with p = exp(logp); clamp so a certain token gives a large finite loss.
    push_down = -torch.log1p(-token_logp.exp().clamp(max=1 - 1e-6))
    per_token = torch.where(unlikely, push_down, -token_logp) * valid
    return per_token.sum(dim=1) / valid.sum(dim=1).clamp(min=1)
