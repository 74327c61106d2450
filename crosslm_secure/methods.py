"""What a method does in a round: one class per method, registered by the name configs use.

The coordinator, the runner and the audits ask the method, never compare its name: adding a
method is one subclass here with ``@register``, plus its name in ``config.Method`` (which
validates configs). A test keeps the two lists equal.

A round after round 0 is: private SLM training, then, if the method ``generates``, the LLM
writes synthetic samples; if it ``gets_feedback``, the clients score them and the server
learns only the aggregate, which decides what is accepted; if it ``tunes_llm``, the LLM is
tuned on that feedback; if it ``enhances``, the clients train on the accepted samples.
"""

from __future__ import annotations

from typing import ClassVar

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
    """Clients train on the synthetic samples (all of them, or only the accepted ones with feedback)."""

    def last_round(self, rounds: int) -> int:
        """The last round the run executes, given ``run.rounds``."""
        return rounds


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
