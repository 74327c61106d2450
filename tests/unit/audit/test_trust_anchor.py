"""The reviewer pins the trust anchor: forgeries of a run folder fail against a pinned registry.

Each forgery is planted into a private copy of the finished tiny CKKS run (conftest.py), with
the manifest rehashed as a forger who can write the folder would; the registry is the run's
parties' public keys, kept outside the folder. Site audits are real signed documents made with
the parties' real keys (site_audit_docs.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crosslm_secure.audit.ledger_audit import run_ledger_audit
from crosslm_secure.audit.protocol_audit import run_protocol_audit
from crosslm_secure.audit.trust import TrustAnchor, is_self_attested
from crosslm_secure.cli import app
from crosslm_secure.config import config_from_dict
from crosslm_secure.crypto.keys import ParticipantKeys, PublicIdentity, Registry
from crosslm_secure.privacy.accounting import MechanismBlock, accountant_for
from crosslm_secure.privacy.ledger import signed_message
from crosslm_secure.runner import run_job
from crosslm_secure.runstore import RunStore
from crosslm_secure.seal import write_seal
from tests.unit.audit.site_audit_docs import hand_in, site_audit
from tests.unit.audit.test_audit_report import stand_ins  # noqa: F401 - the mia/dp stand-in checks
from tests.unit.audit.test_ledger_audit import _rehash

CLIENTS = ("client-1", "client-2")


def _audit(*args: str):
    return CliRunner().invoke(app, ["audit", *args, "--no-progress"])


def _audits(run: Path, registry: Path | None) -> tuple[list[str], list[str]]:
    anchor = TrustAnchor.load(registry)
    protocol = run_protocol_audit(run, progress=False, anchor=anchor)
    ledger = run_ledger_audit(run, progress=False, anchor=anchor)
    return protocol.findings, ledger.findings


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "transcript.jsonl").read_text().splitlines()]


def _write_rows(run: Path, rows: list[dict]) -> None:
    (run / "transcript.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw, indent=2))


def _rekey(run: Path) -> dict[str, ParticipantKeys]:
    """Fresh keys for every party, written into run.json in place of the ones the run used."""
    keys = {"server": ParticipantKeys.generate("server", "server")}
    keys.update({name: ParticipantKeys.generate(name, "client") for name in CLIENTS})
    batch = {"first_round": 0, "participants": [k.public().to_dict() for k in keys.values()]}
    _edit_json(run / "run.json", lambda meta: meta.update(identities=[batch]))
    return keys


def _half_the_steps(entry: dict) -> None:
    if entry["mechanism"] != "dp-sgd":
        return
    entry["steps"] //= 2
    block = MechanismBlock(entry["noise_multiplier"], entry["sample_rate"], entry["steps"])
    entry["epsilon"] = {name: accountant_for(name).epsilon([block], entry["delta"]) for name in ("prv", "rdp")}


def _resign(path: Path, keys: ParticipantKeys) -> None:
    """Sign every entry of a (rehashed) ledger with ``keys``, as a re-keyed site would."""
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    for entry in entries:
        entry["signature"] = keys.sign(signed_message(keys.site, entry["hash"])).hex()
    path.write_text("".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in entries))


def _rekeyed_and_resigned(run: Path) -> None:
    """New keys in run.json, ledgers re-recorded with half the steps and re-signed, the folder re-sealed."""
    keys = _rekey(run)
    for client in CLIENTS:
        ledger = run / "clients" / client / "ledger.jsonl"
        _rehash(ledger, _half_the_steps)
        _resign(ledger, keys[client])
    write_seal(run, RunStore(run).run_id, keys["server"])


def _rekeyed_only(run: Path) -> None:
    _rekey(run)


def _score_round_removed(run: Path) -> None:
    """client-2's score.reply marked refused and its score-release entry cut (a consistent head kept)."""
    rows = _rows(run)
    for row in rows:
        if row["type"] == "score.reply" and row["sender"] == "client-2":
            row["status"] = "refused"
    _write_rows(run, rows)
    ledger = run / "clients" / "client-2" / "ledger.jsonl"
    kept = [line for line in ledger.read_text().splitlines() if "gaussian-score-release" not in line]
    ledger.write_text("\n".join(kept) + "\n")
    last = json.loads(kept[-1])["hash"]
    ledger.with_name("ledger.jsonl.head").write_text(json.dumps({"entries": len(kept), "hash": last}) + "\n")


