"""CKKS through the real protocol: a client deals keys, the server relays wraps it cannot open,
clients protect scores, the server combines blind, and a verifying client reveals only the mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslm_secure.aggregation.ckks import CKKSAggregator
from crosslm_secure.aggregation.schemes import CKKSFeedback, FeedbackKeys
from crosslm_secure.client.node import SLM, ClientNode
from crosslm_secure.client.plain_trainer import PlainTrainer
from crosslm_secure.client.scoring import score_samples
from crosslm_secure.config import SLMConfig
from crosslm_secure.crypto.ceremony import accept_public_context
from crosslm_secure.crypto.ckks import decrypt_aggregate
from crosslm_secure.crypto.verify import SignedContribution
from crosslm_secure.data.records import ClientData, SyntheticSample
from crosslm_secure.errors import CryptoError
from crosslm_secure.models.slm import load_slm
from crosslm_secure.protocol.envelope import parse
from crosslm_secure.protocol.messages import (
    KeysDealRequest,
    KeysInstallRequest,
    RevealRequest,
    ScoreRequest,
    WireSample,
)
from crosslm_secure.protocol.party import in_memory_identities, party_of
from tests.tiny_models import separable_examples, tiny_bert_dir

CLIENTS = ["client-1", "client-2", "client-3"]
SAMPLES = [
    SyntheticSample(f"s{i}", text, i % 3)
    for i, text in enumerate(
        ["awful pain", "okay mild", "good great relief", "bad nausea", "fine normal", "love it helped"]
    )
]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ckks_network(tmp_path_factory: pytest.TempPathFactory) -> dict:
    settings = SLMConfig(model=str(tiny_bert_dir(tmp_path_factory.mktemp("slm"))), max_length=16)
    keys, registry = in_memory_identities("server", CLIENTS)
    nodes = {}
    for number, name in enumerate(CLIENTS):
        tokenizer, model = load_slm(settings, 3, CPU, seed=number)
        nodes[name] = ClientNode(
            party_of(keys[name], "run-c", registry),
            ClientData(name, separable_examples(2), []),
            SLM(tokenizer, model),
            PlainTrainer(settings, CPU, seed=0, progress=False),
            CKKSFeedback(),
            FeedbackKeys(keys[name], registry, quorum=2, noise_sigma=0.0),
            settings,
            3,
            CPU,
        )
    server = party_of(keys["server"], "run-c", registry)

    def ask(name, body, round_index=0, blobs=()):
        raw = nodes[name].handle(server.seal(name, round_index, body, blobs))
        return (*server.open(raw), raw)

    dealt, reply, _ = ask("client-1", KeysDealRequest(preset="n4096"))
    announcement, public_context, *wraps = dealt.blobs
    context = accept_public_context(registry, announcement=announcement, public_context=public_context, run_id="run-c")
    for name, wrap in zip(reply.recipients, wraps, strict=True):
        envelope, installed, _ = ask(name, KeysInstallRequest(), 0, [announcement, wrap])
        assert envelope.type == "keys.installed" and installed.fingerprint == context.fingerprint
    server_side = CKKSAggregator.for_server(context, registry, run_id="run-c", quorum=2)
    return {"nodes": nodes, "ask": ask, "server_side": server_side, "context": context, "settings": settings}


def test_server_holds_only_a_public_context(ckks_network: dict) -> None:
    context = ckks_network["context"]
    assert context.is_public and not context.has_secret_key and not context.has_galois_keys
    with pytest.raises(CryptoError):
        ckks_network["server_side"].reveal(b"", [], count=1)


def test_revealed_mean_matches_the_plaintext_mean(ckks_network: dict) -> None:
    ask, nodes = ckks_network["ask"], ckks_network["nodes"]
    request = ScoreRequest(participants=CLIENTS, samples=[WireSample.of(s) for s in SAMPLES])
    signed = [ask(name, request, 1)[2] for name in CLIENTS]
    aggregate = ckks_network["server_side"].combine([parse(m)[0].blobs[0] for m in signed])
    reveal = RevealRequest(participants=CLIENTS, count=len(SAMPLES), quorum=2)
    envelope, body, _ = ask("client-2", reveal, 1, [aggregate, *signed])
    assert envelope.type == "reveal.reply", body
    means = np.frombuffer(envelope.blobs[0], dtype="<f8")
    plain = np.mean(
        [
            score_samples(
                n.slm.tokenizer, n.slm.model, SAMPLES, max_length=16, batch_size=8, device=CPU, calibrate=True
            )
            for n in nodes.values()
        ],
        axis=0,
    )
    np.testing.assert_allclose(means, plain, atol=1e-6)


def test_a_single_contribution_decrypts_to_noise(ckks_network: dict) -> None:
    """What the decryptor could read from one client's ciphertext is masked far from its scores."""
    ask, nodes = ckks_network["ask"], ckks_network["nodes"]
    request = ScoreRequest(participants=CLIENTS, samples=[WireSample.of(s) for s in SAMPLES])
    signed = ask("client-1", request, 2)[2]
    secret_side = nodes["client-3"].aggregator
    contribution = SignedContribution.from_bytes(parse(signed)[0].blobs[0])
    single = decrypt_aggregate(secret_side.context, contribution.ciphertext, count=len(SAMPLES))
    own = score_samples(
        nodes["client-1"].slm.tokenizer, nodes["client-1"].slm.model, SAMPLES, max_length=16, batch_size=8, device=CPU
    )
    assert np.median(np.abs(single - own)) > 10


def test_an_aggregate_missing_a_contribution_is_refused(ckks_network: dict) -> None:
    ask = ckks_network["ask"]
    request = ScoreRequest(participants=CLIENTS, samples=[WireSample.of(s) for s in SAMPLES])
    signed = [ask(name, request, 3)[2] for name in CLIENTS]
    partial = ckks_network["server_side"].combine([parse(m)[0].blobs[0] for m in signed[:2]])
    reveal = RevealRequest(participants=CLIENTS, count=len(SAMPLES), quorum=2)
    envelope, body, _ = ask("client-1", reveal, 3, [partial, *signed[:2]])
    assert envelope.type == "error" and "missing" in body.reason
