"""The server side of a deployment, run inside the ServerApp process on the server machine."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crosslm_secure.config import config_from_dict, config_to_dict
from crosslm_secure.crypto.keys import Registry, load_participant_keys
from crosslm_secure.deploy import DeployError
from crosslm_secure.runner import RunResult, drive_server, prepare_job, resume_point
from crosslm_secure.runstore import RunStore
from crosslm_secure.storage import atomic_write_json
from crosslm_secure.transport.flower import FlowerTransport, discover_sites


def serve(grid, run_config: dict[str, Any], log: Callable[[str], None] = print) -> RunResult:
    """Run (or resume) one job over the grid.

    ``run_config`` (Flower run config: the app pyproject's defaults, overridden by ``flwr run
    --run-config``): ``job`` the job config as JSON, ``resume`` a run folder to continue (or ""),
    ``server_dir`` the server's PKI folder (keys/ and registry.json), ``timeout`` seconds per
    request, ``join_wait`` seconds to wait for SuperNodes, ``announce`` a file to write the run
    folder path and this process's id into (or "").
    """
    server_dir = Path(str(run_config["server_dir"]))
    keys = load_participant_keys(server_dir / "keys")
    registry = Registry.load(server_dir / "registry.json")
    resume = str(run_config["resume"])
    if resume:
        store, config, state, start = resume_point(Path(resume))
        store.event("resumed", round=start, transport="flower")
    else:
        config = config_from_dict(json.loads(str(run_config["job"])))
        store = RunStore.create(config.run.output_dir, config.run.name, config.run.seed, config_to_dict(config))
        state, start = None, 0
    announce = str(run_config["announce"])
    if announce:
        atomic_write_json(Path(announce), {"run_dir": str(store.root), "start_round": start, "pid": os.getpid()})
    log(f"run folder: {store.root}")
    store.sign_with(keys)
    store.record_identities([identity.to_dict() for identity in registry], first_round=start)
    job = prepare_job(config, store)
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

    return drive_server(config, store, job, keys, registry, transport_for, start_round=start, log=log, state=state)