def _state_edited(run: Path) -> None:
    _edit_json(
        run / "state.json",
        lambda s: s.update(completed_round=0, active=["client-1"], dropped=["client-2"], excluded={"client-2": "gone"}),
    )


def _transcript_rows_edited(run: Path) -> None:
    rows = _rows(run)
    for row in rows:
        if row["type"] == "train.reply":
            row.update(bytes=row["bytes"] // 2, sha256="ab" * 32, status="refused")
            row.pop("claim", None)
    _write_rows(run, rows)


def _noise_sigma_raised(run: Path) -> None:
    config = run / "config.yaml"
    text = config.read_text()
    assert "noise_sigma: 0.05" in text
    config.write_text(text.replace("noise_sigma: 0.05", "noise_sigma: 0.5"))


# name -> (forgery, a phrase of a protocol finding, a phrase of a ledger finding), with the registry
FORGERIES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "run.json re-keyed, ledgers re-recorded with half the steps and re-signed, folder re-sealed": (
        _rekeyed_and_resigned,
        "seal.json: the signature does not verify as server's registered key",
        "clients/client-1/ledger.jsonl line 1 has a signature that does not verify as client-1's enrolled key",
    ),
    "run.json re-keyed, ledgers left as they were": (
        _rekeyed_only,
        "run.json: records a key for client-1",
        "run.json: records a key for client-1",
    ),
    "a round's score replies marked refused, the ledger cut to match": (
        _score_round_removed,
        "clients/client-2/ledger.jsonl: changed after the coordinator sealed the run",
        "",
    ),
    "state.json: round lowered, client-2 dropped and excluded": (
        _state_edited,
        "state.json: changed after the coordinator sealed the run",
        "",
    ),
    "transcript rows: sizes, hashes and statuses edited": (
        _transcript_rows_edited,
        "transcript.jsonl: changed after the coordinator sealed the run",
        "",
    ),
    "feedback.noise_sigma raised tenfold in config.yaml": (
        _noise_sigma_raised,
        "config.yaml: changed after the coordinator sealed the run",
        "noise sigma 0.05 but the config's feedback.noise_sigma is 0.5",
    ),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_forged_run_fails_against_the_pinned_registry_naming_the_forgery(
    crosslm_run: Path, registry_file: Path, name: str
) -> None:
    forge, protocol_phrase, ledger_phrase = FORGERIES[name]
    forge(crosslm_run)
    RunStore(crosslm_run).seal_manifest()  # the forger rehashes the manifest
    protocol, ledger = _audits(crosslm_run, registry_file)
    assert any(protocol_phrase in f for f in protocol), protocol
    assert not ledger_phrase or any(ledger_phrase in f for f in ledger), ledger


def test_without_a_registry_a_re_keyed_re_sealed_run_is_at_best_self_attested(crosslm_run: Path, stand_ins) -> None:  # noqa: F811
    _rekeyed_and_resigned(crosslm_run)
    RunStore(crosslm_run).seal_manifest()
    result = _audit("all", "--run", str(crosslm_run))
    assert result.exit_code in (1, 3), result.output  # the halved steps may disagree with the config
    report = (crosslm_run / "audit" / "report.md").read_text()
    assert "**Overall verdict: PASS**" not in report


@pytest.mark.parametrize("name", [n for n in FORGERIES if FORGERIES[n][0] is not _rekeyed_and_resigned])
def test_a_forgery_that_cannot_re_sign_fails_even_without_a_registry(crosslm_run: Path, name: str) -> None:
    FORGERIES[name][0](crosslm_run)
    RunStore(crosslm_run).seal_manifest()
    protocol, ledger = _audits(crosslm_run, None)
    assert protocol or ledger


def test_an_honest_run_passes_with_the_registry_after_its_report_is_rebuilt_and_is_self_attested_without(
    crosslm_run: Path,
    registry_file: Path,
    stand_ins,  # noqa: F811
) -> None:
    rebuilt = CliRunner().invoke(app, ["report", str(crosslm_run)])  # without the coordinator's key
    assert rebuilt.exit_code == 0, rebuilt.output
    pinned = _audit("all", "--run", str(crosslm_run), "--registry", str(registry_file))
    assert pinned.exit_code == 0, pinned.output
    report = (crosslm_run / "audit" / "report.md").read_text()
    assert "**Overall verdict: PASS**" in report and f"registry {registry_file}" in report
    bare = _audit("all", "--run", str(crosslm_run))
    assert bare.exit_code == 3, bare.output
    report = (crosslm_run / "audit" / "report.md").read_text()
    assert "**Overall verdict: SELF-ATTESTED**" in report and "| ledger | SELF-ATTESTED |" in report
    assert "whoever can write the folder can re-key it" in report
    one = _audit("ledger", "--run", str(crosslm_run))
    assert one.exit_code == 3 and one.output.startswith("ledger: SELF-ATTESTED: 2 of 2 ledgers verify")
    assert is_self_attested(run_protocol_audit(crosslm_run, progress=False))


def test_a_registry_that_lacks_a_party_is_refused_in_one_sentence(crosslm_run: Path, registry_file: Path) -> None:
    registry = Registry.load(registry_file)
    partial = registry_file.with_name("partial.json")
    Registry(i for i in registry if i.site != "client-2").save(partial)
    result = _audit("ledger", "--run", str(crosslm_run), "--registry", str(partial))
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.count("\n") == 0 and str(partial) in message and "client-2" in message
    assert "crosslm keys enroll" in message
    unpinned = _audit("all", "--run", str(crosslm_run), "--site-audits", str(registry_file.parent))
    assert unpinned.exit_code == 2 and "--site-audits needs --registry" in unpinned.output


@pytest.fixture(scope="module")
def two_round_run(crosslm_run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CrossLM run's config for two rounds, run once for this module; never modify it, copy it."""
    raw = yaml.safe_load((crosslm_run_template / "config.yaml").read_text())
    raw["run"].update(rounds=2, output_dir=str(tmp_path_factory.mktemp("two-rounds")))
    return run_job(config_from_dict(raw), log=lambda _: None).store.root


def _last_round_refused(run: Path) -> None:
    """client-2's last-round train.reply and score.reply marked refused, its ledger cut to round 1."""
    rows = _rows(run)
    last = max(row["round"] for row in rows)
    for row in rows:
        if row["sender"] == "client-2" and row["round"] == last and row["type"] in ("train.reply", "score.reply"):
            row["status"] = "refused"
            row.pop("claim", None)
    _write_rows(run, rows)
    ledger = run / "clients" / "client-2" / "ledger.jsonl"
    kept = [line for line in ledger.read_text().splitlines() if json.loads(line)["round"] < last]
    ledger.write_text("\n".join(kept) + "\n")
    head = {"entries": len(kept), "hash": json.loads(kept[-1])["hash"]}
    ledger.with_name("ledger.jsonl.head").write_text(json.dumps(head) + "\n")


def test_a_round_cut_from_transcript_and_ledger_fails_against_the_seal(two_round_run: Path, tmp_path: Path) -> None:
    run = tmp_path / two_round_run.name
    shutil.copytree(two_round_run, run)
    registry = tmp_path / "two-rounds-registry.json"
    enrolled = RunStore(run).enrolled_keys()
    Registry(PublicIdentity.from_dict(raws[-1]) for raws in enrolled.values()).save(registry)
    assert not any(_audits(run, registry))  # the honest two-round run passes
    _last_round_refused(run)
    RunStore(run).seal_manifest()
    for anchor in (registry, None):
        protocol, _ = _audits(run, anchor)
        assert any("transcript.jsonl: changed after the coordinator sealed the run" in f for f in protocol), protocol
        assert any("clients/client-2/ledger.jsonl: changed after the coordinator sealed" in f for f in protocol)


def _site_audits(run: Path, keys: dict[str, ParticipantKeys], folder: Path, **overrides: dict) -> Path:
    documents = {c: site_audit(keys[c], run, **overrides.get(c, {})) for c in CLIENTS}
    return hand_in(folder, documents)


def test_site_audits_from_every_client_pass_and_bind_the_servers_ledger_copies(
    crosslm_run: Path,
    registry_file: Path,
    crosslm_run_keys: dict[str, ParticipantKeys],
    tmp_path: Path,
    stand_ins,  # noqa: F811
) -> None:
    folder = _site_audits(crosslm_run, crosslm_run_keys, tmp_path / "parties")
    args = ("all", "--run", str(crosslm_run), "--registry", str(registry_file), "--site-audits", str(folder))
    honest = _audit(*args)
    assert honest.exit_code == 0, honest.output
    assert "| sites | PASS |" in (crosslm_run / "audit" / "report.md").read_text()
    # The coordinator, holding its own key, cuts client-2's round and re-seals: only the site's copy shows it.
    _score_round_removed(crosslm_run)
    write_seal(crosslm_run, RunStore(crosslm_run).run_id, crosslm_run_keys["server"])
    RunStore(crosslm_run).seal_manifest()
    resealed = _audit(*args)
    assert resealed.exit_code == 1, resealed.output
    assert "client-2's own ledger has 2 entries" in resealed.output and "the server's copy" in resealed.output


def test_a_missing_or_other_runs_site_audit_is_incomplete_and_a_failed_one_fails(
    crosslm_run: Path,
    registry_file: Path,
    crosslm_run_keys: dict[str, ParticipantKeys],
    tmp_path: Path,
    stand_ins,  # noqa: F811
) -> None:
    folder = hand_in(tmp_path / "one", {"client-1": site_audit(crosslm_run_keys["client-1"], crosslm_run)})
    hand_in(folder, {"client-2": site_audit(crosslm_run_keys["client-2"], crosslm_run, run_id="another-run")})
    base = ("all", "--run", str(crosslm_run), "--registry", str(registry_file), "--site-audits")
    result = _audit(*base, str(folder))
    assert result.exit_code == 2, result.output
    report = (crosslm_run / "audit" / "report.md").read_text()
    assert "**Overall verdict: INCOMPLETE**" in report and "client-2: no site audit of this run" in report
    assert "refused: of run another-run, not this one" in report
    failed = _site_audits(crosslm_run, crosslm_run_keys, tmp_path / "failed", **{"client-1": {"verdict": "fail"}})
    result = _audit(*base, str(failed))
    assert result.exit_code == 1 and "client-1's own audit failed" in result.output


def test_a_site_audit_signed_by_an_unknown_or_another_key_is_refused(
    crosslm_run: Path,
    registry_file: Path,
    crosslm_run_keys: dict[str, ParticipantKeys],
    tmp_path: Path,
    stand_ins,  # noqa: F811
) -> None:
    stranger = ParticipantKeys.generate("client-9", "client")
    folder = hand_in(tmp_path / "unknown", {"client-9": site_audit(stranger, crosslm_run, site="client-1")})
    base = ("all", "--run", str(crosslm_run), "--registry", str(registry_file), "--site-audits")
    result = _audit(*base, str(folder))
    assert result.exit_code == 1, result.output
    assert "signed by 'client-9', who is not in the registry" in result.output
    impostor = ParticipantKeys.generate("client-1", "client")  # the right name, not the registered key
    forged = hand_in(tmp_path / "impostor", {"client-1": site_audit(impostor, crosslm_run)})
    result = _audit(*base, str(forged))
    assert result.exit_code == 1 and "does not verify as client-1's registered key" in result.output
    other = site_audit(crosslm_run_keys["client-1"], crosslm_run, site="client-2")
    result = _audit(*base, str(hand_in(tmp_path / "other", {"client-2": other})))
    assert result.exit_code == 1 and "signed by client-1 but claims to audit 'client-2'" in result.output
