"""Real Flower processes on loopback with TLS and SuperNode authentication (no mocks).

One module-scoped deployment (SuperLink + three site processes) serves every test here:
refused SuperNodes, a server killed mid-round and resumed (its metrics must equal an
in-process run of the same seed), and in one run a site that stalls past the timeout and then
rejoins, and a site killed mid-round that rejoins once restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.config import Config, load_config
from crosslm_secure.deploy.local import Deployment
from crosslm_secure.deploy.pki import SiteFiles, init_pki
from crosslm_secure.deploy.site import wait_until
from crosslm_secure.runner import run_job
from crosslm_secure.storage import read_jsonl
from tests.tiny_models import tiny_bert_dir, tiny_llm_dir, write_sentiment_csv

SITES = ["client-1", "client-2", "client-3"]


def job_config(root: Path, name: str) -> Config:
    data = root / "notes.csv"
    if not data.exists():
        write_sentiment_csv(data, 72)
        tiny_bert_dir(root)
        tiny_llm_dir(root)
    raw = {
        "run": {"name": name, "rounds": 1, "progress": False, "output_dir": str(root / "runs"), "threads": 1},
        "data": {"source": "csv", "path": str(data), "text_column": "note", "label_column": "outcome"},
        "llm": {"model": str(root / "tiny-llm"), "lora": {"r": 2, "alpha": 4}},
        "slm": {"model": str(root / "tiny-bert"), "max_length": 16, "batch_size": 8, "private_epochs": 1},
        "generation": {"samples_per_label": 2, "max_new_tokens": 12, "min_chars": 2, "batch_size": 6},
        "tuning": {"max_length": 48, "batch_size": 4},
        "privacy": {"dp": False},
        "feedback": {"ckks_preset": "n4096", "threshold": 0.0, "noise_sigma": 0.0},
        "eval": {"llm_examples": 6, "perplexity_chunks": 1, "perplexity_chunk_tokens": 16, "llm_max_length": 64},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("flower")
    config = job_config(root, "flower")
    assert (root / "tiny-llm").is_dir() and (root / "tiny-bert").is_dir()
    with Deployment(root / "deploy", config, log=lambda _: None) as live:
        live.init_pki(SITES)
        live.start_superlink()
        for site in SITES:
            live.register(site)
            live.start_site(site)
        assert wait_until(lambda: live.connected_nodes() == 3, 120, interval=2.0), "sites did not connect"
        yield live


def _site_failure(process: subprocess.Popen, log: Path) -> str:
    process.wait(timeout=120)
    assert process.returncode == 2
    return log.read_text(errors="replace")


def test_wrong_certificate_and_unregistered_key_are_refused(deployment: Deployment, tmp_path: Path) -> None:
    foreign = init_pki(tmp_path / "foreign", ["client-1", "client-2"], ["127.0.0.1"])
    # client-1's real (registered) credentials, but trusting another CA: TLS must fail.
    wrong_ca = tmp_path / "wrong-ca" / "client-1"
    shutil.copytree(deployment.pki.site("client-1").folder, wrong_ca)
    shutil.copy(foreign.ca, wrong_ca / "ca.pem")
    # client-2 with the right CA but an authentication key the SuperLink never registered.
    unregistered = tmp_path / "unregistered" / "client-2"
    shutil.copytree(deployment.pki.site("client-2").folder, unregistered)
    shutil.copy(foreign.site("client-2").auth_key, unregistered / "auth_key")
    before = deployment.connected_nodes()
    bad_cert = deployment.start_site("client-1-wrong-ca", SiteFiles(wrong_ca), max_wait=15)
    bad_key = deployment.start_site("client-2-unregistered", SiteFiles(unregistered), max_wait=15)
    cert_log = _site_failure(bad_cert, deployment.workdir / "logs" / "site-client-1-wrong-ca.log")
    key_log = _site_failure(bad_key, deployment.workdir / "logs" / "site-client-2-unregistered.log")
    assert "does not verify against this site's ca.pem" in " ".join(cert_log.split())
    assert "refused this SuperNode's authentication key" in " ".join(key_log.split())
    assert deployment.connected_nodes() == before == 3
    deployment.sites.pop("client-1-wrong-ca")
    deployment.sites.pop("client-2-unregistered")


def _events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(run_dir / "events.jsonl") if e["event"] == kind]


def _asked(run_dir: Path, client: str, at_least: int) -> bool:
    """Whether the server has sent ``client`` a request of round ``at_least`` or later."""
    rows = read_jsonl(run_dir / "transcript.jsonl")
    return any((e.get("round") or 0) >= at_least and e.get("peer") == client for e in rows)


def _excluded(run_dir: Path, client: str, timeout: float) -> dict:
    """Wait, at most ``timeout`` seconds, for ``client``'s ``client_excluded`` event."""
    found = lambda: [e for e in _events(run_dir, "client_excluded") if e["client"] == client]  # noqa: E731
    assert wait_until(lambda: bool(found()), timeout), f"{client} was never excluded"
    (event,) = found()
    return event


def _rejoined_at(run_dir: Path, client: str, timeout: float) -> int:
    """Wait, at most ``timeout`` seconds, for ``client``'s ``client_rejoined`` event; the round it names."""
    found = lambda: [e for e in _events(run_dir, "client_rejoined") if e["client"] == client]  # noqa: E731
    assert wait_until(lambda: bool(found()), timeout), f"{client} was never taken back"
    (back,) = found()
    return int(back["round"])


