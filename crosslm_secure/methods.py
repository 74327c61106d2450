"""What a method does in a round: one class per method, registered by the name configs use.

The coordinator, the runner and the audits ask the method, never compare its name: adding a
method is one subclass here with ``@register``, plus its name in ``config.Method`` (which
validates configs). A test keeps the two lists equal.

A round after round 0 is: private SLM training, then, if the method ``generates``, the LLM
writes synthetic samples; if it ``gets_feedback``, the clients score them and the server
learns only the aggregate, from which the acceptance rule (``server/acceptance.py``) picks
samples; the method's :meth:`Method.accepted` then decides what is accepted (the feedback's
choice, every sample, or a random subset); if it ``tunes_llm``, the LLM is tuned on the samples
its :meth:`Method.tuning_scores` weigh (``server/tuning.py``: by default the accepted samples'
texts and every sample's label); if it ``enhances``, the clients train on the accepted ones.

The ablations (``crosslm_no_feedback``, ``crosslm_random_feedback``) run CrossLM's round with one
part of the feedback taken out, so the tables can say what the feedback itself adds.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from crosslm_secure.errors import ConfigError


class Method:
    """A method's round, as flags the coordinator reads (all off: SLMs train on private data only)."""

    name: ClassVar[str]
    description: ClassVar[str]
    generates: ClassVar[bool] = False
    """The LLM writes label-conditioned synthetic samples every round."""
    gets_feedback: ClassVar[bool] = False
    """Clients score the synthetic samples and the server learns the protected aggregate."""
    tunes_llm: ClassVar[bool] = False
    """The LLM is LoRA-tuned on the feedback, so it is re-evaluated every round."""
    enhances: ClassVar[bool] = False
    """Clients train on the accepted synthetic samples."""
    weighs_by_feedback: ClassVar[bool] = False
    """LLM tuning weights each accepted sample by its released mean score; otherwise all weigh the same."""
    calibrates_llm: ClassVar[bool] = False
    """The LLM's zero-shot answers are contextually calibrated (Zhao et al. 2021) when it is evaluated."""

    def last_round(self, rounds: int) -> int:
        """The last round the run executes, given ``run.rounds``."""
        return rounds

    def accepted(self, feedback_keep: np.ndarray | None, labels: np.ndarray, *, seed: int) -> np.ndarray:
        """Which of a round's synthetic samples are accepted (tuned on and sent to the clients).

        Args:
            feedback_keep: the acceptance rule's mask over the released aggregate, or None when
                the method gets no feedback.
            labels: each sample's intended label index.
            seed: seeds any random choice (the coordinator derives it from the run seed and round).

        Returns:
            A boolean mask, one entry per sample: by default the feedback's choice, or every
            sample without feedback.
        """
        if feedback_keep is None:
            return np.ones(len(labels), dtype=bool)
        return np.asarray(feedback_keep, dtype=bool)

    def tuning_scores(
        self, means: np.ndarray | None, labels: np.ndarray, *, weighting: str, seed: int
    ) -> np.ndarray | None:
        """The scores the LLM's tuning weighs samples by, or None for equal weight on the accepted ones.

        Args:
            means: the released mean score per sample, or None when the method gets no feedback.
            labels: each sample's intended label index.
            weighting: ``tuning.weighting`` (``accepted``, ``every_pair`` or ``every_sample``).
            seed: seeds any random choice (the coordinator derives it from the run seed and round).
        """
        return means if self.weighs_by_feedback else None


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Make ``cls`` available under ``cls.name`` (the value of ``run.method``)."""
    METHODS[cls.name] = cls
    return cls


def method_for(name: str) -> Method:
    """The method a config names.

    Raises:
        ConfigError: no method is registered under ``name``.
    """
    try:
        return METHODS[name]()
    except KeyError:
        raise ConfigError(f"config: run.method {name!r} is not one of {sorted(METHODS)}; pick one of them") from None


@register
class CrossLM(Method):
    name = "crosslm"
    description = "CrossLM: feedback-filtered synthetic data tunes the LLM and enhances the SLMs"
    generates = True
    gets_feedback = True
    tunes_llm = True
    enhances = True
    weighs_by_feedback = True


@register
class CrossLMNoFeedback(Method):
    """CrossLM with the feedback switched off: isolates what the clients' scores add.

    No sample is scored (so no score release is spent); every generated sample (label-balanced
    as generation writes them: ``generation.samples_per_label`` each, less the duplicates and
    degenerate texts it drops) is accepted with equal weight: the LLM is tuned on all of them and
    the SLMs are enhanced with all of them. Against ``data_free_kd`` it shows what tuning the LLM
    on its own unfiltered output does; against ``crosslm`` what filtering and weighting by the
    feedback does.
    """

    name = "crosslm_no_feedback"
    description = "CrossLM without feedback: the LLM is tuned on, and the SLMs enhanced with, every sample"
    generates = True
    tunes_llm = True
    enhances = True


@register
class CrossLMRandomFeedback(Method):
    """CrossLM with the feedback's choice replaced by chance: isolates *which* samples it keeps.

    The round is CrossLM's, scoring included: the clients score, the aggregate is released (the
    same score-release privacy cost as ``crosslm``), and the configured acceptance rule runs on
    it. Only the rule's count is used: as many samples as it accepted are drawn at random,
    label-balanced (the count split evenly over the labels, the remainder over random labels;
    a label with too few samples passes its share on), seeded by the run seed and round. They
    are tuned on with equal weight, so neither the choice nor the weights carry a score.

    The size comes from the real feedback round, not from the rule applied to counts alone,
    because the adaptive rule (margin over chance, per-label quantile, balance) keeps a number
    that depends on the scores themselves; any count computed without them would be another
    method's size. What remains different from ``crosslm`` is only the choice.
    """

    name = "crosslm_random_feedback"
    description = "CrossLM with the accepted samples drawn at random, as many as the feedback accepted"
    generates = True
    gets_feedback = True
    tunes_llm = True
    enhances = True

    def accepted(self, feedback_keep: np.ndarray | None, labels: np.ndarray, *, seed: int) -> np.ndarray:
        count = 0 if feedback_keep is None else int(np.sum(feedback_keep))
        return balanced_random_choice(np.asarray(labels, dtype=np.int64), count, np.random.default_rng(seed))

    def tuning_scores(
        self, means: np.ndarray | None, labels: np.ndarray, *, weighting: str, seed: int
    ) -> np.ndarray | None:
        """Unless the weighting is ``accepted``, the released scores shuffled among each label's samples.

        CrossLM then tunes the LLM on every sample's label (and, with ``every_sample``, its text),
        weighted by its score; this ablation tunes on the same items with the same weights (each
        label's scores are kept) given to random samples, so what differs is only which sample
        carries which weight. With ``accepted`` weighting the random subset is tuned on at equal
        weight (None).
        """
        if means is None or weighting == "accepted":
            return None
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x776569]))
        return shuffled_within_labels(np.asarray(means, dtype=np.float64), np.asarray(labels), rng)


def shuffled_within_labels(values: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``values`` with each label's entries permuted among that label's positions."""
    shuffled = values.copy()
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        shuffled[where] = values[rng.permutation(where)]
    return shuffled


def balanced_random_choice(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """A mask of ``count`` samples drawn at random, as evenly over the labels present as they allow.

    Samples are drawn in passes: each pass takes one not-yet-drawn sample of every label that has
    one left, the labels in a fresh random order, until ``count`` are drawn (all, if fewer exist).
    """
    keep = np.zeros(len(labels), dtype=bool)
    queues = {int(label): rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)}
    drawn: list[int] = []
    depth = 0
    while len(drawn) < min(count, len(labels)):
        for label in rng.permutation(list(queues)):
            if depth < len(queues[label]):
                drawn.append(int(queues[label][depth]))
        depth += 1
    keep[drawn[:count]] = True
    return keep


@register
class Standalone(Method):
    name = "standalone"
    description = "SLMs train on their private data only"


@register
class DataFreeKD(Method):
    name = "data_free_kd"
    description = "SLMs also train on every synthetic sample; no feedback, the LLM is not tuned"
    generates = True
    enhances = True


@register
class LLMZeroShot(Method):
    name = "llm_zero_shot"
    description = "the untuned LLM, evaluated once (round 0 only)"

    def last_round(self, rounds: int) -> int:
        return 0


@register
class LLMZeroShotCalibrated(LLMZeroShot):
    """The untuned LLM with contextual calibration (Zhao et al. 2021), evaluated once (round 0 only).

    The LLM's label probabilities are divided by their mean over content-free inputs ("N/A",
    "", "[MASK]" in the classification prompt) before the likeliest label is taken. It isolates
    how much of a tuned LLM's gain is only a corrected label bias, which calibration fixes
    without any data.
    """

    name = "llm_zero_shot_calibrated"
    description = "the untuned LLM with contextual calibration, evaluated once (round 0 only)"
    calibrates_llm = True
