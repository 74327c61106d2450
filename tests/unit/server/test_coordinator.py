"""The coordinator's round loop and membership, with no model: fake sites behind the real
in-process transport, a fake LLM side, plaintext feedback, real signed envelopes.

The sites here are stand-ins for the *other* party (what a client node would answer), so the
coordinator under test runs unchanged: membership, exclusion, retry with a fresh attempt,
the quorum stop and rejoin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from crosslm_secure.aggregation.plaintext import PlaintextAggregator
from crosslm_secure.config import Config, config_to_dict
from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.protocol.envelope import verify
from crosslm_secure.protocol.messages import (
    EnhanceReply,
    ErrorReply,
    EvaluateReply,
    RevealReply,
    ScoreReply,
    TrainingStats,
    TrainReply,
    encode_means,
    pack,
    unpack,
)
from crosslm_secure.protocol.party import Party, in_memory_identities, party_of
from crosslm_secure.runstore import RunStore
from crosslm_secure.server.coordinator import Coordinator
from crosslm_secure.transport.inprocess import InProcessTransport

CLIENTS = ["client-1", "client-2", "client-3"]
LABELS = 3
STATS = TrainingStats(steps=1, examples=4, mean_loss=0.5, seconds=0.0)
POISON = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "1e308": 1e308, "-1e308": -1e308}
"""Means a lying or broken decryptor could return, by fault name."""


@dataclass
class FakeSite:
    """Answers the server as a client node would, with scripted faults.

    ``fault(kind, round, attempt)`` returns ``"crash"`` (raise: the transport marks the site
    down), ``"refuse"`` (a signed error reply), ``"decline"`` (train only), ``"garble"``
    (reveal only: means of the wrong length), a key of ``POISON`` (reveal only: the first mean
    replaced by that value), ``"wrong_type"``, or None.
    """

    party: Party
    fault: Callable[[str, int, int], str | None] = lambda kind, round_index, attempt: None
    seen: list[tuple[str, int, int, tuple[str, ...]]] = field(default_factory=list)
    quorums: list[int] = field(default_factory=list)
    """The quorum each reveal request announced."""
    enhanced: list[list[str]] = field(default_factory=list)
    """The sample ids of each enhance request."""

    def handle(self, message: bytes) -> bytes:
        envelope, body = self.party.open(message)
        attempt = getattr(body, "attempt", 0)
        participants = tuple(getattr(body, "participants", ()))
        self.seen.append((envelope.type, envelope.round, attempt, participants))
        fault = self.fault(envelope.type, envelope.round, attempt)
        if fault == "crash":
            raise RuntimeError(f"{self.party.name} crashed")
        if fault == "refuse":
            return self._reply(envelope.round, ErrorReply(reason=f"{self.party.name} refuses"))
        if fault == "wrong_type":
            return self._reply(envelope.round, EvaluateReply(accuracy=0.5, macro_f1=0.5, n=4))
        round_index = envelope.round
        if envelope.type == "train.request":
            if fault == "decline":
                return self._reply(round_index, TrainReply(status="declined", reason="over budget", private=True))
            return self._reply(round_index, TrainReply(status="ok", stats=STATS, private=True, epsilon=round_index))
        if envelope.type == "score.request":
            scores = np.array([0.9 if s.label == 0 else 0.2 for s in body.samples])
            protected = PlaintextAggregator().protect(scores, round_index=round_index, participants=participants)
            reply = ScoreReply(count=len(body.samples), aggregator="plaintext")
            return self._reply(round_index, reply, contribution=protected.contribution)
        if envelope.type == "reveal.request":
            self.quorums.append(body.quorum)
            attached = unpack(envelope)
            contributions = [
                unpack(verify(m, self.party.directory))["contribution"] for m in attached["signed_replies"]
            ]
            means = PlaintextAggregator().reveal(attached["aggregate"], contributions, count=body.count)
            if fault == "garble":
                means = means[:-1]
            if fault in POISON:
                means[0] = POISON[fault]
            reply = RevealReply(count=body.count, contributors=len(contributions))
            return self._reply(round_index, reply, means=encode_means(means))
        if envelope.type == "enhance.request":
            self.enhanced.append([sample.id for sample in body.samples])
            return self._reply(round_index, EnhanceReply(stats=STATS))
        if envelope.type == "evaluate.request":
            return self._reply(round_index, EvaluateReply(accuracy=0.5, macro_f1=0.4, n=4, epsilon=float(round_index)))
        raise AssertionError(f"unexpected {envelope.type}")

    def _reply(self, round_index: int, body: object, **attachments: bytes) -> bytes:
        return self.party.seal("server", round_index, body, pack(body, **attachments))


@dataclass
class FakeLLM:
    """The server's LLM side without a model: fixed metrics, nine samples per round."""

    calls: list[str] = field(default_factory=list)
    tuned: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    """The scores and the accepted mask each tune call was given."""
    weightings: list[str] = field(default_factory=list)
    """The ``weighting`` each tune call was given."""
    judged: list[np.ndarray] = field(default_factory=list)
    """The accepted mask each judge call was given."""

    def evaluate(self, round_index: int) -> dict[str, float]:
        self.calls.append("evaluate")
        return {"llm_accuracy": 0.6, "llm_macro_f1": 0.5, "llm_perplexity": 10.0}

    def generate(self, round_index: int) -> list[SyntheticSample]:
        self.calls.append(f"generate {round_index}")
        return [SyntheticSample(f"r{round_index}-{i}", f"text {i}", i % LABELS) for i in range(9)]

    def tune(
        self,
        round_index: int,
        samples: Sequence[SyntheticSample],
        means: np.ndarray,
        keep: np.ndarray,
        *,
        weighting: str = "accepted",
    ) -> dict:
        self.calls.append(f"tune {round_index} kept {int(keep.sum())}")
        self.tuned.append((np.array(means, dtype=float), np.array(keep, dtype=bool)))
        self.weightings.append(weighting)
        return {"llm_tune_steps": 1}

    def judge(self, samples: Sequence[SyntheticSample], keep: np.ndarray) -> dict[str, float]:
        self.judged.append(np.array(keep, dtype=bool))
        return {}


