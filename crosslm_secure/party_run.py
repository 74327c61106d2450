"""A job whose parties are folders: each party opens only its own (``crosslm run --sites DIR``).

The coordinator reads ``DIR/server/`` (its keys, the registry it enrolled, its evaluator set);
each site reads ``DIR/<site>/`` (its keys, the registry it was given, its records) and keeps
its state there (``state/<run-id>/``: its authoritative ledger, SLM checkpoints, synthetic
store). The coordinator keeps a copy of each site's ledger from the entries the site sends.
In one process the parties are kept apart by :mod:`crosslm_secure.isolation`; deployed on
Flower (``crosslm deploy local --sites``), each party is its own process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from crosslm_secure.client.node import ClientNode
from crosslm_secure.config import Config
from crosslm_secure.crypto.keys import ParticipantKeys, Registry, load_participant_keys
from crosslm_secure.data.records import ClientData, Example
from crosslm_secure.data.site import load_evaluator_set, load_site_data
from crosslm_secure.isolation import acting_as, walls
from crosslm_secure.parties import SERVER, PartyError, PartyFolder, Sites
from crosslm_secure.runstore import PARTIES_SITES, RunState, RunStore
from crosslm_secure.transport.inprocess import InProcessTransport

if TYPE_CHECKING:
    from crosslm_secure.runner import RunResult


@dataclass
class CoordinatorSide:
    """What the coordinator reads from its own folder."""

    keys: ParticipantKeys
    registry: Registry
    llm_test: list[Example]


def open_coordinator(folder: PartyFolder, config: Config) -> CoordinatorSide:
    """The coordinator's keys, registry and evaluator set, each checked.

    Raises:
        CrossLMError: keys missing or of another party, a client of the job not enrolled,
            or an evaluator set that does not match the job's columns and labels.
    """
    keys = _own_keys(folder, "server")
    registry = _registry(folder)
    missing = [name for name in [SERVER, *config.client_ids()] if name not in registry]
    if missing:
        raise PartyError(
            f"sites: {folder.registry} does not enrol {', '.join(missing)}; enrol each with "
            f"`crosslm keys enroll <its identity.json> --registry {folder.registry} --expect <fingerprint>`"
        )
    _matches_registry(keys, registry, folder)
    if not folder.eval_set.is_file():
        raise PartyError(
            f"sites: {folder.eval_set} not found; the coordinator evaluates the LLM on its own labelled set, "
            f"with the job's columns ({config.data.text_column!r}, {config.data.label_column!r})"
        )
    return CoordinatorSide(keys, registry, load_evaluator_set(folder.eval_set, config.data, config.task))


@dataclass
class Site:
    """What a site reads from its own folder."""

    folder: PartyFolder
    keys: ParticipantKeys
    registry: Registry
    data: ClientData


def open_site(folder: PartyFolder, config: Config, passphrase: str | None = None) -> Site:
    """A site's keys, the registry it trusts and its records, each checked against the job.

    Raises:
        CrossLMError: not a client of the job, keys missing or of another site, a registry
            that does not hold this site's key, or records whose columns or labels do not match.
    """
    if folder.name not in config.client_ids():
        raise PartyError(
            f"sites: {folder.root} is {folder.name!r}, not one of the job's clients {config.client_ids()}; "
            "name the folder after its site or change partition.clients"
        )
    keys = _own_keys(folder, "client", passphrase)
    registry = _registry(folder)
    _matches_registry(keys, registry, folder)
    data = load_site_data(folder.data(), config.data, config.task, seed=config.run.seed, client_id=folder.name)
    return Site(folder, keys, registry, data)


def site_node(site: Site, config: Config, run_id: str, device: torch.device, *, resumed: bool) -> ClientNode:
    """The site's protocol node, keeping its state under ``DIR/<site>/state/<run-id>/``."""
    from crosslm_secure.runner import build_client_node

    return build_client_node(
        config,
        site.folder.state_root(run_id),
        run_id,
        site.data,
        site.keys,
        site.registry,
        device,
        resumed=resumed,
    )


def check_sites(config: Config, root: Path) -> None:
    """Before a run folder is made: every party's folder is there with its keys (records are read later).

    Raises:
        CrossLMError: a party's folder or keys are missing.
    """
    sites = Sites(Path(root))
    if not sites.root.is_dir():
        raise PartyError(f"sites: {root} is not a folder; make one with `crosslm sites split CONFIG --out {root}`")
    for name in [SERVER, *config.client_ids()]:
        folder = sites.party(name)
        folder.require_keys()
        if name != SERVER:
            folder.data()


