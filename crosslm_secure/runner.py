"""Build and run a whole CrossLM job on one machine over the in-process transport.

This is what ``crosslm run`` calls. It plays every site: it loads data, splits it into
silos, gives each silo its own SLM, trainer, keys and aggregator side, and hands the
server only what a server may hold. Nothing here crosses a silo boundary except the
protocol bytes the transport carries.
"""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crosslm_secure.aggregation.schemes import FeedbackKeys, scheme_for
from crosslm_secure.cache import default_cache
from crosslm_secure.client.node import SLM, ClientNode
from crosslm_secure.client.synthetic_store import SyntheticStore
from crosslm_secure.client.trainers import slm_trainer
from crosslm_secure.config import Config, config_from_dict, config_to_dict
from crosslm_secure.crypto.keys import ParticipantKeys, Registry
from crosslm_secure.crypto.noise import ScoreRelease
from crosslm_secure.data.loaders import load_labelled_data
from crosslm_secure.data.partition import partition_clients
from crosslm_secure.data.records import ClientData, Example
from crosslm_secure.errors import RunError
from crosslm_secure.eval.predictions import Predictions, write_predictions
from crosslm_secure.methods import method_for
from crosslm_secure.models.device import resolve_device
from crosslm_secure.models.llm import LoadedLLM, load_llm
from crosslm_secure.models.lora import add_lora, load_lora
from crosslm_secure.models.slm import load_slm, quiet_transformers
from crosslm_secure.preflight import check_paths
from crosslm_secure.privacy.ledger import Ledger
from crosslm_secure.privacy.noise_source import NoiseStreams
from crosslm_secure.protocol.party import Party, in_memory_identities, party_of
from crosslm_secure.report.summary import write_report
from crosslm_secure.runstore import PARTIES_SIMULATED, RunState, RunStore
from crosslm_secure.server.coordinator import Coordinator, RoundOutcome
from crosslm_secure.server.llm_side import LocalLLM, read_label_bias
from crosslm_secure.transport.base import Transport
from crosslm_secure.transport.inprocess import InProcessTransport

SERVER = "server"


@dataclass
class RunResult:
    store: RunStore
    outcome: RoundOutcome


def run_job(config: Config, *, log: Callable[[str], None] = print) -> RunResult:
    """Run a fresh job (a simulation: the job's one data file split into silos) and write its
    run folder, summary and plots. For party folders see :func:`crosslm_secure.party_run.run_sites`.

    The config's paths are checked before the folder is made; a job that fails before its
    round 0 is recorded removes the folder again, so failed starts leave no orphan run.
    """
    check_paths(config)
    return run_in_new_folder(config, lambda store: _execute(config, store, start_round=0, log=log), log)


def run_in_new_folder(
    config: Config, execute: Callable[[RunStore], RunResult], log: Callable[[str], None]
) -> RunResult:
    """Make the run folder and ``execute`` the job in it; remove the folder if it fails before round 0."""
    store = RunStore.create(config.run.output_dir, config.run.name, config.run.seed, config_to_dict(config))
    log(f"run folder: {store.root}")
    try:
        return execute(store)
    except BaseException:
        if not store.rounds():
            shutil.rmtree(store.root, ignore_errors=True)
            log(f"removed {store.root}: the run failed before round 0")
        raise


def resume_job(run_dir: Path, *, log: Callable[[str], None] = print) -> RunResult:
    """Continue a run from its last completed round (after a crash or a stop).

    Raises:
        RunError: the folder is not a run, it has nothing to resume from, or it was run with
            party folders (resume it with :func:`crosslm_secure.party_run.resume_sites`).
    """
    store, config, state, start = resume_point(run_dir, PARTIES_SIMULATED)
    log(f"resuming {store.root} at round {start}")
    store.event("resumed", round=start)
    return _execute(config, store, start_round=start, log=log, state=state)


