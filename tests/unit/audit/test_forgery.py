"""Issue #13: a run forged by its operator must fail the audit, each attack naming its problem.

Every attack here passed the audit before signed ledgers, the manifest allowlist and the
cross-checks. Each is planted into a private copy of the finished tiny CKKS run (conftest.py).
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import shutil
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crosslm_secure.audit.ledger_audit import run_ledger_audit
from crosslm_secure.audit.protocol_audit import run_protocol_audit
from crosslm_secure.crypto.ckks import ScoreContext
from crosslm_secure.errors import CrossLMError
from crosslm_secure.privacy.accounting import MechanismBlock, accountant_for
from crosslm_secure.report.budgets import run_budgets
from crosslm_secure.runstore import RunStore
from tests.unit.audit.test_ledger_audit import _rehash

LEDGER = "clients/client-1/ledger.jsonl"


def _entries(run: Path, path: str = LEDGER) -> list[dict]:
    return [json.loads(line) for line in (run / path).read_text().splitlines()]


def _noise_times_six(entry: dict) -> None:
    """The issue's forgery: six times the noise, epsilon recomputed so the accountant agrees."""
    if entry["mechanism"] != "dp-sgd":
        return
    entry["noise_multiplier"] *= 6
    entry["noise_std"] *= 6
    block = MechanismBlock(entry["noise_multiplier"], entry["sample_rate"], entry["steps"])
    entry["epsilon"] = {name: accountant_for(name).epsilon([block], entry["delta"]) for name in ("prv", "rdp")}


def _secret_context() -> bytes:
    return ScoreContext.create("n4096").to_bytes()


def test_an_honest_run_and_a_renamed_copy_pass_ledger_and_protocol_audits(crosslm_run: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "someone-elses-name"
    shutil.copytree(crosslm_run, renamed)
    for run in (crosslm_run, renamed):
        assert RunStore(run).run_id == crosslm_run.name
        protocol = run_protocol_audit(run, progress=False)
        ledger = run_ledger_audit(run, progress=False)
        assert protocol.verdict == "pass", protocol.findings
        assert ledger.verdict == "pass", ledger.findings
    claims = [json.loads(line) for line in (crosslm_run / "transcript.jsonl").read_text().splitlines()]
    assert sum("claim" in row for row in claims) == 2  # one signed epsilon claim per client and round


def test_the_three_part_forgery_fails_and_names_each_problem(crosslm_run: Path) -> None:
    _rehash(crosslm_run / LEDGER, _noise_times_six)
    (crosslm_run / "server" / "ckks_backup.txt").write_bytes(base64.encodebytes(_secret_context()))
    scores = {f"sample-{i}": 0.5 + i / 1000 for i in range(60)}
    with (crosslm_run / "events.jsonl").open("a") as events:
        events.write(json.dumps({"event": "note", "client": "client-1", "per_sample": scores}) + "\n")

    ledger = run_ledger_audit(crosslm_run, progress=False)
    protocol = run_protocol_audit(crosslm_run, progress=False)
    assert ledger.verdict == "fail" and protocol.verdict == "fail"
    lf, pf = "\n".join(ledger.findings), "\n".join(protocol.findings)
    assert f"{LEDGER} line 1 has a signature that does not verify" in lf
    assert "noise_multiplier" in lf and "but the config gives" in lf
    assert "lacks the signed entry 0 the client reported" in lf
    assert "server/ckks_backup.txt: not in manifest.json" in pf
    assert "server/ckks_backup.txt: contains a crosslm CKKS context flagged SECRET" in pf and "base64" in pf
    assert "events.jsonl: its sha256 differs from manifest.json" in pf
    assert "'per_sample' is a mapping of 60 entries" in pf


# -- ledger forgeries: each fails the ledger audit, and `crosslm budget show` refuses it -------


def _empty_headless(run: Path) -> None:
    (run / LEDGER).write_text("")
    (run / f"{LEDGER}.head").unlink()


def _first_line_headless(run: Path) -> None:
    lines = (run / LEDGER).read_text().splitlines(keepends=True)
    (run / LEDGER).write_text(lines[0])
    (run / f"{LEDGER}.head").unlink()


def _last_round_dropped(run: Path) -> None:
    """Drop the last entries and rewrite the head to match: chain and signatures stay valid."""
    entries = _entries(run)
    kept = [e for e in entries if e["round"] < max(e["round"] for e in entries)] or entries[:0]
    kept = kept or entries[:1]
    (run / LEDGER).write_text("".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in kept))
    (run / f"{LEDGER}.head").write_text(json.dumps({"entries": len(kept), "hash": kept[-1]["hash"]}) + "\n")


