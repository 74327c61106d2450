"""A pilot as docs/pilot.md runs it, on real Flower processes (TLS, SuperNode authentication).

The folders are made the guide's way, by each party's own commands: every site runs
``crosslm keys init`` in its folder and holds its own CSV (three different files); the
coordinator runs ``keys init``, ``pki coordinator`` and ``keys enroll --expect`` with the
fingerprints the sites "read out", writes its own evaluator set, and hands each site the
registry and ``ca.pem``; the reviewer keeps its copy of the registry. Then ``deploy`` starts
each party as its own process. Every process the deployment starts loads
``open_watch/sitecustomize.py``, a Python audit hook that records each ``open`` under the sites
folder: the ServerApp and SuperLink may never open a site's file, and a site never another
party's.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.config import Config
from crosslm_secure.deploy.local import deploy_local
from crosslm_secure.parties import SERVER, PartyFolder
from crosslm_secure.privacy.ledger_format import load_entries
from crosslm_secure.runstore import PARTIES_SITES, RunStore
from tests.unit.parties.pilot_job import tiny_job

WATCH = Path(__file__).parent / "open_watch"


def _cli(*args: str) -> str:
    done = CliRunner().invoke(app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


def _fingerprint(output: str) -> str:
    return next(line.split()[1] for line in output.splitlines() if line.startswith("fingerprint:"))


def make_pilot_folders(root: Path, config: Config) -> Path:
    """Each party's folder, made by that party's own commands (docs/pilot.md, steps 1-4)."""
    sites = root / "sites"
    rows = (root / "notes.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    read_out = {}
    for index, name in enumerate(config.client_ids()):  # step 1, at each site
        read_out[name] = _fingerprint(_cli("keys", "init", "--site", name, "--out", str(sites / name / "keys")))
        mine = body[:840][index::3][: 200 + 20 * index]  # three different files of different sizes
        (sites / name / "data.csv").write_text("\n".join([header, *mine]) + "\n")
    server = sites / SERVER  # step 2, at the coordinator
    _cli("keys", "init", "--site", SERVER, "--role", "server", "--out", str(server / "keys"))
    _cli("pki", "coordinator", "--out", str(server), "--host", "127.0.0.1")
    _cli("keys", "enroll", str(server / "keys"), "--registry", str(server / "registry.json"))
    for name, fingerprint in read_out.items():
        identity = sites / name / "keys" / "identity.json"
        _cli("keys", "enroll", str(identity), "--registry", str(server / "registry.json"), "--expect", fingerprint)
    (server / "eval.csv").write_text("\n".join([header, *body[840:]]) + "\n")  # its own rows, none of a site's
    for name in config.client_ids():
        shutil.copyfile(server / "registry.json", sites / name / "registry.json")
        shutil.copyfile(server / "tls" / "ca.pem", sites / name / "ca.pem")
    (root / "reviewer").mkdir()  # step 3: the reviewer pins its copy
    shutil.copyfile(server / "registry.json", root / "reviewer" / "registry.json")
    job = root / "flower-pilot.yaml"
    for party in [SERVER, *config.client_ids()]:  # step 4, each party on its own folder
        _cli("sites", "check", str(job), str(sites / party))
    return sites


@pytest.fixture(scope="module")
def pilot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Config, Path, Path, list[dict]]]:
    root = tmp_path_factory.mktemp("flower-pilot")
    config = tiny_job(root, "flower-pilot", rounds=1, rows=900, auditable=True)
    sites = make_pilot_folders(root, config)
    log = root / "opens.jsonl"
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "CROSSLM_WATCH_SITES", "CROSSLM_WATCH_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(WATCH), saved["PYTHONPATH"]) if p)
    os.environ["CROSSLM_WATCH_SITES"] = str(sites.resolve())
    os.environ["CROSSLM_WATCH_LOG"] = str(log)
    try:  # step 5: deploy local starts the SuperLink, registers, starts each site, submits
        run_dir = deploy_local(config, 3, root / "deploy", sites=sites, log=lambda _: None, timeout=600)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    records = [json.loads(line) for line in log.read_text().splitlines()]
    yield config, sites.resolve(), run_dir, records


def test_the_job_ran_with_the_parties_own_folders(pilot: tuple) -> None:
    _, _, run_dir, _ = pilot
    store = RunStore(run_dir)
    assert [row["round"] for row in store.rounds()] == [0, 1]
    assert store.parties() == PARTIES_SITES


def test_the_server_process_was_watched_and_read_only_the_coordinator_s_folder(pilot: tuple) -> None:
    _, sites, _, records = pilot
    server = [r for r in records if r["process"] == "flwr-serverapp"]
    assert any(r.get("armed") for r in server), "the audit hook never ran in the ServerApp process"
    opened = {r["path"] for r in server if "path" in r}
    assert str(sites / SERVER / "eval.csv") in opened  # not vacuous: it read its own evaluator set there
    assert all(Path(p).relative_to(sites).parts[0] == SERVER for p in opened)


def test_no_process_opened_a_folder_of_a_party_it_does_not_act_for(pilot: tuple) -> None:
    config, sites, _, records = pilot
    breaches = []
    for record in records:
        if "path" not in record:
            continue
        owner = Path(record["path"]).relative_to(sites).parts[0]
        acts_for = record["names"] or [SERVER]  # a process that names no party folder is the coordinator's
        if len(acts_for) > 1 or owner not in acts_for:
            breaches.append(record)
    assert breaches == []
    for name in config.client_ids():  # each site read its own records, in its own process
        assert any(r.get("path") == str(sites / name / "data.csv") and r["names"] == [name] for r in records)


def test_the_server_s_ledger_copies_equal_the_sites_own(pilot: tuple) -> None:
    config, sites, run_dir, _ = pilot
    run_id = RunStore(run_dir).run_id
    for name in config.client_ids():
        own = RunStore(PartyFolder(sites / name).state_root(run_id)).ledger_path(name)
        mine = [e.hash for e in load_entries(own, client_id=name, finished=True)]
        assert mine and [e.hash for e in load_entries(RunStore(run_dir).ledger_path(name), finished=True)] == mine


# -- steps 6 and 7: each site audits its own model; the reviewer audits against its registry ---------------


@pytest.fixture(scope="module")
def reviewed(pilot: tuple) -> tuple[Path, Path, Path]:
    config, sites, run_dir, _ = pilot
    reviewer = sites.parent / "reviewer"
    received = reviewer / "received"
    received.mkdir()
    for name in config.client_ids():  # step 6, at each site: only the signed file leaves it
        _cli("audit", "site", "--site", str(sites / name), "--run", str(run_dir), "--no-progress")
        audit = PartyFolder(sites / name).audit_file(RunStore(run_dir).run_id)
        shutil.copyfile(audit, received / f"{name}.json")
    return run_dir, reviewer / "registry.json", received


def _audit_all(run_dir: Path, registry: Path, received: Path) -> tuple[int, str]:
    args = ["audit", "all", "--run", str(run_dir), "--registry", str(registry), "--site-audits", str(received)]
    done = CliRunner().invoke(app, [*args, "--no-progress"])
    return done.exit_code, " ".join(done.output.split())


def test_the_reviewer_s_audit_passes_against_the_pinned_registry(reviewed: tuple[Path, Path, Path]) -> None:
    code, output = _audit_all(*reviewed)
    assert code == 0, output
    assert "overall: PASS" in output
    assert "3 of 3 clients handed a site audit of this run" in output


def test_a_forged_copy_of_the_run_fails_the_reviewer_s_audit(reviewed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run_dir, registry, received = reviewed
    forged = tmp_path / run_dir.name
    shutil.copytree(run_dir, forged, ignore=shutil.ignore_patterns("audit"))
    state = json.loads((forged / "state.json").read_text())
    state["completed_round"] = 0  # the coordinator's state rewritten without its key
    (forged / "state.json").write_text(json.dumps(state))
    code, output = _audit_all(forged, registry, received)
    assert code == 1, output
    assert "overall: FAIL" in output and "state.json" in output