def _execute(
    config: Config,
    store: RunStore,
    *,
    start_round: int,
    log: Callable[[str], None],
    state: RunState | None = None,
) -> RunResult:
    store.record_parties(PARTIES_SIMULATED)
    job = prepare_job(config, store)
    keys, registry = in_memory_identities(SERVER, config.client_ids())
    store.sign_with(keys[SERVER])
    # In-process, this process plays every site: keep the public keys each site signs its ledger
    # with, so the run can be re-verified later (SECURITY.md: who can forge what).
    store.record_identities([identity.to_dict() for identity in registry], first_round=start_round)
    nodes = {}
    for client in job.split.clients:
        nodes[client.client_id] = build_client_node(
            config,
            store.root,
            store.run_id,
            client,
            keys[client.client_id],
            registry,
            job.device,
            resumed=state is not None,
        )

    clients = {client.client_id: client for client in job.split.clients}

    def restart(name: str) -> Callable[[bytes], bytes]:
        """A crashed site started again: its node rebuilt from its last checkpoint and ledger."""
        nodes[name] = build_client_node(
            config, store.root, store.run_id, clients[name], keys[name], registry, job.device, resumed=True
        )
        return nodes[name].handle

    def transport_for(llm: LoadedLLM) -> InProcessTransport:
        return InProcessTransport({name: node.handle for name, node in nodes.items()}, restart=restart)

    return drive_server(
        config,
        store,
        job.device,
        job.split.llm_test,
        keys[SERVER],
        registry,
        transport_for,
        start_round=start_round,
        log=log,
        state=state,
    )


@dataclass
class PreparedJob:
    """What every side of a job derives from the config and seed: the device and the data split."""

    device: torch.device
    split: Any


def start_job(config: Config) -> torch.device:
    """What every process of a job does first: seed everything and pick the device."""
    _seed_everything(config.run.seed, config.run.threads)
    return resolve_device(config.run.device)


def prepare_job(config: Config, store: RunStore | None) -> PreparedJob:
    """Seed, pick the device, load and split the data (each site takes its own silo of the split)."""
    device = start_job(config)
    train, test = load_labelled_data(config.data, config.task, seed=config.run.seed)
    split = partition_clients(
        train, test, config.partition, config.client_ids(), seed=config.run.seed, label_names=config.task.labels
    )
    if store is not None:
        store.event(
            "data",
            train=len(train),
            test=len(test),
            llm_test=len(split.llm_test),
            clients={
                c.client_id: {"train": len(c.train), "test": len(c.test), "train_by_label": _per_label(c, config)}
                for c in split.clients
            },
        )
    return PreparedJob(device, split)


def _per_label(client: ClientData, config: Config) -> dict[str, int]:
    """Training records of a client per label name (the report's set-up shows the class balance)."""
    counts = Counter(example.label for example in client.train)
    return {name: counts.get(index, 0) for index, name in enumerate(config.task.labels)}


def resume_point(run_dir: Path, parties: str | None = None) -> tuple[RunStore, Config, RunState, int]:
    """The store, config, saved state and first round to run of a run to resume.

    ``parties``: who must have held the data (:data:`PARTIES_SITES` or :data:`PARTIES_SIMULATED`).

    Raises:
        RunError: the folder is not a run, it has nothing to resume from, or its parties differ.
    """
    store = RunStore.open(run_dir)
    if parties is not None and store.parties() != parties:
        hint = "pass --sites DIR, the folder it ran with" if parties == PARTIES_SIMULATED else "drop --sites"
        raise RunError(f"run: {run_dir} was run with {store.parties()}; to resume it {hint}")
    config = config_from_dict(store.config_dict())
    state = store.load_state()
    if state is None:
        raise RunError(f"run: {run_dir} never completed round 0; start it again with `crosslm run`")
    return store, config, state, state.completed_round + 1


def drive_server(
    config: Config,
    store: RunStore,
    device: torch.device,
    llm_test: list[Example],
    server_keys: ParticipantKeys,
    registry: Registry,
    transport_for: Callable[[LoadedLLM], Transport],
    *,
    start_round: int,
    log: Callable[[str], None],
    state: RunState | None = None,
    ledger_copies: bool = False,
) -> RunResult:
    """The server side of a job: load the LLM, run the coordinator over a transport, write the report.

    ``llm_test`` is the evaluator's labelled set; ``ledger_copies``: the sites keep their
    ledgers on their own machines, so the server keeps copies from what they send.
    """
    llm = load_llm(config.llm, device)
    log(f"LLM: {llm.source}")
    label_bias = None
    if method_for(config.run.method).tunes_llm:
        llm.model = add_lora(llm.model, config.llm.lora, seed=config.run.seed)
        if state is not None and start_round > 1:
            llm.model = load_lora(llm.model, store.llm_dir(start_round - 1))
            label_bias = read_label_bias(store.llm_dir(start_round - 1), config.task.labels)

    transport = transport_for(llm)
    coordinator = Coordinator(
        config,
        party_of(server_keys, store.run_id, registry),
        transport,
        registry,
        LocalLLM(config, llm, llm_test, store, cache=default_cache(), label_bias=label_bias),
        store,
        log=log,
        ledger_copies=ledger_copies,
    )
    if state is not None:
        coordinator.restore(state)
    store.event("run_started", round=start_round, method=config.run.method, device=str(device))
    outcome = coordinator.run(start_round)
    store.event("run_finished", completed_round=outcome.completed_rounds, stopped_early=outcome.stopped_early)
    write_report(store, config, outcome, llm=llm, slm_sources=_slm_sources(config))
    log(f"summary: {store.root / 'summary.md'}")
    return RunResult(store, outcome)


