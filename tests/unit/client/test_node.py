"""A client node answers only verified server requests, and its decryptor verifies before it reveals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslm_secure.aggregation.plaintext import PlaintextAggregator
from crosslm_secure.aggregation.schemes import FeedbackKeys, PlaintextFeedback
from crosslm_secure.client.node import SLM, ClientNode
from crosslm_secure.client.plain_trainer import PlainTrainer
from crosslm_secure.config import SLMConfig
from crosslm_secure.data.records import ClientData, SyntheticSample
from crosslm_secure.models.slm import load_slm
from crosslm_secure.protocol.envelope import parse
from crosslm_secure.protocol.messages import (
    EvaluateRequest,
    RevealRequest,
    ScoreRequest,
    TrainRequest,
    WireSample,
)
from crosslm_secure.protocol.party import in_memory_identities, party_of
from tests.tiny_models import separable_examples, tiny_bert_dir

CLIENTS = ["client-1", "client-2", "client-3"]
SAMPLES = [
    SyntheticSample(f"s{i}", text, label)
    for i, (text, label) in enumerate([("good great relief", 2), ("awful pain", 0), ("okay mild", 1)])
]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tiny_bert_dir(tmp_path_factory.mktemp("slm"))
    settings = SLMConfig(model=str(folder), max_length=16, batch_size=8, private_epochs=1, synthetic_epochs=1)
    keys, registry = in_memory_identities("server", CLIENTS)
    nodes = {}
    for name in CLIENTS:
        tokenizer, model = load_slm(settings, 3, torch.device("cpu"), seed=1)
        data = ClientData(name, separable_examples(4, seed=hash(name) % 100), separable_examples(2, seed=7))
        nodes[name] = ClientNode(
            party_of(keys[name], "run-t", registry),
            data,
            SLM(tokenizer, model),
            PlainTrainer(settings, torch.device("cpu"), seed=0, progress=False),
            PlaintextFeedback(),
            FeedbackKeys(keys[name], registry, quorum=2, noise_sigma=0.0),
            settings,
            3,
            torch.device("cpu"),
        )
    server = party_of(keys["server"], "run-t", registry)
    return {"nodes": nodes, "server": server, "keys": keys, "registry": registry}


def ask(net: dict, name: str, body, round_index: int, blobs=()):
    raw = net["nodes"][name].handle(net["server"].seal(name, round_index, body, blobs))
    envelope, reply = net["server"].open(raw)
    return envelope, reply, raw


def scored_round(net: dict, round_index: int) -> tuple[list[bytes], bytes]:
    request = ScoreRequest(participants=CLIENTS, samples=[WireSample.of(s) for s in SAMPLES])
    signed = [ask(net, name, request, round_index)[2] for name in CLIENTS]
    aggregate = PlaintextAggregator().combine([parse(m)[0].blobs[0] for m in signed])
    return signed, aggregate


def test_train_score_evaluate(network: dict) -> None:
    envelope, reply, _ = ask(network, "client-1", TrainRequest(), 1)
    assert (envelope.type, reply.status, reply.private, reply.epsilon) == ("train.reply", "ok", False, None)
    assert reply.stats.steps > 0
    envelope, reply, _ = ask(network, "client-1", EvaluateRequest(), 1)
    assert envelope.type == "evaluate.reply" and reply.n == 6 and 0 <= reply.accuracy <= 1


def test_decryptor_reveals_the_mean_of_all_announced_contributions(network: dict) -> None:
    signed, aggregate = scored_round(network, 2)
    request = RevealRequest(participants=CLIENTS, count=len(SAMPLES), quorum=2)
    envelope, reply, _ = ask(network, "client-2", request, 2, [aggregate, *signed])
    assert envelope.type == "reveal.reply" and reply.contributors == 3
    means = np.frombuffer(envelope.blobs[0], dtype="<f8")
    expected = np.mean([np.frombuffer(parse(m)[0].blobs[0], dtype="<f8") for m in signed], axis=0)
    np.testing.assert_allclose(means, expected)
    assert np.all((means >= 0) & (means <= 1))


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda signed, agg: (signed[:2], agg), "missing from the aggregate"),
        (lambda signed, agg: ([signed[0], signed[0], signed[1], signed[2]], agg), "contributed twice"),
        (lambda signed, agg: (signed, agg[:-8] + np.float64(9.0).tobytes()), "not the sum"),
        (lambda signed, agg: ([signed[0][:-1] + bytes([signed[0][-1] ^ 1]), *signed[1:]], agg), "does not verify"),
    ],
)
def test_decryptor_refuses_a_wrong_aggregate(network: dict, mutate, needle: str) -> None:
    signed, aggregate = scored_round(network, 3)
    signed, aggregate = mutate(signed, aggregate)
    request = RevealRequest(participants=CLIENTS, count=len(SAMPLES), quorum=2)
    envelope, reply, _ = ask(network, "client-3", request, 3, [aggregate, *signed])
    assert envelope.type == "error"
    assert needle in reply.reason


def test_decryptor_refuses_below_quorum_and_contributions_of_another_round(network: dict) -> None:
    signed, aggregate = scored_round(network, 4)
    alone = RevealRequest(participants=["client-1"], count=len(SAMPLES), quorum=2)
    refused = ask(network, "client-1", alone, 4, [aggregate, signed[0]])[1]
    assert "1 participants is below the quorum of 2" in refused.reason
    later = RevealRequest(participants=CLIENTS, count=len(SAMPLES), quorum=2)
    assert "another run or round" in ask(network, "client-1", later, 5, [aggregate, *signed])[1].reason


def test_requests_not_from_the_server_or_for_an_old_round_are_refused(network: dict) -> None:
    peer = party_of(network["keys"]["client-2"], "run-t", network["registry"])
    raw = network["nodes"]["client-1"].handle(peer.seal("client-1", 9, EvaluateRequest()))
    envelope, reply = network["server"].open(raw)
    assert envelope.type == "error" and "must come from the server" in reply.reason
    ask(network, "client-1", EvaluateRequest(), 9)
    envelope, reply, _ = ask(network, "client-1", EvaluateRequest(), 8)
    assert envelope.type == "error" and "round 9 has started" in reply.reason


def test_scoring_refuses_when_not_announced_or_label_out_of_range(network: dict) -> None:
    request = ScoreRequest(participants=["client-2"], samples=[WireSample.of(SAMPLES[0])])
    assert "not in the announced participant set" in ask(network, "client-3", request, 10)[1].reason
    bad = ScoreRequest(participants=CLIENTS, samples=[WireSample(id="x", text="good", label=5)])
    assert "has label 5" in ask(network, "client-3", bad, 10)[1].reason


@pytest.mark.parametrize("announced", [1, 3])
def test_decryptor_checks_the_announced_quorum_against_its_own(network: dict, announced: int) -> None:
    # A server announcing quorum 1 must not talk a site configured for 2 into decrypting one
    # client's scores; any other number means the two configs differ.
    round_index = 10 + announced  # after every round the module's other tests used
    signed, aggregate = scored_round(network, round_index)
    request = RevealRequest(participants=CLIENTS, count=len(SAMPLES), quorum=announced)
    envelope, reply, _ = ask(network, "client-2", request, round_index, [aggregate, *signed])
    assert envelope.type == "error"
    assert f"the server announced a quorum of {announced}, but this site's config gives 2" in reply.reason


def test_training_on_synthetic_samples_of_a_later_round_is_refused(network: dict) -> None:
    envelope, reply, _ = ask(network, "client-3", TrainRequest(synthetic_through=41), 40)
    assert envelope.type == "error" and "synthetic samples of round 41, a later one" in reply.reason
