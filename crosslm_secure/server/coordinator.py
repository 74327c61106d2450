"""The round coordinator (docs/researchers.md, "What a run does"): one server, many client silos, bytes in between.

It keeps the round loop and who takes part. What a round does comes from the method
(:mod:`crosslm_secure.methods`); the LLM work is behind :class:`~crosslm_secure.server.llm_side.ServerLLM`;
the key ceremony and the blind aggregation are :class:`~crosslm_secure.server.feedback_round.FeedbackRounds`
over the configured feedback scheme. It speaks typed protocol messages through a ``Transport``
and never sees client data, client models, or (with a protecting scheme) per-client scores.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crosslm_secure.aggregation.schemes import scheme_for
from crosslm_secure.config import Config, SyntheticTiming
from crosslm_secure.crypto.keys import Registry
from crosslm_secure.errors import RunError
from crosslm_secure.methods import method_for
from crosslm_secure.metrics import round_line
from crosslm_secure.privacy.ledger_copy import extend_copy, held_entries
from crosslm_secure.privacy.ledger_format import LedgerError
from crosslm_secure.protocol.messages import (
    EnhanceReply,
    EnhanceRequest,
    EvaluateReply,
    EvaluateRequest,
    TrainReply,
    TrainRequest,
    WireSample,
)
from crosslm_secure.protocol.party import Party
from crosslm_secure.runstore import RunState, RunStore
from crosslm_secure.server.acceptance import accept_samples
from crosslm_secure.server.feedback_round import FeedbackRounds
from crosslm_secure.server.llm_side import ServerLLM
from crosslm_secure.server.membership import Membership
from crosslm_secure.server.messaging import Messenger, Request
from crosslm_secure.transport.base import Transport


@dataclass
class RoundOutcome:
    """What the run looks like after it stops."""

    completed_rounds: int
    stopped_early: str | None = None
    excluded: dict[str, str] = field(default_factory=dict)


@dataclass
class _Phases:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def _choice_seed(run_seed: int, round_index: int) -> int:
    """The seed of a round's random choices of samples: fixed by the run seed and the round."""
    return int(np.random.SeedSequence([run_seed, round_index, 0x63686F]).generate_state(1)[0])


def samples_first(timing: SyntheticTiming, round_index: int) -> bool:
    """Whether round ``round_index`` makes, scores and sends its synthetic samples before its private training.

    ``same_round``: every round, so its training joins them; ``next_round``: never, they wait for the next
    round's; ``same_round_after_first``: from round 2 on, so round 1's samples are scored by trained SLMs.
    """
    return timing == "same_round" or (timing == "same_round_after_first" and round_index > 1)