def _first_entry_only(run: Path) -> None:
    entries = _entries(run)[:1]
    (run / LEDGER).write_text(json.dumps(entries[0], sort_keys=True, separators=(",", ":")) + "\n")
    (run / f"{LEDGER}.head").write_text(json.dumps({"entries": 1, "hash": entries[0]["hash"]}) + "\n")


def _wrong_type(run: Path) -> None:
    lines = (run / LEDGER).read_text().splitlines()
    entry = json.loads(lines[0])
    entry["steps"] = str(entry["steps"])
    lines[0] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    (run / LEDGER).write_text("\n".join(lines) + "\n")


# name -> (forgery, phrase of the audit finding, phrase of `budget show`'s refusal if it differs)
LEDGER_FORGERIES: dict[str, tuple[Callable[[Path], None], str] | tuple[Callable[[Path], None], str, str]] = {
    "empty, head deleted": (_empty_headless, "is empty"),
    "first line kept, head deleted": (_first_line_headless, "has no head file"),
    "deleted": (lambda run: [p.unlink() for p in (run / "clients" / "client-1").glob("ledger.jsonl*")], "is missing"),
    "foreign run id": (lambda run: _rehash(run / LEDGER, lambda e: e.update(run_id="another-run")), "another-run"),
    "delta raised to 1e-3": (
        lambda run: _rehash(run / LEDGER, lambda e: e.update(delta=1e-3)),
        "delta 0.001 but the config gives",
        "does not verify",  # budget show checks signatures, not the config
    ),
    "noise x6": (lambda run: _rehash(run / LEDGER, _noise_times_six), "does not verify"),
    "negative epsilon": (
        lambda run: _rehash(run / LEDGER, lambda e: e.update(epsilon={k: -1.0 for k in e["epsilon"]})),
        "is negative",
    ),
    "a field of the wrong type": (_wrong_type, "field 'steps' is '"),
}


@pytest.mark.parametrize("name", sorted(LEDGER_FORGERIES))
def test_a_forged_ledger_fails_the_audit_and_budget_show_refuses_it(crosslm_run: Path, name: str) -> None:
    forge, expected, *refusal = LEDGER_FORGERIES[name]
    forge(crosslm_run)
    result = run_ledger_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert any(expected in f and "client-1" in f for f in result.findings), result.findings
    with pytest.raises(CrossLMError, match="client-1") as refused:
        run_budgets(crosslm_run)
    assert (refusal or [expected])[0] in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("drop", [_last_round_dropped, _first_entry_only])
def test_a_ledger_cut_short_with_a_consistent_head_fails_the_cross_checks(crosslm_run: Path, drop: Callable) -> None:
    drop(crosslm_run)
    result = run_ledger_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    joined = "\n".join(result.findings)
    assert "lacks the signed entry" in joined or "score-release entries for round 1" in joined, joined


# -- artefact evasions: each fails the protocol audit (allowlist, blacklist or both) ------------


def _png_with_tail(run: Path) -> None:
    png = run / "plots" / "metrics.png"
    png.write_bytes(png.read_bytes() + _secret_context())


def _zip(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner.bin", data)
    return out.getvalue()


def _encrypted_zip(data: bytes) -> bytes:
    """A zip whose member is flagged encrypted (general-purpose bit 0), as a password-protected one is."""
    raw = bytearray(_zip(data))
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        raw[at + flags_at] |= 0x01
    return bytes(raw)


def _seal_secret_key() -> bytes:
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20, 40])
    folder = Path(__import__("tempfile").mkdtemp())
    context.secret_key().data.save(str(folder / "sk"))
    return (folder / "sk").read_bytes()