def run_sites(config: Config, root: Path, *, log: Callable[[str], None] = print) -> RunResult:
    """Run a fresh job with party folders (``crosslm run CONFIG --sites DIR``); see the module docstring.

    Raises:
        CrossLMError: a party's folder, keys, registry or records are missing or do not fit the job;
            a start that fails before round 0 leaves no run folder.
    """
    from crosslm_secure.runner import run_in_new_folder

    check_sites(config, root)
    return run_in_new_folder(config, lambda store: execute_sites(config, store, root, start_round=0, log=log), log)


def resume_sites(run_dir: Path, root: Path, *, log: Callable[[str], None] = print) -> RunResult:
    """Continue a run with party folders from its last completed round (``crosslm run --resume RUN --sites DIR``).

    Raises:
        RunError: the folder is not a run, has nothing to resume from, or was not run with party folders.
    """
    from crosslm_secure.runner import resume_point

    store, config, state, start = resume_point(run_dir, PARTIES_SITES)
    log(f"resuming {store.root} at round {start}")
    store.event("resumed", round=start)
    return execute_sites(config, store, root, start_round=start, log=log, state=state)


def execute_sites(
    config: Config,
    store: RunStore,
    root: Path,
    *,
    start_round: int,
    log: Callable[[str], None],
    state: RunState | None = None,
) -> RunResult:
    """Run (or resume) the job with every party in its own folder, behind walls; see the module docstring."""
    from crosslm_secure.runner import drive_server, start_job

    sites = Sites(Path(root).resolve())
    names = config.client_ids()
    folders = {SERVER: sites.server, **sites.clients(names)}
    store.record_parties(PARTIES_SITES)
    device = start_job(config)
    with walls({name: folder.root for name, folder in folders.items()}):
        with acting_as(SERVER):
            coordinator = open_coordinator(folders[SERVER], config)
            store.sign_with(coordinator.keys)  # the coordinator seals its run folder with its own key
        opened: dict[str, Site] = {}
        nodes: dict[str, ClientNode] = {}
        for name in names:
            with acting_as(name):
                opened[name] = open_site(folders[name], config)
                nodes[name] = site_node(opened[name], config, store.run_id, device, resumed=state is not None)
                log(f"{name}: {len(opened[name].data.train)} train / {len(opened[name].data.test)} test records")

        def handler(name: str) -> Callable[[bytes], bytes]:
            def handle(message: bytes) -> bytes:
                with acting_as(name):
                    return nodes[name].handle(message)

            return handle

        def restart(name: str) -> Callable[[bytes], bytes]:
            with acting_as(name):
                nodes[name] = site_node(opened[name], config, store.run_id, device, resumed=True)
            return handler(name)

        with acting_as(SERVER):
            store.record_identities([identity.to_dict() for identity in coordinator.registry], first_round=start_round)
            store.event("data", llm_test=len(coordinator.llm_test), parties=PARTIES_SITES)
            transport = InProcessTransport({name: handler(name) for name in names}, restart=restart)
            return drive_server(
                config,
                store,
                device,
                coordinator.llm_test,
                coordinator.keys,
                coordinator.registry,
                lambda llm: transport,
                start_round=start_round,
                log=log,
                state=state,
                ledger_copies=True,
            )


def _own_keys(folder: PartyFolder, role: str, passphrase: str | None = None) -> ParticipantKeys:
    keys = load_participant_keys(folder.require_keys(), passphrase)
    make = f"`crosslm keys init --site {folder.name}{' --role server' if role == 'server' else ''} --out {folder.keys}`"
    if keys.site != folder.name:
        raise PartyError(
            f"sites: {folder.keys} holds the keys of {keys.site}, not of {folder.name}; "
            f"put {folder.name}'s own keys there ({make})"
        )
    if keys.role != role:
        raise PartyError(
            f"sites: {folder.keys} holds {keys.role} keys, but {folder.name} is a {role}; make them with {make}"
        )
    return keys


def _registry(folder: PartyFolder) -> Registry:
    if not folder.registry.is_file():
        raise PartyError(
            f"sites: {folder.registry} not found; {folder.name} needs the registry of enrolled public keys "
            "(the coordinator's registry.json, fingerprints compared out of band)"
        )
    return Registry.load(folder.registry)


def _matches_registry(keys: ParticipantKeys, registry: Registry, folder: PartyFolder) -> None:
    if keys.site not in registry or registry.get(keys.site) != keys.public():
        raise PartyError(
            f"sites: {folder.registry} does not hold {keys.site}'s keys from {folder.keys}; enrol them again "
            "(fingerprint compared out of band) and hand every party the new registry"
        )