class Coordinator:
    """Drives rounds 0..R over a transport.

    Args:
        config: the validated job configuration.
        party: the server's protocol identity.
        transport: reaches the client nodes.
        registry: every party's enrolled public keys.
        llm: the server's LLM side (evaluate, generate, tune, judge).
        store: the run folder.
        log: where one-line progress messages go.
        ledger_copies: the sites keep their ledgers on their own machines: ask each for the
            entries the run folder's copy lacks (``privacy/ledger_copy.py``).
    """

    def __init__(
        self,
        config: Config,
        party: Party,
        transport: Transport,
        registry: Registry,
        llm: ServerLLM,
        store: RunStore,
        log: Callable[[str], None] = print,
        *,
        ledger_copies: bool = False,
    ) -> None:
        self.config = config
        self.registry = registry
        self.ledger_copies = ledger_copies
        self.transport = transport
        self.llm = llm
        self.store = store
        self.log = log
        self.method = method_for(config.run.method)
        self.members = Membership(store, list(transport.node_ids()), config.run.min_clients, log)
        self.messenger = Messenger(party, transport, store, on_failure=self._failed)
        self.feedback = FeedbackRounds(
            config, scheme_for(config.feedback.aggregator), registry, self.messenger, self.members, store
        )
        self._llm_metrics: dict[str, float] = {}
        self._epsilon: dict[str, float | None] = {}

    @property
    def deals_keys(self) -> bool:
        return self.method.gets_feedback and self.feedback.scheme.needs_key_ceremony

    def run(self, start_round: int = 0) -> RoundOutcome:
        """Run from ``start_round`` (0 for a fresh run) to the method's last round."""
        last = self.method.last_round(self.config.run.rounds)
        completed = start_round - 1
        if start_round > 0:
            self._readmit(start_round)
        if self.deals_keys:
            stop = self.feedback.key_ceremony(start_round)
            if stop is not None:
                self.store.event("run_stopped", round=start_round, reason=stop)
                return RoundOutcome(completed, stop, dict(self.members.excluded))
        for round_index in range(start_round, last + 1):
            stop = None
            if round_index > start_round and self._readmit(round_index) and self.deals_keys:
                stop = self.feedback.key_ceremony(round_index)  # the rejoined sites need the feedback keys
            if stop is None:
                self.log(f"round {round_index}/{last}: {len(self.members.active)} clients active")
                stop = self._round(round_index)
            if stop is not None:
                self.store.event("run_stopped", round=round_index, reason=stop)
                return RoundOutcome(completed, stop, dict(self.members.excluded))
            completed = round_index
            self.store.save_state(self.members.state(round_index))
        return RoundOutcome(completed, None, dict(self.members.excluded))

    def restore(self, state: RunState) -> None:
        """Take back the participant state of a resumed run (unreachable clients count as dropped)."""
        self.members.restore(state, list(self.transport.node_ids()))

    @property
    def active(self) -> list[str]:
        return self.members.active

    @property
    def excluded(self) -> dict[str, str]:
        return self.members.excluded

    def _failed(self, name: str, reason: str, dropped: bool) -> None:
        self.members.exclude(name, reason, dropped=dropped)

    def _readmit(self, round_index: int) -> bool:
        """Take back dropped clients that answer again (``run.rejoin``); True if any came back."""
        if not self.config.run.rejoin or not self.members.dropped:
            return False
        back = self.transport.rejoined(list(self.members.dropped))
        return self.members.readmit(back, round_index, list(self.transport.node_ids()))

    # -- one round ---------------------------------------------------------------------

    def _round(self, round_index: int) -> str | None:
        phases = _Phases()
        round_start = time.perf_counter()
        synthetic: dict[str, Any] = {}
        if round_index > 0:
            send_first = self.method.generates and samples_first(self.config.run.synthetic_timing, round_index)
            if send_first:
                synthetic = self._synthetic_round(round_index, phases)
                if (stop := self.members.quorum_reason(round_index)) is not None:
                    return stop
            with phases("train_private"):
                self._train_private(round_index, synthetic_through=round_index if send_first else None)
            if (stop := self.members.quorum_reason(round_index)) is not None:
                return stop
            if self.method.generates and not send_first:
                synthetic = self._synthetic_round(round_index, phases)
                if (stop := self.members.quorum_reason(round_index)) is not None:
                    return stop
        if round_index == 0 or self.method.tunes_llm:
            with phases("evaluate_llm"):
                self._llm_metrics = self.llm.evaluate(round_index)
        with phases("evaluate_slm"):
            client_metrics = self._evaluate_clients(round_index)
        row = self._metrics_row(round_index, client_metrics, synthetic, phases, round_start)
        self.store.record_round(row)
        self.store.event("round_done", round=round_index, seconds=row["seconds_round"])
        self.log(round_line(row))
        return None

    def _train_private(self, round_index: int, *, synthetic_through: int | None = None) -> None:
        requests = dict.fromkeys(self.members.active, Request(TrainRequest(synthetic_through=synthetic_through)))
        for name, reply in self.messenger.ask_all(requests, round_index, TrainReply).items():
            if reply.body.status == "declined":
                self.members.exclude(name, f"declined round {round_index}: {reply.body.reason}")
            else:
                self._epsilon[name] = reply.body.epsilon

    def _synthetic_round(self, round_index: int, phases: _Phases) -> dict[str, Any]:
        with phases("generate"):
            samples = self.llm.generate(round_index)
        self.store.event("generated", round=round_index, samples=len(samples))
        result: dict[str, Any] = {"synthetic_generated": len(samples)}
        labels = np.array([s.intended_label for s in samples], dtype=np.int64)
        means = feedback_keep = None
        if self.method.gets_feedback and samples:
            means = self.feedback.aggregate(round_index, samples, phases)
            if means is None:
                return result
            feedback_keep = accept_samples(means, labels, len(self.config.task.labels), self.config.feedback)
        choice_seed = _choice_seed(self.config.run.seed, round_index)
        keep = self.method.accepted(feedback_keep, labels, seed=choice_seed)
        accepted = [s for s, kept in zip(samples, keep, strict=True) if kept]
        result["synthetic_accepted"] = len(accepted)
        if means is not None:
            self.store.write_synthetic_round(
                round_index,
                [s.text for s in samples],
                [self.config.task.labels[label] for label in labels],
                means,
                keep,
            )
            result["synthetic_mean_score"] = float(np.mean(means))
            result["synthetic_label_agreement"] = float(np.mean(means > 0.5))
        if self.method.tunes_llm and samples:
            # Without tuning scores every accepted sample counts the same (a score of 1 each).
            weighting = self.config.tuning.weighting
            scores = self.method.tuning_scores(means, labels, weighting=weighting, seed=choice_seed)
            if scores is None:
                scores, weighting = np.ones(len(samples)), "accepted"
            with phases("tune_llm"):
                result |= self.llm.tune(round_index, samples, scores, keep, weighting=weighting)
        if means is not None and self.method.weighs_by_feedback and keep.any():
            result["synthetic_accept_threshold"] = float(np.min(np.clip(means, 0, 1)[keep]))
        with phases("judge"):
            result |= self.llm.judge(samples, keep)
        if self.method.enhances:
            with phases("enhance"):
                request = Request(EnhanceRequest(samples=[WireSample.of(s) for s in accepted]))
                self.messenger.ask_all(dict.fromkeys(self.members.active, request), round_index, EnhanceReply)
        return result

    def _evaluate_clients(self, round_index: int) -> dict[str, EvaluateReply]:
        results = {}
        requests = {name: Request(EvaluateRequest(ledger_from=self._ledger_held(name))) for name in self.members.active}
        for name, reply in self.messenger.ask_all(requests, round_index, EvaluateReply).items():
            results[name] = reply.body
            self._epsilon[name] = reply.body.epsilon
            if self.ledger_copies:
                self._copy_ledger(name, round_index, reply.body.ledger)
        return results

    def _ledger_held(self, name: str) -> int | None:
        """Entries of ``name``'s ledger the run folder's copy holds (None: no copies are kept)."""
        if not self.ledger_copies:
            return None
        try:
            return held_entries(self.store.ledger_path(name), name)
        except LedgerError as exc:
            raise RunError(f"run: the server's copy of {name}'s ledger is damaged ({exc})") from None

    def _copy_ledger(self, name: str, round_index: int, lines: list[str]) -> None:
        try:
            held = extend_copy(self.store.ledger_path(name), name, lines, self.registry.get(name))
        except LedgerError as exc:
            self.store.event("ledger_copy_refused", round=round_index, client=name, reason=str(exc))
            self.log(f"{name}: ledger entries refused: {exc}")
            return
        if lines:
            self.store.event("ledger_copied", round=round_index, client=name, entries=held)

    # -- metrics -------------------------------------------------------------------------

    def _metrics_row(
        self,
        round_index: int,
        clients: dict[str, EvaluateReply],
        synthetic: dict[str, Any],
        phases: _Phases,
        round_start: float,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            "round": round_index,
            "method": self.method.name,
            "aggregator": self.feedback.name if self.method.gets_feedback else "none",
            "active_clients": len(self.members.active),
        }
        if clients:
            row["slm_accuracy_mean"] = float(np.mean([m.accuracy for m in clients.values()]))
            row["slm_macro_f1_mean"] = float(np.mean([m.macro_f1 for m in clients.values()]))
        for name, metrics in sorted(clients.items()):
            row[f"slm_accuracy/{name}"] = metrics.accuracy
            row[f"slm_macro_f1/{name}"] = metrics.macro_f1
        row.update(self._llm_metrics)
        row.update(synthetic)
        for name, epsilon in sorted(self._epsilon.items()):
            row[f"epsilon/{name}"] = float("inf") if epsilon is None else epsilon
        for phase, seconds in phases.seconds.items():
            row[f"seconds_{phase}"] = round(seconds, 3)
        row["seconds_round"] = round(time.perf_counter() - round_start, 3)
        row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return row
