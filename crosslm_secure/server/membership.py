"""Who takes part in a run: the active clients, the excluded ones and why, and who may rejoin."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from crosslm_secure.runstore import RunState, RunStore


@dataclass
class Membership:
    """The participant state of a run, kept in ``state.json`` as it changes.

    Args:
        store: the run folder (events, and the saved state a crash must not lose).
        order: the clients that start the run, in the transport's order.
        min_clients: the quorum (``run.min_clients``).
        log: where one-line messages go.
    """

    store: RunStore
    order: list[str]
    min_clients: int
    log: Callable[[str], None] = print
    active: list[str] = field(init=False)
    excluded: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    """Excluded because they stopped answering (not because they refused or misbehaved): may rejoin."""

    def __post_init__(self) -> None:
        self.active = list(self.order)

    def restore(self, state: RunState, reachable: Sequence[str]) -> None:
        """Take back the participant state of a resumed run.

        A client that was active but is not reachable now counts as dropped, so it can rejoin later.
        """
        self.active = [name for name in state.active if name in reachable]
        self.excluded = dict(state.excluded)
        self.dropped = [name for name in state.dropped if name in self.excluded]
        for name in state.active:
            if name not in reachable:
                self.exclude(name, "not connected when the run resumed", dropped=True)

    def exclude(self, name: str, reason: str, *, dropped: bool = False) -> None:
        """Take ``name`` out of the run; ``dropped`` (it stopped answering) lets it rejoin later."""
        if name in self.active:
            self.active.remove(name)
        self.excluded[name] = reason
        if dropped and name not in self.dropped:
            self.dropped.append(name)
        elif not dropped and name in self.dropped:
            self.dropped.remove(name)
        self.store.event("client_excluded", client=name, reason=reason)
        saved = self.store.load_state()
        if saved is not None:  # a crash before the round ends must not forget why a client is out
            self.store.save_state(self.state(saved.completed_round))
        self.log(f"  {name} excluded: {reason}")

    def readmit(self, back: Sequence[str], round_index: int, order: Sequence[str]) -> bool:
        """Take back the dropped clients in ``back`` (they answer again); True if any came back.

        ``active`` then follows ``order`` (the transport's current list of nodes)."""
        back = [name for name in back if name in self.dropped]
        for name in back:
            self.dropped.remove(name)
            reason = self.excluded.pop(name, "")
            self.store.event("client_rejoined", client=name, round=round_index, was=reason)
            self.log(f"  {name} rejoined at round {round_index}")
        if back:
            wanted = set(self.active) | set(back)
            self.active = [name for name in order if name in wanted]
        return bool(back)

    def quorum_reason(self, round_index: int) -> str | None:
        """Why the run must stop (too few active clients), or None."""
        if len(self.active) >= self.min_clients:
            return None
        return (
            f"round {round_index}: only {len(self.active)} client(s) remain, fewer than "
            f"run.min_clients={self.min_clients}; excluded: "
            + "; ".join(f"{name}: {why}" for name, why in self.excluded.items())
        )

    def state(self, completed_round: int) -> RunState:
        return RunState(completed_round, list(self.active), dict(self.excluded), list(self.dropped))