def _out_between(run_dir: Path, back: dict[str, int]) -> None:
    """Each client of ``back`` is out from the round it was excluded in (the first round done after
    its ``client_excluded`` event) until ``back[client]``, and in every other round; its
    ``client_rejoined`` event was written as that round started: after round back-1, before round back."""
    kinds = [(e["event"], e.get("round"), e.get("client")) for e in read_jsonl(run_dir / "events.jsonl")]
    outage = {}
    for client, rejoined in back.items():
        excluded = kinds.index(("client_excluded", None, client))
        first = next(r for kind, r, _ in kinds[excluded:] if kind == "round_done")
        done = [k[:2] for k in kinds]
        at = kinds.index(("client_rejoined", rejoined, client))
        assert done.index(("round_done", rejoined - 1)) < at < done.index(("round_done", rejoined)), kinds
        outage[client] = range(first, rejoined)
    for row in read_jsonl(run_dir / "metrics.jsonl")[1:]:
        out = {client for client, rounds in outage.items() if row["round"] in rounds}
        assert row["active_clients"] == 3 - len(out), (row, out)
        for client in outage:
            assert (f"slm_accuracy/{client}" in row) == (client not in out), (client, row)


def _metrics(run_dir: Path) -> list[dict]:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return [{k: v for k, v in r.items() if not k.startswith(("seconds_", "peak_"))} for r in rows]


def test_server_killed_mid_round_resumes_with_the_in_process_metrics(deployment: Deployment) -> None:
    deployment.submit(timeout=120)
    run_dir = deployment.run_dir()
    # Kill the ServerApp (the coordinator's process) once round 1 is under way.
    assert wait_until(lambda: any(e.get("round") == 1 for e in read_jsonl(run_dir / "transcript.jsonl")), 400)
    os.kill(deployment.serverapp_pid(), signal.SIGKILL)
    # Resumed at once: the SuperLink notices the dead ServerApp only after its heartbeats lapse
    # (tens of seconds), and the new Flower run does not wait for that.
    assert json.loads((run_dir / "state.json").read_text())["completed_round"] == 0
    charged = {site: read_jsonl(run_dir / "clients" / site / "ledger.jsonl") for site in SITES}

    # Resume through the server machine's command, as an operator would after the crash.
    assert deployment.pki is not None
    command = ["deploy", "submit", "--resume", str(run_dir), "--pki", str(deployment.pki.root)]
    resumed = CliRunner().invoke(app, command + ["--superlink", deployment.address, "--timeout", "120"])
    assert resumed.exit_code == 0, resumed.output
    shown = " ".join(resumed.output.split())
    assert "round 1 done in" in shown and "3 clients active" in shown
    events = [e["event"] for e in read_jsonl(run_dir / "events.jsonl")]
    assert "resumed" in events and events[-1] == "run_finished"
    assert [r["round"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1]
    for site in SITES:  # nothing charged twice: every ledger key appears once
        entries = read_jsonl(run_dir / "clients" / site / "ledger.jsonl")
        keys = [json.dumps({k: e.get(k) for k in ("run_id", "round", "mechanism", "attempt")}) for e in entries]
        assert len(keys) == len(set(keys)) and len(entries) >= len(charged[site])

    reference = run_job(deployment.config, log=lambda _: None).store.root
    flower, local = _metrics(run_dir), _metrics(reference)
    assert [r.keys() for r in flower] == [r.keys() for r in local]
    for a, b in zip(flower, local, strict=True):
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
            else:
                assert value == b[key], key


def test_a_stalled_site_and_a_killed_site_are_each_excluded_and_rejoin(deployment: Deployment) -> None:
    """client-2 stalls (SIGSTOP) in round 1 and answers again; then client-3 is killed in the round
    client-2 rejoins and is restarted. Each is excluded and taken back at a round that starts after
    it answers again, never mid-round; the round goes on with the others meanwhile."""
    run = deployment.config.run.model_copy(update={"name": "faults", "rounds": 4})
    run_id = deployment.submit(timeout=20, config=deployment.config.model_copy(update={"run": run}))
    run_dir = deployment.run_dir()
    assert wait_until(lambda: _asked(run_dir, "client-2", 1), 400)
    worker = deployment.sites["client-2"].pid  # the site worker; its SuperNode keeps running
    os.kill(worker, signal.SIGSTOP)
    try:
        stalled = _excluded(run_dir, "client-2", 300)
        stalled_in = max(e.get("round") or 0 for e in read_jsonl(run_dir / "transcript.jsonl"))
    finally:
        os.kill(worker, signal.SIGCONT)
    assert "did not answer within 20s" in stalled["reason"]
    back_2 = _rejoined_at(run_dir, "client-2", 400)
    assert back_2 > stalled_in

    assert wait_until(lambda: _asked(run_dir, "client-3", back_2), 400)
    deployment.kill_site("client-3")
    _excluded(run_dir, "client-3", 300)
    # The site comes back: a new worker and SuperNode with the same credentials. The SuperLink lists
    # the killed SuperNode as online for up to 20 s, so the site retries its activation meanwhile.
    killed_in = max(e.get("round") or 0 for e in read_jsonl(run_dir / "transcript.jsonl"))  # client-3 is down
    deployment.start_site("client-3", max_wait=150)
    back_3 = _rejoined_at(run_dir, "client-3", 600)
    assert back_3 > killed_in  # never taken back into a round that had started while it was down
    assert deployment.wait(run_id, 900) == "finished:completed"
    assert [r["round"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1, 2, 3, 4]
    assert [e["client"] for e in _events(run_dir, "client_excluded")] == ["client-2", "client-3"]
    _out_between(run_dir, {"client-2": back_2, "client-3": back_3})
    ledger = read_jsonl(run_dir / "clients" / "client-3" / "ledger.jsonl")
    keys = [json.dumps({k: e.get(k) for k in ("run_id", "round", "mechanism", "attempt")}) for e in ledger]
    assert len(keys) == len(set(keys))  # the restarted site charged nothing twice