def build_client_node(
    config: Config,
    root: Path,
    run_id: str,
    client: ClientData,
    own: ParticipantKeys,
    registry: Registry,
    device: torch.device,
    *,
    resumed: bool,
) -> ClientNode:
    """One site's node: its protocol party, feedback keys and SLM, with state kept under ``root``.

    ``resumed``: the run continues, so the node starts from its last checkpoint if it has one."""
    noise = NoiseStreams(config.privacy.noise_source, config.run.seed, client.client_id)
    feedback_keys = FeedbackKeys(own, registry, config.run.decryption_quorum(), config.feedback.noise_sigma, noise)
    return _client_node(
        config,
        root,
        run_id,
        client,
        party_of(own, run_id, registry),
        feedback_keys,
        len(config.task.labels),
        device,
        resumed=resumed,
        signer=own,
    )


def _client_node(
    config: Config,
    root: Path,
    run_id: str,
    client: ClientData,
    party: Party,
    feedback_keys: FeedbackKeys,
    num_labels: int,
    device: torch.device,
    *,
    resumed: bool,
    signer: ParticipantKeys,
) -> ClientNode:
    settings = config.slm_for(client.client_id)
    store = RunStore(root)
    checkpoint = store.slm_dir(client.client_id)
    client_seed = config.run.seed * 1000 + int(client.client_id.rsplit("-", 1)[-1])
    source = settings
    if resumed and checkpoint.is_dir():
        source = settings.model_copy(update={"model": str(checkpoint)})
    tokenizer, model = load_slm(source, num_labels, device, seed=client_seed)
    trainer = slm_trainer(
        settings,
        config.privacy,
        ledger=Ledger(store.ledger_path(client.client_id), client_id=client.client_id, signer=signer),
        run_id=run_id,
        client_id=client.client_id,
        planned_rounds=config.run.rounds,
        num_records=len(client.train),
        device=device,
        seed=client_seed,
        progress=config.run.progress,
        synthetic_store=SyntheticStore(store.synthetic_path(client.client_id)),
    )
    trainer.prepare_model(model)

    def save_checkpoint(round_index: int, slm: SLM) -> None:
        _save_slm(slm, checkpoint)

    def keep_predictions(round_index: int, predictions: Predictions) -> None:
        write_predictions(store.slm_predictions_path(client.client_id, round_index), predictions)

    def record_release(round_index: int, attempt: int, release: ScoreRelease) -> None:
        # Conservative: the noise left if the decryptor subtracts its own share.
        trainer.ledger.record_score_release(
            run_id=run_id,
            round_index=round_index,
            noise_std=release.honest_share_only,
            sensitivity=release.l2_sensitivity,
            count=1,
            delta=trainer.delta,
            accountant=config.privacy.accountant,
            epsilon_max=config.privacy.epsilon_max,
            attempt=attempt,
            noise_source=config.privacy.noise_source,
            details=release.to_dict(),
        )

    return ClientNode(
        party,
        client,
        SLM(tokenizer, model),
        trainer,
        scheme_for(config.feedback.aggregator),
        feedback_keys,
        settings,
        num_labels,
        device,
        on_round_end=save_checkpoint,
        on_release=record_release,
        on_evaluated=keep_predictions,
    )


def _save_slm(slm: SLM, folder: Path) -> None:
    """Replace the client's checkpoint atomically (write a sibling, then swap)."""
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model = getattr(slm.model, "_module", slm.model)
    with quiet_transformers():
        model.save_pretrained(tmp)
    slm.tokenizer.save_pretrained(tmp)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _slm_sources(config: Config) -> dict[str, str]:
    return {name: config.slm_for(name).model for name in config.client_ids()}


def _seed_everything(seed: int, threads: int) -> None:
    """Seed Python, NumPy and torch; ``threads`` > 0 also caps torch's CPU threads."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