def job(
    tmp_path: Path,
    *,
    method: str = "crosslm",
    min_clients: int = 2,
    rejoin: bool = True,
    max_attempts: int = 3,
    weighting: str = "accepted",
    **faults,
) -> dict:
    """A coordinator over three fake sites; ``faults`` maps a client to its fault function."""
    config = Config.model_validate(
        {
            "run": {"method": method, "rounds": 2, "min_clients": min_clients, "rejoin": rejoin, "progress": False},
            "feedback": {"aggregator": "plaintext", "max_attempts": max_attempts},
            "task": {"labels": ["a", "b", "c"]},
            "tuning": {"weighting": weighting},
        }
    )
    keys, registry = in_memory_identities("server", CLIENTS)
    store = RunStore.create(tmp_path, "t", 0, config_to_dict(config))
    sites = {
        name: FakeSite(party_of(keys[name], store.run_id, registry), faults.get(name.replace("-", "_"), FakeSite.fault))
        for name in CLIENTS
    }

    def restart(name: str) -> Callable[[bytes], bytes]:
        sites[name] = FakeSite(party_of(keys[name], store.run_id, registry))
        return sites[name].handle

    transport = InProcessTransport({n: s.handle for n, s in sites.items()}, restart=restart)
    llm = FakeLLM()
    server = party_of(keys["server"], store.run_id, registry)
    coordinator = Coordinator(config, server, transport, registry, llm, store, log=lambda line: None)
    return {"coordinator": coordinator, "store": store, "sites": sites, "llm": llm}


def test_a_crosslm_run_trains_scores_tunes_and_records_every_round(tmp_path: Path) -> None:
    run = job(tmp_path)
    outcome = run["coordinator"].run()
    assert outcome.completed_rounds == 2 and outcome.stopped_early is None and outcome.excluded == {}
    rows = run["store"].rounds()
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[1]["synthetic_generated"] == 9 and 0 < rows[1]["synthetic_accepted"] < 9
    assert rows[2]["aggregator"] == "plaintext" and rows[2]["epsilon/client-1"] == 2.0
    # Label-0 samples score 0.9 and the rest 0.2 (below chance), so only label 0 is accepted.
    assert run["llm"].calls == [
        "evaluate",
        "generate 1",
        "tune 1 kept 2",
        "evaluate",
        "generate 2",
        "tune 2 kept 2",
        "evaluate",
    ]
    assert run["store"].load_state().completed_round == 2


