"""Top-p sampling without sorting, or drawing from, the whole vocabulary.

transformers' ``TopPLogitsWarper`` sorts all 49,152 logits of every row at every generation
step. On a 2-core CPU that sort was a fifth of the time of ``generate`` (measured with the
torch profiler on the default job: 62 ms of a 290 ms step at batch 32). The nucleus is almost
always a few hundred tokens, so :class:`NucleusWarper` looks only at the top ``k`` of each
row (``torch.topk``), widens ``k`` for the rows whose nucleus does not fit, and sorts a full
row only as the last resort. It keeps the same tokens as ``TopPLogitsWarper`` and returns the
same tensor (kept logits untouched, the rest ``-inf``); ``tests/unit/models/test_sampling.py``
compares the two.

"The same tokens" needs care at the boundary: transformers sums the whole ascending tail in
float32, so a token whose tail mass lies within about 2e-6 of ``1 - top_p`` can fall either
way depending on summation order. Rows with a candidate that close (``TIE_TOLERANCE``) are
decided the way transformers decides them, by a full ascending sort of that row.

Sampling after the warper still costs a pass over the whole vocabulary: ``generate`` takes a
softmax of every row and ``torch.multinomial`` draws an exponential random number per token.
:class:`NucleusSampler` draws among the nucleus candidates instead and leaves only the drawn
token possible, for ``generate(do_sample=False)``: :func:`sampling_processors` gives the
temperature and the sampler, :func:`draws` tells ``generate``'s caller which mode to use.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

CANDIDATES = (256, 2048)
"""Top-k widths tried in turn before a full sort of the rows that still do not fit."""
TIE_TOLERANCE = 5e-6
"""A row whose boundary is this close to ``1 - top_p`` is sorted in full, as transformers does.

transformers' float32 running sum over the ~49k ascending probabilities was off by up to 1.8e-6
in our measurements; a wider margin sends more rows to the full sort for nothing.
"""


class NucleusWarper(LogitsProcessor):
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p``.

    Same rule as transformers' ``TopPLogitsWarper``: a token is removed when the probability
    mass of the tokens ranked at or below it is at most ``1 - top_p``; the most likely token is
    always kept.
    """

    def __init__(self, top_p: float, candidates: tuple[int, ...] = CANDIDATES) -> None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.top_p = float(top_p)
        self.candidates = candidates

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.top_p >= 1.0:
            return scores
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for rows, index, kept, _ in _nucleus(scores, self.top_p, self.candidates):
            if index is None:
                keep[rows] = kept
            else:
                keep[rows.unsqueeze(1).expand_as(index)[kept], index[kept]] = True
        return torch.where(keep, scores, torch.full_like(scores, -float("inf")))


class NucleusSampler(NucleusWarper):
    """Draw each row's next token from its nucleus, and leave only that token possible.

    ``generate(do_sample=True)`` draws with ``torch.multinomial`` over the whole vocabulary:
    a softmax and one exponential random number for each of the 49,152 tokens of every row
    (14% of the default job's generation on 2 CPU cores) to pick among a few hundred kept ones. This
    processor draws among the nucleus candidates only, from the same probabilities renormalised
    over the nucleus, and returns ``-inf`` everywhere but the drawn token, so greedy decoding
    (``do_sample=False``) takes it. Same distribution as top-p sampling, a different random
    stream: the same seed gives other samples than ``do_sample=True`` would.
    """

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        tokens = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for rows, index, kept, probs in _nucleus(scores, self.top_p, self.candidates):
            drawn = torch.multinomial(probs * kept, 1)
            tokens[rows] = (drawn if index is None else index.gather(1, drawn)).squeeze(1)
        only = torch.full_like(scores, -float("inf"))
        return only.scatter_(1, tokens.unsqueeze(1), 0.0)


def _nucleus(
    scores: torch.Tensor, top_p: float, candidates: tuple[int, ...]
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]]:
    """Each row's nucleus, in groups of rows: ``(rows, index, kept, probs)``.

    ``index`` holds a group's candidate token ids, most likely first (None: the whole
    vocabulary), ``kept`` marks the candidates in the nucleus and ``probs`` their probabilities.
    """
    probs = scores.float().softmax(dim=-1)
    pending = torch.arange(scores.shape[0], device=scores.device)
    if top_p >= 1.0:
        yield pending, None, torch.ones_like(probs, dtype=torch.bool), probs
        return
    threshold = 1.0 - top_p
    for k in [c for c in candidates if c < scores.shape[-1]]:
        top, index = (probs if len(pending) == len(probs) else probs[pending]).topk(k, dim=-1, sorted=True)
        # Mass of the tokens ranked at or below each one = 1 - mass strictly above it.
        mass = top.double()
        below = 1.0 - (mass.cumsum(dim=-1) - mass)
        kept = below > threshold
        kept[:, 0] = True
        # A row fits when its k-th candidate is already dropped (the nucleus ends inside)
        # and no candidate sits so close to the boundary that summation order decides it.
        close = ((below - threshold).abs() < TIE_TOLERANCE).any(dim=-1)
        fits = ~kept[:, -1] & ~close
        if fits.any():
            yield pending[fits], index[fits], kept[fits], top[fits]
        pending = pending[~fits]
        if pending.numel() == 0:
            return
    yield pending, None, _sorted_keep(scores[pending], threshold), probs[pending]


def _sorted_keep(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The tokens transformers keeps: sort ascending, drop while the running mass is at most ``threshold``."""
    ascending, order = scores.sort(dim=-1, descending=False)
    dropped = ascending.softmax(dim=-1).cumsum(dim=-1) <= threshold
    dropped[:, -1] = False
    return torch.empty_like(dropped).scatter(-1, order, ~dropped)


def sampling_processors(temperature: float, top_p: float) -> LogitsProcessorList:
    """Temperature, then a draw from the top-p nucleus: for ``generate(do_sample=False)``."""
    processors = LogitsProcessorList()
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    processors.append(NucleusSampler(top_p))
    return processors


def reference_processors(temperature: float, top_p: float) -> LogitsProcessorList:
    """transformers' own temperature and top-p warpers (full sort), for ``generate(do_sample=True)``:
    the baseline for tests and bench."""
    processors = LogitsProcessorList()
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    return processors


def draws(processors: LogitsProcessorList) -> bool:
    """Whether the processors draw the next token themselves, so ``generate`` must decode greedily."""
    return any(isinstance(p, NucleusSampler) for p in processors)
