"""The round coordinator (DESIGN.md §1): one server, many client silos, bytes in between.

It speaks typed protocol messages through a ``Transport`` and never sees client data,
client models, or (with a protecting aggregator) per-client scores.
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from crosslm_secure.aggregation.base import Aggregator
from crosslm_secure.aggregation.ckks import CKKSAggregator
from crosslm_secure.aggregation.plaintext import PlaintextAggregator
from crosslm_secure.cache import ContentCache, content_key
from crosslm_secure.config import Config
from crosslm_secure.crypto.ceremony import accept_public_context
from crosslm_secure.crypto.keys import Registry
from crosslm_secure.data.records import Example, SyntheticSample
from crosslm_secure.errors import CrossLMError, CryptoError, ProtocolError
from crosslm_secure.eval.judge import Judge
from crosslm_secure.eval.llm_eval import llm_perplexity, llm_task_accuracy
from crosslm_secure.models.llm import LoadedLLM, save_lora
from crosslm_secure.protocol.envelope import parse as parse_envelope
from crosslm_secure.protocol.messages import (
    EnhanceRequest,
    EvaluateReply,
    EvaluateRequest,
    KeysDealRequest,
    KeysInstallRequest,
    RevealReply,
    RevealRequest,
    ScoreReply,
    ScoreRequest,
    TrainReply,
    TrainRequest,
    WireSample,
    type_name,
)
from crosslm_secure.protocol.party import Party
from crosslm_secure.runstore import RunStore
from crosslm_secure.server.acceptance import accept_samples
from crosslm_secure.server.generation import generate_synthetic
from crosslm_secure.server.tuning import tune_llm
from crosslm_secure.transport.base import NodeUnavailable, Transport


class ClientRefused(CrossLMError):
    """A client answered with an ``error`` message."""


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


class Coordinator:
    """Drives rounds 0..R over a transport.

    Args:
        config: the validated job configuration.
        party: the server's protocol identity.
        transport: reaches the client nodes.
        registry: every party's enrolled public keys.
        llm: the server LLM (LoRA-wrapped when the method tunes it).
        llm_test: the evaluator's test set for the LLM's task accuracy (the first
            ``eval.llm_examples`` are used).
        store: the run folder.
        log: where one-line progress messages go.
    """

    def __init__(
        self,
        config: Config,
        party: Party,
        transport: Transport,
        registry: Registry,
        llm: LoadedLLM,
        llm_test: Sequence[Example],
        store: RunStore,
        log: Callable[[str], None] = print,
        cache: ContentCache | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        """Where round-0 LLM results (base weights, public settings, the evaluator's set) are reused."""
        self.party = party
        self.transport = transport
        self.registry = registry
        self.aggregator: Aggregator = PlaintextAggregator()
        self.llm = llm
        self.llm_test = list(llm_test)[: config.eval.llm_examples]
        self.store = store
        self.log = log
        self.method = config.run.method
        self.active: list[str] = list(transport.node_ids())
        self.excluded: dict[str, str] = {}
        self.dropped: list[str] = []
        """Excluded because they stopped answering (not because they refused or misbehaved): may rejoin."""
        self._llm_metrics: dict[str, float] = {}
        self._epsilon: dict[str, float | None] = {}
        self._judge: Judge | None = None

    @property
    def tunes_llm(self) -> bool:
        return self.method == "crosslm"

    @property
    def deals_keys(self) -> bool:
        return self.method == "crosslm" and self.config.feedback.aggregator == "ckks"

    def run(self, start_round: int = 0) -> RoundOutcome:
        """Run from ``start_round`` (0 for a fresh run) to ``config.run.rounds``."""
        last = self.config.run.rounds if self.method != "llm_zero_shot" else 0
        completed = start_round - 1
        if start_round > 0:
            self._readmit(start_round)
        if self.deals_keys:
            stop = self._key_ceremony(start_round)
            if stop is not None:
                self.store.event("run_stopped", round=start_round, reason=stop)
                return RoundOutcome(completed, stop, dict(self.excluded))
        for round_index in range(start_round, last + 1):
            stop = None
            if round_index > start_round and self._readmit(round_index) and self.deals_keys:
                stop = self._key_ceremony(round_index)  # the rejoined sites need the feedback keys
            if stop is None:
                self.log(f"round {round_index}/{last}: {len(self.active)} clients active")
                stop = self._round(round_index)
            if stop is not None:
                self.store.event("run_stopped", round=round_index, reason=stop)
                return RoundOutcome(completed, stop, dict(self.excluded))
            completed = round_index
            self.store.save_state({"completed_round": round_index} | self._participants())
        return RoundOutcome(completed, None, dict(self.excluded))

    def restore(self, active: Sequence[str], excluded: dict[str, str], dropped: Sequence[str] = ()) -> None:
        """Take back the participant state of a resumed run.

        A client that was active but is not reachable now counts as dropped, so it can rejoin later.
        """
        reachable = set(self.transport.node_ids())
        self.active = [name for name in active if name in reachable]
        self.excluded = dict(excluded)
        self.dropped = [name for name in dropped if name in self.excluded]
        for name in active:
            if name not in reachable:
                self._exclude(name, "not connected when the run resumed", dropped=True)

    def _participants(self) -> dict[str, Any]:
        return {"active": list(self.active), "excluded": dict(self.excluded), "dropped": list(self.dropped)}

    def _readmit(self, round_index: int) -> bool:
        """Take back dropped clients that answer again (``run.rejoin``); True if any came back."""
        if not self.config.run.rejoin or not self.dropped:
            return False
        back = self.transport.rejoined(list(self.dropped))
        for name in back:
            self.dropped.remove(name)
            reason = self.excluded.pop(name, "")
            self.store.event("client_rejoined", client=name, round=round_index, was=reason)
            self.log(f"  {name} rejoined at round {round_index}")
        if back:
            wanted = set(self.active) | set(back)
            self.active = [name for name in self.transport.node_ids() if name in wanted]
        return bool(back)

    # -- key ceremony --------------------------------------------------------------------

    def _key_ceremony(self, round_index: int) -> str | None:
        """A client deals the CKKS context; the server relays wraps it cannot open and keeps
        only the public context. Tries the next client if a dealer fails."""
        for dealer in list(self.active):
            request = KeysDealRequest(preset=self.config.feedback.ckks_preset)
            reply = self._ask(dealer, request, round_index, "keys.dealt")
            if reply is None:
                continue
            envelope, body = reply
            announcement, public_context, *wraps = envelope.blobs
            try:
                context = accept_public_context(
                    self.registry, announcement=announcement, public_context=public_context, run_id=self.store.run_id
                )
            except CryptoError as exc:
                self._exclude(dealer, f"dealt an unacceptable context: {exc}")
                continue
            self.aggregator = CKKSAggregator.for_server(
                context, self.registry, run_id=self.store.run_id, quorum=max(2, self.config.run.min_clients)
            )
            self.store.write_public_context(context.to_bytes(), announcement, context.fingerprint)
            wrapped = dict(zip(body.recipients, wraps, strict=True))
            installs = {}
            for name in [n for n in self.active if n != dealer]:
                if name not in wrapped:
                    self._exclude(name, f"dealer {dealer} made no key wrap for it")
                    continue
                installs[name] = (KeysInstallRequest(), [announcement, wrapped[name]])
            for name, (_, installed) in self._ask_all(installs, round_index, "keys.installed").items():
                if installed.fingerprint != context.fingerprint:
                    self._exclude(name, "installed a context other than the announced one")
            self.store.event("key_ceremony", dealer=dealer, fingerprint=context.fingerprint, clients=self.active)
            return self._quorum_reason(round_index)
        return f"key ceremony: no client could deal a CKKS context; excluded: {self.excluded}"

    # -- one round ---------------------------------------------------------------------

    def _round(self, round_index: int) -> str | None:
        phases = _Phases()
        round_start = time.perf_counter()
        synthetic: dict[str, Any] = {}
        if round_index > 0:
            with phases("train_private"):
                self._train_private(round_index)
            stop = self._quorum_reason(round_index)
            if stop is not None:
                return stop
            if self.method in ("crosslm", "data_free_kd"):
                synthetic = self._synthetic_round(round_index, phases)
                stop = self._quorum_reason(round_index)
                if stop is not None:
                    return stop
        llm_changed = round_index == 0 or self.tunes_llm
        if llm_changed:
            with phases("evaluate_llm"):
                self._evaluate_llm(round_index)
        with phases("evaluate_slm"):
            client_metrics = self._evaluate_clients(round_index)
        row = self._metrics_row(round_index, client_metrics, synthetic, phases, round_start)
        self.store.record_round(row)
        self.store.event("round_done", round=round_index, seconds=row["seconds_round"])
        self.log(_round_line(row))
        return None

    def _quorum_reason(self, round_index: int) -> str | None:
        if len(self.active) >= self.config.run.min_clients:
            return None
        return (
            f"round {round_index}: only {len(self.active)} client(s) remain, fewer than "
            f"run.min_clients={self.config.run.min_clients}; excluded: "
            + "; ".join(f"{name}: {why}" for name, why in self.excluded.items())
        )

    def _train_private(self, round_index: int) -> None:
        replies = self._ask_all({name: (TrainRequest(), ()) for name in self.active}, round_index, "train.reply")
        for name, (_, body) in replies.items():
            assert isinstance(body, TrainReply)
            if body.status == "declined":
                self._exclude(name, f"declined round {round_index}: {body.reason}")
            else:
                self._epsilon[name] = body.epsilon

    def _synthetic_round(self, round_index: int, phases: _Phases) -> dict[str, Any]:
        cfg = self.config
        with phases("generate"):
            samples = generate_synthetic(
                self.llm,
                cfg.task,
                cfg.generation,
                round_index=round_index,
                seed=cfg.run.seed,
                progress=cfg.run.progress,
            )
        self.store.event("generated", round=round_index, samples=len(samples))
        if self.method == "data_free_kd" or not samples:
            accepted = samples
            result: dict[str, Any] = {"synthetic_generated": len(samples), "synthetic_accepted": len(samples)}
            result |= self._judge_agreement(samples, np.ones(len(samples), dtype=bool))
        else:
            means = self._aggregate_scores(round_index, samples, phases)
            if means is None:
                return {"synthetic_generated": len(samples)}
            keep = accept_samples(
                means, np.array([s.intended_label for s in samples]), len(cfg.task.labels), cfg.feedback
            )
            with phases("tune_llm"):
                report = tune_llm(
                    self.llm,
                    samples,
                    means,
                    cfg.task,
                    cfg.tuning,
                    accepted=keep,
                    seed=cfg.run.seed + round_index,
                    progress=cfg.run.progress,
                )
            save_lora(self.llm.model, self.store.llm_dir(round_index))
            accepted = [s for s, kept in zip(samples, keep, strict=True) if kept]
            result = {
                "synthetic_generated": len(samples),
                "synthetic_accepted": len(accepted),
                "synthetic_mean_score": float(np.mean(means)),
                "synthetic_label_agreement": float(np.mean(means > 0.5)),
                "llm_tune_steps": report.steps,
                "llm_tune_loss": report.mean_loss,
            }
            if keep.any():
                result["synthetic_accept_threshold"] = float(np.min(np.clip(means, 0, 1)[keep]))
            with phases("judge"):
                result |= self._judge_agreement(samples, keep)
        with phases("enhance"):
            request = EnhanceRequest(samples=[WireSample.of(s) for s in accepted])
            self._ask_all({name: (request, ()) for name in self.active}, round_index, "enhance.reply")
        return result

    def _aggregate_scores(
        self, round_index: int, samples: Sequence[SyntheticSample], phases: _Phases
    ) -> np.ndarray | None:
        """Collect protected scores, combine blind, have a client decrypt the mean.

        The participant set is announced in the request; if anyone drops, the whole
        aggregation restarts with the rest (fresh masks), up to ``feedback.max_attempts``.
        """
        wire = [WireSample.of(s) for s in samples]
        for attempt in range(self.config.feedback.max_attempts):
            participants = list(self.active)
            if len(participants) < self.config.run.min_clients:
                return None
            request = ScoreRequest(participants=participants, attempt=attempt, samples=wire)
            with phases("score"):
                signed: list[bytes] = []
                contributions: list[bytes] = []
                replies = self._ask_all(
                    {name: (request, ()) for name in participants}, round_index, "score.reply", keep_raw=True
                )
                for name, (envelope, body, raw) in replies.items():
                    assert isinstance(body, ScoreReply)
                    if body.count != len(samples) or not envelope.blobs:
                        self._exclude(name, f"sent {body.count} scores for {len(samples)} samples")
                        continue
                    signed.append(raw)
                    contributions.append(envelope.blobs[0])
            if len(signed) != len(participants):
                self.store.event("aggregation_restart", round=round_index, attempt=attempt, left=self.active)
                continue
            with phases("aggregate"):
                aggregate = self.aggregator.combine(contributions)
            with phases("reveal"):
                means = self._reveal(round_index, attempt, participants, aggregate, signed, len(samples))
            if means is not None:
                return means
        self.store.event("aggregation_failed", round=round_index)
        return None

    def _reveal(
        self,
        round_index: int,
        attempt: int,
        participants: list[str],
        aggregate: bytes,
        signed: list[bytes],
        count: int,
    ) -> np.ndarray | None:
        decryptor = participants[(round_index + attempt) % len(participants)]
        request = RevealRequest(
            participants=participants, attempt=attempt, count=count, quorum=self.config.run.min_clients
        )
        reply = self._ask(decryptor, request, round_index, "reveal.reply", blobs=[aggregate, *signed])
        if reply is None:
            return None
        envelope, body = reply
        assert isinstance(body, RevealReply)
        if body.count != count or not envelope.blobs or len(envelope.blobs[0]) != 8 * count:
            self._exclude(decryptor, "returned a malformed aggregate")
            return None
        self.store.event("revealed", round=round_index, decryptor=decryptor, contributors=body.contributors)
        return np.frombuffer(envelope.blobs[0], dtype="<f8").copy()

    def _judge_agreement(self, samples: Sequence[SyntheticSample], keep: np.ndarray) -> dict[str, float]:
        """How often an independent judge (trained on the evaluator's split) agrees with the intended
        labels of the accepted and of the rejected samples."""
        if not self.llm_test or not samples:
            return {}
        if self._judge is None:
            device = next(self.llm.model.parameters()).device
            self._judge = Judge(
                self.llm_test, len(self.config.task.labels), device, seed=self.config.run.seed, encoder=self.config.slm
            )
        agrees = self._judge.predict([s.text for s in samples]) == np.array([s.intended_label for s in samples])
        result = {"synthetic_judge_agreement_accepted": float(np.mean(agrees[keep])) if keep.any() else math.nan}
        if (~keep).any():
            result["synthetic_judge_agreement_rejected"] = float(np.mean(agrees[~keep]))
        return result

    def _evaluate_llm(self, round_index: int) -> None:
        cfg = self.config

        def task() -> dict:
            return llm_task_accuracy(self.llm, self.llm_test, cfg.task, cfg.eval, progress=cfg.run.progress)

        def perplexity() -> float:
            return llm_perplexity(self.llm, cfg.eval, progress=cfg.run.progress)

        if round_index == 0 and self.cache is not None:
            # Round 0 evaluates the untouched base weights (a fresh LoRA adapter adds exactly
            # zero), so the result is a pure function of the weights, the data and the settings.
            base = _base_model_key(self.llm)
            ppl_key = content_key("llm_ppl", base, cfg.eval.perplexity_chunks, cfg.eval.perplexity_chunk_tokens)
            data = hashlib.sha256(json.dumps([[e.uid, e.text, e.label] for e in self.llm_test]).encode()).hexdigest()
            task_key = content_key("llm_task", base, cfg.task.model_dump(), cfg.eval.model_dump(), data)
            results = self.cache.get_or_compute("llm_task", task_key, task)
            ppl = self.cache.get_or_compute("llm_perplexity", ppl_key, perplexity)
            self.store.event("llm_eval_cache", round=round_index, hits=self.cache.hits, misses=self.cache.misses)
        else:
            results, ppl = task(), perplexity()
        self._llm_metrics = {
            "llm_accuracy": results["accuracy"],
            "llm_macro_f1": results["macro_f1"],
            "llm_perplexity": ppl,
        }

    def _evaluate_clients(self, round_index: int) -> dict[str, EvaluateReply]:
        results = {}
        replies = self._ask_all({name: (EvaluateRequest(), ()) for name in self.active}, round_index, "evaluate.reply")
        for name, (_, body) in replies.items():
            assert isinstance(body, EvaluateReply)
            results[name] = body
            self._epsilon[name] = body.epsilon
        return results

    # -- messaging -----------------------------------------------------------------------

    def _ask(
        self,
        name: str,
        body: Any,
        round_index: int,
        expect: str,
        *,
        blobs: Sequence[bytes] = (),
        keep_raw: bool = False,
    ) -> Any:
        """Send one request; on a crash, refusal or bad reply, exclude the client and return None."""
        return self._ask_all({name: (body, blobs)}, round_index, expect, keep_raw=keep_raw).get(name)

    def _ask_all(
        self,
        requests: dict[str, tuple[Any, Sequence[bytes]]],
        round_index: int,
        expect: str,
        *,
        keep_raw: bool = False,
    ) -> dict[str, Any]:
        """Send each client its request at once (sites work in parallel) and check every reply.

        ``requests`` maps a client to its message body and blobs. Returns the clients that
        answered well, each with ``(envelope, body)`` (plus the raw bytes with ``keep_raw``);
        a client that crashed, refused or answered badly is excluded and left out. Replies are
        checked in the order of ``requests``, so the run folder does not depend on who was faster.
        """
        sealed = {}
        for name, (body, blobs) in requests.items():
            sealed[name] = self.party.seal(name, round_index, body, blobs)
            self._log_message(sealed[name], "out", name, round_index, type_name(body), "sent")
        answers = self.transport.request_many(sealed)
        accepted: dict[str, Any] = {}
        for name, raw in answers.items():
            try:
                if isinstance(raw, NodeUnavailable):
                    raise raw
                try:
                    envelope, reply = self.party.open(raw, expect_round=round_index)
                except ProtocolError:
                    self._log_message(raw, "in", name, round_index, "refused", "refused")
                    raise
                self._log_message(raw, "in", name, round_index, envelope.type, "accepted")
                if envelope.sender != name:
                    raise ProtocolError(f"reply to {name} came from {envelope.sender}")
                if envelope.type == "error":
                    raise ClientRefused(reply.reason)
                if envelope.type != expect:
                    raise ProtocolError(f"{name} answered {envelope.type}, expected {expect}")
            except (NodeUnavailable, ProtocolError, ClientRefused) as exc:
                self._exclude(name, str(exc), dropped=isinstance(exc, NodeUnavailable))
                continue
            accepted[name] = (envelope, reply, raw) if keep_raw else (envelope, reply)
        return accepted

    def _exclude(self, name: str, reason: str, *, dropped: bool = False) -> None:
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
            self.store.save_state(saved | self._participants())
        self.log(f"  {name} excluded: {reason}")

    def _log_message(self, message: bytes, direction: str, peer: str, round_index: int, kind: str, status: str) -> None:
        """Transcript: type, size, hash and envelope routing only; never contents.

        ``status`` is ``sent`` (sealed and signed by the server), ``accepted`` (signature
        verified and sequence number fresh: ``Inbox.open`` succeeded) or ``refused``;
        ``sender``/``recipient``/``seq`` come from the envelope header (null when unparseable),
        so an audit can show every message was signed and accepted once.
        """
        try:
            header, _, _ = parse_envelope(message)
            sender, recipient, seq = header.sender, header.recipient, header.seq
        except ProtocolError:
            sender = recipient = seq = None
        self.store.transcript(
            direction=direction,
            peer=peer,
            round=round_index,
            bytes=len(message),
            sha256=hashlib.sha256(message).hexdigest(),
            type=kind,
            status=status,
            sender=sender,
            recipient=recipient,
            seq=seq,
        )

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
            "method": self.method,
            "aggregator": self.aggregator.name,
            "active_clients": len(self.active),
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


def _round_line(row: dict[str, Any]) -> str:
    parts = [f"round {row['round']} done in {row['seconds_round']:.0f}s"]
    if "slm_macro_f1_mean" in row:
        parts.append(f"SLM macro-F1 {row['slm_macro_f1_mean']:.3f} (acc {row['slm_accuracy_mean']:.3f})")
    if "llm_macro_f1" in row:
        parts.append(
            f"LLM macro-F1 {row['llm_macro_f1']:.3f} (acc {row['llm_accuracy']:.3f}) ppl {row['llm_perplexity']:.2f}"
        )
    if "synthetic_accepted" in row:
        parts.append(f"synthetic {row['synthetic_accepted']}/{row['synthetic_generated']} accepted")
    return "  " + ", ".join(parts)


def _base_model_key(llm: LoadedLLM) -> list[str]:
    """What a base-model result depends on besides data and settings: weights, dtype, device, libraries."""
    import transformers

    param = next(llm.model.parameters())
    return [llm.fingerprint, str(param.dtype), param.device.type, torch.__version__, transformers.__version__]