def test_standalone_never_generates_scores_or_tunes(tmp_path: Path) -> None:
    run = job(tmp_path, method="standalone")
    assert run["coordinator"].run().completed_rounds == 2
    assert run["llm"].calls == ["evaluate"]
    kinds = {kind for kind, *_ in run["sites"]["client-1"].seen}
    assert kinds == {"train.request", "evaluate.request"}
    assert run["store"].rounds()[1]["aggregator"] == "none"


def test_no_feedback_accepts_every_sample_unscored_and_tunes_on_all_at_equal_weight(tmp_path: Path) -> None:
    run = job(tmp_path, method="crosslm_no_feedback")
    assert run["coordinator"].run().completed_rounds == 2
    rows = run["store"].rounds()
    assert [rows[r]["synthetic_accepted"] for r in (1, 2)] == [rows[r]["synthetic_generated"] for r in (1, 2)] == [9, 9]
    kinds = {kind for site in run["sites"].values() for kind, *_ in site.seen}
    assert "score.request" not in kinds and "reveal.request" not in kinds  # nothing scored, nothing released
    assert [len(ids) for ids in run["sites"]["client-2"].enhanced] == [9, 9]
    for scores, keep in run["llm"].tuned:
        assert keep.all() and (scores == 1.0).all()  # the scores decide nothing: equal weight for all
    assert run["llm"].calls.count("evaluate") == 3  # the tuned LLM is re-evaluated every round


def test_random_feedback_keeps_as_many_as_the_feedback_but_not_its_choice(tmp_path: Path) -> None:
    # The fake sites score label 0 at 0.9 and the rest at 0.2, below chance: the feedback keeps
    # two label-0 samples a round (see the crosslm test above) and drops every other label.
    feedback = job(tmp_path / "feedback")
    feedback["coordinator"].run()
    run = job(tmp_path / "random", method="crosslm_random_feedback")
    assert run["coordinator"].run().completed_rounds == 2
    kinds = {kind for site in run["sites"].values() for kind, *_ in site.seen}
    assert {"score.request", "reveal.request"} <= kinds  # scored and released as in crosslm
    for ours, theirs in zip(run["llm"].tuned, feedback["llm"].tuned, strict=True):
        (scores, keep), (_, feedback_keep) = ours, theirs
        assert keep.sum() == feedback_keep.sum() == 2
        labels = np.arange(9) % LABELS
        assert len(set(labels[keep])) == 2  # label-balanced: one sample of each of two labels, not two of label 0
        assert not (keep == feedback_keep).all()
        assert (scores == 1.0).all()  # tuned at equal weight, not by score
    rows = run["store"].rounds()
    assert rows[1]["synthetic_accepted"] == feedback["store"].rounds()[1]["synthetic_accepted"] == 2
    enhanced = run["sites"]["client-1"].enhanced
    assert [len(ids) for ids in enhanced] == [2, 2]
    assert [set(ids) for ids in enhanced] != [set(ids) for ids in feedback["sites"]["client-1"].enhanced]


@pytest.mark.parametrize(
    ("method", "passed"),
    [("crosslm", "every_sample"), ("crosslm_random_feedback", "every_sample"), ("crosslm_no_feedback", "accepted")],
)
def test_every_sample_weighting_reaches_the_tuning_of_methods_that_have_scores(
    tmp_path: Path, method: str, passed: str
) -> None:
    # no_feedback has no scores: it tunes on every sample at weight 1 (accepted is all of them).
    run = job(tmp_path, method=method, weighting="every_sample")
    assert run["coordinator"].run().completed_rounds == 2
    assert run["llm"].weightings == [passed, passed]


def test_random_feedback_under_every_sample_weighting_tunes_on_the_released_scores_shuffled(tmp_path: Path) -> None:
    feedback = job(tmp_path / "feedback", weighting="every_sample")
    feedback["coordinator"].run()
    run = job(tmp_path / "random", method="crosslm_random_feedback", weighting="every_sample")
    run["coordinator"].run()
    labels = np.arange(9) % LABELS
    for (ours, _), (theirs, _) in zip(run["llm"].tuned, feedback["llm"].tuned, strict=True):
        for label in range(LABELS):
            assert sorted(ours[labels == label]) == pytest.approx(sorted(theirs[labels == label]))


def test_random_feedback_draws_the_same_samples_for_the_same_seed(tmp_path: Path) -> None:
    first = job(tmp_path / "a", method="crosslm_random_feedback")
    second = job(tmp_path / "b", method="crosslm_random_feedback")
    first["coordinator"].run()
    second["coordinator"].run()
    assert [k.tolist() for _, k in first["llm"].tuned] == [k.tolist() for _, k in second["llm"].tuned]


