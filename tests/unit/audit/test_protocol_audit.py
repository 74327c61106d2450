"""The protocol audit passes an honest CKKS run and catches what a leaky server would hold."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crosslm_secure.audit.protocol_audit import run_protocol_audit
from crosslm_secure.crypto.ckks import ScoreContext
from crosslm_secure.crypto.storage import seal
from tests.unit.audit.golden import assert_matches_golden


def test_an_honest_ckks_run_passes_every_subcheck(crosslm_run: Path) -> None:
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "pass", result.findings
    assert result.numbers["poly_modulus_degree"] == 4096 and result.numbers["coeff_modulus_bits"] == 109
    assert result.numbers["messages_in_accepted"] > 0
    assert result.numbers["messages_in_accepted"] + result.numbers["messages_in_refused"] == (
        result.numbers["messages_total"] - result.numbers["messages_out"]
    )
    subchecks = result.tables[0].rows
    assert len(subchecks) == 7 and all(row[1] == "pass" for row in subchecks)
    scanned = {row[0] for row in result.tables[1].rows}
    assert "server/ckks_public_context.bin" in scanned and not any(p.startswith("clients/") for p in scanned)
    assert_matches_golden(crosslm_run, "protocol", "protocol_crosslm_run")


def test_a_planted_secret_context_is_caught_framed_bare_or_base64(crosslm_run: Path) -> None:
    secret = ScoreContext.create("n4096")
    (crosslm_run / "server" / "backup.bin").write_bytes(secret.to_bytes())
    (crosslm_run / "llm" / "ctx.raw").write_bytes(secret.tenseal.serialize(save_secret_key=True))
    (crosslm_run / "server" / "notes.json").write_text(
        json.dumps({"blob": base64.b64encode(secret.to_bytes()).decode()})
    )
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    joined = "\n".join(result.findings)
    assert "server/backup.bin: contains a crosslm CKKS context flagged SECRET" in joined
    assert "llm/ctx.raw: is a bare TenSEAL context holding a SECRET key" in joined
    assert "server/notes.json: contains a crosslm CKKS context flagged SECRET" in joined and "base64" in joined


def test_a_secret_key_swapped_into_the_public_context_file_fails_the_context_check(crosslm_run: Path) -> None:
    (crosslm_run / "server" / "ckks_public_context.bin").write_bytes(ScoreContext.create("n4096").to_bytes())
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert any("ckks_public_context.bin: holds a CKKS SECRET key" in f for f in result.findings)
    assert any("announces context" in f for f in result.findings)  # and it is not the announced context


def test_a_key_ceremony_whose_context_was_not_kept_fails_the_context_check(crosslm_run: Path) -> None:
    kept = sorted((crosslm_run / "server" / "ckks_contexts").glob("*.bin"))
    assert len(kept) == 1 and kept[0].stem == ScoreContext.from_bytes(kept[0].read_bytes()).fingerprint
    assert run_protocol_audit(crosslm_run, progress=False).verdict == "pass"
    ceremony = {"event": "key_ceremony", "dealer": "client-1", "fingerprint": "ab" * 32, "clients": ["client-1"]}
    with (crosslm_run / "events.jsonl").open("a") as events:
        events.write(json.dumps(ceremony) + "\n")
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    joined = "\n".join(result.findings)
    assert "key_ceremony dealt abababababababab..., kept neither" in joined
    assert "the last key_ceremony dealt abababababababab..." in joined


def test_planted_private_keys_are_caught(crosslm_run: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    (crosslm_run / "events.jsonl").open("a").write(json.dumps({"event": "debug", "key": pem.decode()}) + "\n")
    (crosslm_run / "server" / "key.der").write_bytes(der)
    (crosslm_run / "server" / "seed").write_bytes(raw)
    (crosslm_run / "server" / "context.sealed").write_bytes(
        seal(b"secret context bytes", "a long passphrase", log2_n=10)
    )
    (crosslm_run / "plots" / "signing.pem").write_text("not really a key")
    (crosslm_run / "server" / "keys.json").write_text(json.dumps({"site": "server", "signing_key": raw.hex()}))
    result = run_protocol_audit(crosslm_run, progress=False)
    joined = "\n".join(result.findings)
    assert result.verdict == "fail"
    assert "events.jsonl: contains a PEM PRIVATE KEY" in joined
    assert "server/key.der: contains a PKCS#8 DER Ed25519 private key" in joined
    assert "server/seed: is a bare 32-byte file" in joined
    assert "server/context.sealed: is a passphrase-sealed secret file" in joined
    assert "plots/signing.pem: is named like a participant's private key file" in joined
    assert "server/keys.json: has a JSON field 'signing_key' holding 64 characters" in joined


def test_a_planted_per_client_score_vector_is_caught(crosslm_run: Path) -> None:
    rows = (crosslm_run / "transcript.jsonl").read_text().splitlines()
    leaked = dict(json.loads(rows[-1]), scores=[0.91, 0.12, 0.55])
    (crosslm_run / "transcript.jsonl").write_text("\n".join([*rows, json.dumps(leaked)]) + "\n")
    with (crosslm_run / "events.jsonl").open("a") as handle:
        handle.write(json.dumps({"event": "scored", "client": "client-1", "values": [0.2, 0.8, 0.4]}) + "\n")
    metrics = (crosslm_run / "metrics.jsonl").read_text().splitlines()
    metrics[-1] = json.dumps({**json.loads(metrics[-1]), "score/client-2/sample-7": 0.83})
    (crosslm_run / "metrics.jsonl").write_text("\n".join(metrics) + "\n")
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert any(
        f"metrics.jsonl line {len(metrics)}: 'score/client-2/sample-7' is a per-client score field" in f
        for f in result.findings
    )
    line = len(rows) + 1
    assert any(f.startswith(f"transcript.jsonl line {line}: has field 'scores'") for f in result.findings)
    assert any(f.startswith("events.jsonl line") and "'values' is a list of 3 numbers" in f for f in result.findings)


def test_a_replayed_message_in_the_transcript_is_caught(crosslm_run: Path) -> None:
    rows = (crosslm_run / "transcript.jsonl").read_text().splitlines()
    accepted = next(r for r in rows if json.loads(r)["status"] == "accepted")
    (crosslm_run / "transcript.jsonl").write_text("\n".join([*rows, accepted]) + "\n")
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert any("accepted twice: a replay" in f for f in result.findings)
    assert any("was already logged at line" in f for f in result.findings)


def test_a_legacy_transcript_is_read_but_cannot_show_signing(crosslm_run: Path, reseal: Callable) -> None:
    rows = [json.loads(r) for r in (crosslm_run / "transcript.jsonl").read_text().splitlines()]
    legacy = [{k: v for k, v in r.items() if k not in ("status", "sender", "recipient", "seq", "claim")} for r in rows]
    (crosslm_run / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in legacy))
    reseal(crosslm_run)  # only the transcript's form is under test, not its hash
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert [f for f in result.findings if "cannot be shown" in f] == [result.findings[0]]
    assert len(result.findings) == 1


def test_a_run_with_the_plaintext_aggregator_fails_as_unprotected(crosslm_run: Path) -> None:
    config = yaml.safe_load((crosslm_run / "config.yaml").read_text())
    config["feedback"]["aggregator"] = "plaintext"
    (crosslm_run / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert result.findings[0].startswith("config.yaml: feedback.aggregator is 'plaintext'; the server saw every")
