"""The accepted synthetic samples a client keeps for joint training, by the round that sent them.

They are public (the LLM wrote them; only the aggregate feedback chose them), so keeping them
costs no privacy. They live in the client's folder and are written atomically, so a resumed
client trains on exactly what it had; a round that runs again replaces its own entry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from crosslm_secure.config import SLMConfig
from crosslm_secure.data.records import Example
from crosslm_secure.errors import DataError
from crosslm_secure.storage import atomic_write_json


class SyntheticStore:
    """Accepted synthetic samples by round; ``path`` None keeps them in memory only.

    Raises:
        DataError: the file at ``path`` is corrupt (one sentence naming it and the fix).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._rounds: dict[int, list[Example]] = {}
        if path is not None and path.is_file():
            try:
                raw = json.loads(path.read_text())
                self._rounds = {
                    int(round_index): [Example(uid=e["uid"], text=e["text"], label=int(e["label"])) for e in rows]
                    for round_index, rows in raw.items()
                }
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise DataError(
                    f"synthetic store {path} is unreadable; delete it (the client then trains without the "
                    "synthetic samples of earlier rounds)"
                ) from None

    def keep(self, round_index: int, examples: Sequence[Example]) -> None:
        """Record the samples accepted in ``round_index`` (replacing what that round had), then save."""
        seen: set[str] = set()
        unique = [ex for ex in examples if not (ex.uid in seen or seen.add(ex.uid))]
        self._rounds[round_index] = unique
        if self.path is not None:
            rows = {
                str(r): [{"uid": e.uid, "text": e.text, "label": e.label} for e in kept]
                for r, kept in sorted(self._rounds.items())
            }
            atomic_write_json(self.path, rows)

    def before(self, round_index: int) -> list[Example]:
        """Every sample accepted in a round before ``round_index``, each uid once, oldest first."""
        seen: set[str] = set()
        out: list[Example] = []
        for r in sorted(self._rounds):
            if r >= round_index:
                continue
            for ex in self._rounds[r]:
                if ex.uid not in seen:
                    seen.add(ex.uid)
                    out.append(ex)
        return out


def joins_private(slm: SLMConfig) -> bool:
    """Whether accepted synthetic samples join private training (``slm.synthetic_weight`` not 0)."""
    return slm.synthetic_weight == "ratio" or slm.synthetic_weight > 0


def synthetic_weight(slm: SLMConfig, private: int, synthetic: int) -> float:
    """The public step's weight against the private one: ``slm.synthetic_weight``, or with ``ratio``
    the synthetic samples over the private records (0 when either is empty)."""
    if slm.synthetic_weight != "ratio":
        return float(slm.synthetic_weight)
    return synthetic / private if private and synthetic else 0.0
