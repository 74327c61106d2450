"""The records that flow through a run: private examples and synthetic samples."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One labelled text. On a client this is a private record (the privacy unit)."""

    uid: str
    text: str
    label: int


@dataclass(frozen=True)
class SyntheticSample:
    """One LLM-written sample: ``(id, text, intended_label)`` (docs/researchers.md, "What a run does", step 2)."""

    sample_id: str
    text: str
    intended_label: int

    def as_example(self) -> Example:
        return Example(uid=self.sample_id, text=self.text, label=self.intended_label)


@dataclass
class ClientData:
    """One silo's private train split and held-out test split."""

    client_id: str
    train: list[Example]
    test: list[Example]


@dataclass
class TaskData:
    """Everything a run's data split produces."""

    clients: list[ClientData]
    llm_test: list[Example] = field(default_factory=list)
    """The evaluator's test set for the LLM's task accuracy (never used for training)."""