def _pem_renamed() -> bytes:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.replace(b"PRIVATE KEY", b"PUBLIC NOTES")


def _event(run: Path, **fields: object) -> None:
    with (run / "events.jsonl").open("a") as events:
        events.write(json.dumps({"event": "note", "time": 1.0, **fields}) + "\n")


def _json_edit(path: Path, edit: Callable[[dict], None]) -> None:
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


SCORES = [0.25 + i / 997 for i in range(40)]
Plant = Callable[[Path], None]
# The protocol audit's layers against a planted artefact, by the sub-check name its JSON
# records. The seal and HE-parameter sub-checks are left out: the seal fails for any edit of a
# sealed file and the HE check follows the context, so neither says which defence worked.
ALLOWLIST = "every server artefact is in the manifest and valid as its kind"
SECRETS = "no secret key in any server artefact"
SCORES_SCAN = "no plaintext per-client score vector"
CONTEXT = "server holds only a public CKKS context"
LAYERS = (ALLOWLIST, SECRETS, SCORES_SCAN, CONTEXT)
# name -> (plant, a phrase the first layer's finding must hold, exactly the layers that catch it)
EVASIONS: dict[str, tuple[Plant, str, tuple[str, ...]]] = {
    "secret context gzip-compressed": (
        lambda r: (r / "server" / "ctx.gz").write_bytes(gzip.compress(_secret_context())),
        "inside gzip data",
        (SECRETS, ALLOWLIST),
    ),
    "secret context bz2-compressed": (
        lambda r: (r / "server" / "ctx.bz2").write_bytes(bz2.compress(_secret_context())),
        "inside bz2 data",
        (SECRETS, ALLOWLIST),
    ),
    "secret context split across two files": (
        lambda r: [
            (r / "server" / f"part{i}").write_bytes(_secret_context()[i * 9000 : (i + 1) * 9000]) for i in (0, 1)
        ],
        "server/part1: not in manifest.json",
        (ALLOWLIST, SECRETS),  # the scan still sees the header in part0, never part1
    ),
    "secret context behind a 1-byte prefix": (
        lambda r: (r / "server" / "ctx.raw").write_bytes(
            b"\x00" + ScoreContext.create("n4096").tenseal.serialize(save_secret_key=True)
        ),
        "behind a 1-byte prefix",
        (SECRETS, ALLOWLIST),
    ),
    "secret context appended to a PNG": (_png_with_tail, "plots/metrics.png: has", (ALLOWLIST, SECRETS)),
    "secret context in a zip": (
        lambda r: (r / "server" / "ctx.zip").write_bytes(_zip(_secret_context())),
        "inside zip member 'inner.bin'",
        (SECRETS, ALLOWLIST),
    ),
    "secret context in an encrypted zip": (
        lambda r: (r / "server" / "ctx.zip").write_bytes(_encrypted_zip(_secret_context())),
        "holds zip member 'inner.bin' that cannot be opened (corrupt or encrypted)",
        (SECRETS, ALLOWLIST),
    ),
    "secret context in a truncated gzip": (
        lambda r: (r / "server" / "ctx.gz").write_bytes(gzip.compress(_secret_context())[:-64]),
        "holds gzip data that cannot be opened (corrupt or encrypted)",
        (SECRETS, ALLOWLIST),
    ),
    "secret context XORed": (
        lambda r: (r / "server" / "ctx.xor").write_bytes(bytes(b ^ 0x5A for b in _secret_context())),
        "server/ctx.xor: not in manifest.json",
        (ALLOWLIST,),
    ),
    "secret context in URL-safe base64 in an event": (
        lambda r: _event(r, note=base64.urlsafe_b64encode(_secret_context()).decode()),
        "flagged SECRET",
        (SECRETS, ALLOWLIST),
    ),
    "secret context in wrapped base64 in an event": (
        lambda r: _event(r, note=base64.encodebytes(_secret_context()).decode()),
        "flagged SECRET",
        (SECRETS, ALLOWLIST),
    ),
    "secret context as spaced hex": (
        lambda r: (r / "server" / "ctx.hex").write_text(_secret_context().hex(" ")),
        "inside a hex string",
        (SECRETS, ALLOWLIST),
    ),
    "a bare SEAL SecretKey": (
        lambda r: (r / "server" / "sk.seal").write_bytes(_seal_secret_key()),
        "server/sk.seal: not in manifest.json",
        (ALLOWLIST,),
    ),
    "a private key under a renamed PEM header": (
        lambda r: (r / "server" / "notes.txt").write_bytes(_pem_renamed()),
        "PKCS#8 DER Ed25519 private key",
        (SECRETS, ALLOWLIST),
    ),
    "a private key as 32 raw bytes": (
        lambda r: (r / "server" / "k").write_bytes(bytes(range(32))),
        "bare 32-byte file",
        (SECRETS, ALLOWLIST),
    ),
    "a private key as 32 raw bytes inside a public context file": (
        lambda r: (r / "server" / "ckks_public_context.bin").write_bytes(
            (r / "server" / "ckks_public_context.bin").read_bytes() + bytes(range(32))
        ),
        "ckks_public_context.bin: does not load",
        (ALLOWLIST, CONTEXT),
    ),
    "scores as numeric strings": (
        lambda r: _event(r, scores=[f"{s:.4f}" for s in SCORES]),
        "list of 40 numeric strings",
        (ALLOWLIST,),
    ),
    "scores as CSV text": (
        lambda r: _event(r, scores=",".join(f"{s:.4f}" for s in SCORES)),
        "40 numbers",
        (ALLOWLIST,),
    ),
    "scores as a dict keyed by sample id": (
        lambda r: _event(r, scores={f"s{i}": s for i, s in enumerate(SCORES)}),
        "mapping of 40 entries",
        (ALLOWLIST,),
    ),
    "scores as base64": (
        lambda r: _event(r, scores=base64.b64encode(struct.pack("<40d", *SCORES)).decode()),
        "encoded blob",
        (ALLOWLIST,),
    ),
    "scores as a list of lists": (
        lambda r: _event(r, scores=[[s] for s in SCORES]),
        "list of 40 lists or mappings",
        (ALLOWLIST,),
    ),
    "scores in summary.md": (
        lambda r: (r / "summary.md").write_text(
            (r / "summary.md").read_text() + "\n" + "\n".join(f"- s{i}: {s:.4f}" for i, s in enumerate(SCORES))
        ),
        "hold a column of numbers",
        (ALLOWLIST,),
    ),
    "scores in one line of summary.md": (
        lambda r: (r / "summary.md").write_text(
            (r / "summary.md").read_text() + "\n" + " ".join(f"{s:.4f}" for s in SCORES)
        ),
        "holds 40 numbers",
        (ALLOWLIST,),
    ),
    "scores in state.json": (
        lambda r: _json_edit(r / "state.json", lambda s: s.update(client_1={str(i): v for i, v in enumerate(SCORES)})),
        "has field 'client_1', which its kind does not allow",
        (ALLOWLIST,),
    ),
    "scores in a transcript field": (
        lambda r: (r / "transcript.jsonl").write_text(
            (r / "transcript.jsonl")
            .read_text()
            .replace('"type": "score.reply"', '"notes": "x", "type": "score.reply"', 1)
        ),
        "has field 'notes', outside the documented transcript fields",
        (ALLOWLIST, SCORES_SCAN),
    ),
    "scores in a new file": (
        lambda r: (r / "plots" / "scores.json").write_text(json.dumps(SCORES)),
        "plots/scores.json: not in manifest.json (matches no allowed kind)",
        (ALLOWLIST,),
    ),
    "scores as a tensor in the LLM adapter": (
        lambda r: _add_tensor(next((r / "llm").glob("round-*/adapter_model.safetensors"))),
        "which is not a LoRA adapter weight",
        (ALLOWLIST,),
    ),
}