def test_a_refusing_scorer_is_excluded_and_aggregation_retries_without_it(tmp_path: Path) -> None:
    run = job(tmp_path, client_3=lambda kind, r, attempt: "refuse" if kind == "score.request" else None)
    outcome = run["coordinator"].run()
    assert outcome.completed_rounds == 2
    assert outcome.excluded == {"client-3": "client-3 refuses"}
    scores = [
        (r, attempt, parts) for kind, r, attempt, parts in run["sites"]["client-1"].seen if kind == "score.request"
    ]
    # A fresh attempt (fresh masks) with the announced set shrunk to those still active.
    assert scores[0] == (1, 0, tuple(CLIENTS))
    assert scores[1] == (1, 1, ("client-1", "client-2"))
    events = [e for e in run["store"].events() if e["event"] == "aggregation_restart"]
    assert events and events[0]["attempt"] == 0
    assert run["store"].rounds()[2]["active_clients"] == 2


def test_a_decryptor_returning_garbled_means_is_excluded_and_the_next_one_decrypts(tmp_path: Path) -> None:
    # Round 1, attempt 0: the decryptor is participants[(1 + 0) % 3] = client-2.
    run = job(tmp_path, client_2=lambda kind, r, attempt: "garble" if kind == "reveal.request" else None)
    outcome = run["coordinator"].run()
    assert outcome.excluded["client-2"].startswith("returned a malformed aggregate: reveal.reply: holds 64 bytes")
    revealed = [e for e in run["store"].events() if e["event"] == "revealed"]
    assert revealed[0]["round"] == 1 and revealed[0]["decryptor"] != "client-2"
    assert run["store"].rounds()[1]["synthetic_generated"] == 9 and "synthetic_accepted" in run["store"].rounds()[1]


@pytest.mark.parametrize(
    ("poison", "why"),
    [
        ("nan", "mean score nan of sample 0 is not a finite number"),
        ("inf", "mean score inf of sample 0 is not a finite number"),
        ("-inf", "mean score -inf of sample 0 is not a finite number"),
        ("1e308", "mean score 1e+308 of sample 0 is outside [-1.5, 2.5]"),
        ("-1e308", "mean score -1e+308 of sample 0 is outside [-1.5, 2.5]"),
    ],
)
def test_a_decryptor_revealing_an_impossible_mean_is_excluded_and_the_next_one_decrypts(
    tmp_path: Path, poison: str, why: str
) -> None:
    run = job(tmp_path, client_2=lambda kind, r, attempt: poison if kind == "reveal.request" else None)
    outcome = run["coordinator"].run()
    assert outcome.completed_rounds == 2 and outcome.stopped_early is None
    reason = outcome.excluded["client-2"]
    assert reason.startswith(f"returned a malformed aggregate: reveal.reply: {why}") and "\n" not in reason
    assert list(outcome.excluded) == ["client-2"]
    revealed = [e for e in run["store"].events() if e["event"] == "revealed"]
    assert revealed[0]["round"] == 1 and revealed[0]["decryptor"] != "client-2"
    assert run["store"].rounds()[1]["synthetic_accepted"] > 0


def test_decryptors_that_all_lie_stop_the_run_cleanly_once_too_few_remain(tmp_path: Path) -> None:
    def lie(kind: str, r: int, attempt: int) -> str | None:
        return "nan" if kind == "reveal.request" else None

    run = job(tmp_path, client_1=lie, client_2=lie, client_3=lie)
    outcome = run["coordinator"].run()
    # Attempt 0: client-2 decrypts and is excluded; attempt 1: client-1; then one client is left.
    assert list(outcome.excluded) == ["client-2", "client-1"]
    assert outcome.completed_rounds == 0
    assert "only 1 client(s) remain, fewer than run.min_clients=2" in outcome.stopped_early
    assert "client-2: returned a malformed aggregate: reveal.reply: mean score nan" in outcome.stopped_early
    assert not [e for e in run["store"].events() if e["event"] == "revealed"]


def test_a_round_whose_attempts_run_out_goes_on_without_synthetic_data(tmp_path: Path) -> None:
    run = job(tmp_path, max_attempts=1, client_2=lambda kind, r, attempt: "inf" if kind == "reveal.request" else None)
    outcome = run["coordinator"].run()
    assert outcome.completed_rounds == 2 and list(outcome.excluded) == ["client-2"]
    assert [e["round"] for e in run["store"].events() if e["event"] == "aggregation_failed"] == [1]
    rows = run["store"].rounds()
    assert "synthetic_accepted" not in rows[1] and rows[2]["synthetic_accepted"] > 0


