"""The server side of a deployment, run inside the ServerApp process on the server machine."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crosslm_secure.config import Config, config_from_dict, config_to_dict
from crosslm_secure.crypto.keys import Registry, load_participant_keys
from crosslm_secure.data.records import Example
from crosslm_secure.deploy import DeployError, refuse_seeded_noise
from crosslm_secure.parties import PartyFolder
from crosslm_secure.party_run import open_coordinator
from crosslm_secure.runner import RunResult, drive_server, prepare_job, resume_point, start_job
from crosslm_secure.runstore import PARTIES_SIMULATED, PARTIES_SITES, RunStore
from crosslm_secure.storage import atomic_write_json
from crosslm_secure.transport.flower import FlowerTransport, discover_sites

if TYPE_CHECKING:
    import torch


def serve(grid, run_config: dict[str, Any], log: Callable[[str], None] = print) -> RunResult:
    """Run (or resume) one job over the grid.

    ``run_config`` (Flower run config: the app pyproject's defaults, overridden by ``flwr run
    --run-config``): ``job`` the job config as JSON, ``resume`` a run folder to continue (or ""),
    ``server_dir`` the server's folder (keys/ and registry.json; with ``sites`` "true" also its
    evaluator set eval.csv: the coordinator's party folder), ``timeout`` seconds per
    request, ``join_wait`` seconds to wait for SuperNodes, ``announce`` a file to write the run
    folder path and this process's id into (or "").
    """
    server_dir = Path(str(run_config["server_dir"]))
    keys = load_participant_keys(server_dir / "keys")
    registry = Registry.load(server_dir / "registry.json")
    resume = str(run_config["resume"])
    if resume:
        store, config, state, start = resume_point(Path(resume))
        refuse_seeded_noise(config)
        store.event("resumed", round=start, transport="flower")
    else:
        config = config_from_dict(json.loads(str(run_config["job"])))
        refuse_seeded_noise(config)
        store = RunStore.create(config.run.output_dir, config.run.name, config.run.seed, config_to_dict(config))
        state, start = None, 0
    announce = str(run_config["announce"])
    if announce:
        atomic_write_json(Path(announce), {"run_dir": str(store.root), "start_round": start, "pid": os.getpid()})
    log(f"run folder: {store.root}")
    store.sign_with(keys)
    store.record_identities([identity.to_dict() for identity in registry], first_round=start)
    sites = str(run_config.get("sites", "")) == "true"
    device, llm_test = _evaluator_set(config, store, server_dir if sites else None)
    timeout = float(run_config["timeout"])
    expected = config.client_ids()

    def transport_for(llm: object) -> FlowerTransport:
        names = discover_sites(grid, len(expected), float(run_config["join_wait"]), log)
        strangers = sorted(set(names) - set(expected))
        for name in strangers:
            log(f"ignoring SuperNode that claims {name!r}: not a client of this job")
            names.pop(name)
        missing = sorted(set(expected) - set(names))
        if missing:
            store.event("sites_missing", sites=missing)
            log(f"sites not connected: {missing}")
        if not names:
            raise DeployError("no client site joined; start `crosslm deploy site` on each client machine")
        store.event("sites_joined", sites=dict(sorted(names.items())), transport="flower")
        return FlowerTransport(grid, names, timeout)

    return drive_server(
        config,
        store,
        device,
        llm_test,
        keys,
        registry,
        transport_for,
        start_round=start,
        log=log,
        state=state,
        ledger_copies=sites,
    )


def _evaluator_set(config: Config, store: RunStore, party: Path | None) -> tuple[torch.device, list[Example]]:
    """The device and the LLM's evaluator set: the coordinator's own (``party``: its folder), or in a
    simulation its share of the job's one data file, split as every simulated site splits it."""
    if party is None:
        job = prepare_job(config, store)
        store.record_parties(PARTIES_SIMULATED)
        return job.device, job.split.llm_test
    llm_test = open_coordinator(PartyFolder(party), config).llm_test
    store.record_parties(PARTIES_SITES)
    store.event("data", llm_test=len(llm_test), parties=PARTIES_SITES)
    return start_job(config), llm_test