def _add_tensor(path: Path) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    tensors["client_1.scores"] = np.asarray(SCORES, dtype=np.float32).reshape(1, -1)
    save_file(tensors, str(path))


@pytest.mark.parametrize("name", sorted(EVASIONS))
def test_an_artefact_evasion_is_caught_by_the_layers_it_names(crosslm_run: Path, name: str) -> None:
    plant, expected, layers = EVASIONS[name]
    plant(crosslm_run)
    assert run_protocol_audit(crosslm_run, progress=False).verdict == "fail"
    written = json.loads((crosslm_run / "audit" / "protocol.json").read_text())  # what a reviewer reads
    by_layer = written["details"]["findings_by_subcheck"]
    assert set(LAYERS) <= set(by_layer), sorted(by_layer)
    caught = tuple(layer for layer in LAYERS if by_layer[layer])
    assert sorted(caught) == sorted(layers), by_layer
    assert any(expected in finding for finding in by_layer[layers[0]]), by_layer[layers[0]]
    verdicts = {row[0]: row[1] for row in written["tables"][0]["rows"]}
    assert all(verdicts[layer] == "fail" for layer in layers), verdicts


def test_a_run_from_before_the_manifest_fails_with_a_sentence_saying_so(crosslm_run: Path) -> None:
    (crosslm_run / "manifest.json").unlink()
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert any("predates the manifest" in f and "re-run it" in f for f in result.findings)