def test_a_reply_of_the_wrong_type_excludes_its_sender(tmp_path: Path) -> None:
    run = job(tmp_path, client_1=lambda kind, r, attempt: "wrong_type" if kind == "train.request" else None)
    outcome = run["coordinator"].run()
    assert outcome.excluded == {"client-1": "client-1 answered evaluate.reply, expected train.reply"}


def test_too_few_clients_stop_the_run_cleanly_with_the_reason(tmp_path: Path) -> None:
    run = job(tmp_path, min_clients=3, client_2=lambda kind, r, attempt: "decline" if kind == "train.request" else None)
    outcome = run["coordinator"].run()
    assert outcome.completed_rounds == 0
    assert "only 2 client(s) remain, fewer than run.min_clients=3" in outcome.stopped_early
    assert "client-2: declined round 1: over budget" in outcome.stopped_early
    assert [e for e in run["store"].events() if e["event"] == "run_stopped"][0]["round"] == 1
    assert run["store"].load_state().completed_round == 0


@pytest.mark.parametrize("rejoin", [True, False])
def test_a_crashed_site_rejoins_at_the_next_round_only_when_allowed(tmp_path: Path, rejoin: bool) -> None:
    run = job(
        tmp_path,
        rejoin=rejoin,
        client_3=lambda kind, r, attempt: "crash" if (kind, r) == ("train.request", 1) else None,
    )
    outcome = run["coordinator"].run()
    assert outcome.completed_rounds == 2
    rows = run["store"].rounds()
    assert rows[1]["active_clients"] == 2
    state = run["store"].load_state()
    if rejoin:
        assert rows[2]["active_clients"] == 3 and outcome.excluded == {}
        assert [e["client"] for e in run["store"].events() if e["event"] == "client_rejoined"] == ["client-3"]
        assert state.active == CLIENTS and state.dropped == []
    else:
        assert rows[2]["active_clients"] == 2 and "crashed" in outcome.excluded["client-3"]
        assert state.dropped == ["client-3"]


def test_an_exclusion_mid_round_is_saved_before_the_round_ends(tmp_path: Path) -> None:
    run = job(tmp_path, client_3=lambda kind, r, attempt: "refuse" if (kind, r) == ("evaluate.request", 2) else None)
    saved: list = []
    store = run["store"]
    original = store.save_state

    def spy(state) -> None:
        saved.append(state)
        original(state)

    store.save_state = spy  # type: ignore[method-assign]
    run["coordinator"].run()
    # Saved when client-3 was excluded in round 2 (completed_round still 1), then at the round's end.
    assert any(s.completed_round == 1 and "client-3" in s.excluded for s in saved)
    assert saved[-1].completed_round == 2 and "client-3" in saved[-1].excluded


@pytest.mark.parametrize(("min_clients", "quorum"), [(1, 2), (2, 2), (3, 3)])
def test_the_server_announces_the_configs_decryption_quorum(tmp_path: Path, min_clients: int, quorum: int) -> None:
    run = job(tmp_path, min_clients=min_clients)
    assert run["coordinator"].run().completed_rounds == 2
    announced = [q for site in run["sites"].values() for q in site.quorums]
    assert announced and set(announced) == {quorum}


def test_no_reveal_is_asked_of_fewer_clients_than_the_quorum(tmp_path: Path) -> None:
    # run.min_clients 1 lets a round run with one client, but one client's scores are no aggregate.
    def decline(kind: str, r: int, attempt: int) -> str | None:
        return "decline" if (kind, r) == ("train.request", 1) else None

    run = job(tmp_path, min_clients=1, rejoin=False, client_2=decline, client_3=decline)
    outcome = run["coordinator"].run()
    assert outcome.completed_rounds == 2 and set(outcome.excluded) == {"client-2", "client-3"}
    reveals = [parts for kind, _, _, parts in run["sites"]["client-1"].seen if kind == "reveal.request"]
    assert reveals == []
    skipped = [e for e in run["store"].events() if e["event"] == "aggregation_skipped"]
    assert [e["round"] for e in skipped] == [1, 2]
    assert skipped[0]["reason"] == "1 participant(s), fewer than the decryption quorum of 2"