def test_the_synthetic_release_kind_is_allowed_with_its_schema(crosslm_run: Path, reseal: Callable) -> None:
    """server/synthetic/round-<N>.jsonl passes when well-formed (sealed by the coordinator, as a run writes it)."""
    folder = crosslm_run / "server" / "synthetic"
    folder.mkdir(exist_ok=True)  # the run keeps its own batches there too
    row = {"index": 0, "text": "a fine film", "label": "positive", "score": 0.71, "accepted": True}
    (folder / "round-1.jsonl").write_text(json.dumps(row) + "\n")
    reseal(crosslm_run)
    assert run_protocol_audit(crosslm_run, progress=False).verdict == "pass"
    (folder / "round-1.jsonl").write_text(json.dumps({**row, "scores": SCORES}) + "\n")
    reseal(crosslm_run)
    result = run_protocol_audit(crosslm_run, progress=False)
    assert any("round-1.jsonl: line 1 has field 'scores'" in f for f in result.findings), result.findings


def test_the_dp_and_mia_audits_retrain_with_the_configs_noise_not_the_forged_ledgers(crosslm_run: Path) -> None:
    from crosslm_secure.audit.population import client_mechanism, open_run

    honest = _entries(crosslm_run)[0]["noise_multiplier"]
    before = client_mechanism(open_run(crosslm_run, None), "client-1")
    assert before.noise_multiplier == pytest.approx(honest, rel=1e-9) and before.disagreements == ()
    _rehash(crosslm_run / LEDGER, _noise_times_six)
    after = client_mechanism(open_run(crosslm_run, None), "client-1")
    assert after.noise_multiplier == pytest.approx(honest, rel=1e-9)  # the config's, not the ledger's 6x
    assert len(after.disagreements) == 1 and "noise_multiplier" in after.disagreements[0]


@pytest.mark.parametrize("layout", ["column", "row"])
def test_a_score_vector_hidden_in_the_run_report_is_found(crosslm_run: Path, layout: str) -> None:
    """The run page writes whole tables on one source line; the audit reads it row by row."""
    page = crosslm_run / "report.html"
    assert page.is_file(), "the run writes its report page"
    values = [f"{v:.4f}" for v in SCORES]
    if layout == "column":
        hidden = "<table>" + "".join(f"<tr><td>{v}</td></tr>" for v in values) + "</table>"
    else:
        hidden = "<table><tr>" + "".join(f"<td>{v}</td>" for v in values) + "</tr></table>"
    page.write_text(page.read_text().replace("</body>", hidden + "</body>"))
    RunStore(crosslm_run).seal_manifest()
    result = run_protocol_audit(crosslm_run, progress=False)
    assert result.verdict == "fail"
    assert any(f.startswith("report.html") and "number" in f for f in result.findings), result.findings
