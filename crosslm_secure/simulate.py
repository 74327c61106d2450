"""A simulated pilot: one data file split into party folders, each with keys of its own.

``crosslm sites split CONFIG --out DIR`` plays, on one machine, what the parties of a pilot
do on theirs: it partitions the job's data file into sites (a simulation tool: no party ever
partitions), writes each site's records to ``DIR/<site>/data.csv`` and the coordinator's
evaluator set to ``DIR/server/eval.csv``, makes each party's keys in its own folder (as
``crosslm keys init`` would there), enrols the public halves in the coordinator's registry,
hands each site and the reviewer a copy of it, and makes the coordinator's TLS for loopback.
The result drives ``crosslm run CONFIG --sites DIR`` and ``crosslm deploy local CONFIG --sites DIR``.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

from crosslm_secure.config import Config
from crosslm_secure.crypto.enrolment import enroll, init_party_keys
from crosslm_secure.crypto.keys import Registry
from crosslm_secure.data.loaders import load_labelled_data
from crosslm_secure.data.partition import partition_clients
from crosslm_secure.data.records import Example
from crosslm_secure.errors import CrossLMError
from crosslm_secure.parties import REVIEWER, SERVER, PartyFolder
from crosslm_secure.storage import atomic_write_text

LOOPBACK = ["127.0.0.1", "localhost"]


@dataclass(frozen=True)
class SimulatedSites:
    """What :func:`split_into_sites` wrote: the folder, records per party, and each fingerprint."""

    root: Path
    records: dict[str, int]
    fingerprints: dict[str, str]


def split_into_sites(config: Config, out: Path, *, hosts: list[str] | None = None) -> SimulatedSites:
    """Write a simulated pilot for ``config`` into ``out`` (see the module docstring).

    Raises:
        CrossLMError: ``out`` exists and is not empty, or the data cannot be split.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CrossLMError(f"sites: {out} is not empty; pass a new folder (party keys are never overwritten)")
    train, test = load_labelled_data(config.data, config.task, seed=config.run.seed)
    split = partition_clients(
        train, test, config.partition, config.client_ids(), seed=config.run.seed, label_names=config.task.labels
    )
    server = PartyFolder(out / SERVER)
    records = {SERVER: len(split.llm_test)}
    _write_records(server.eval_set, split.llm_test, config)
    fingerprints = {SERVER: _own_keys(server, "server").fingerprint}
    for client in split.clients:
        site = PartyFolder(out / client.client_id)
        _write_records(site.root / "data.csv", client.train + client.test, config)
        records[client.client_id] = len(client.train) + len(client.test)
        fingerprints[client.client_id] = _own_keys(site, "client").fingerprint
    for name in [SERVER, *config.client_ids()]:
        enroll(PartyFolder(out / name).keys, server.registry, expect=fingerprints[name])
    from crosslm_secure.deploy.pki import init_coordinator_tls

    ca = init_coordinator_tls(server.tls, hosts or LOOPBACK)
    for name in config.client_ids():
        shutil.copyfile(server.registry, PartyFolder(out / name).registry)
        shutil.copyfile(ca, PartyFolder(out / name).ca)
    reviewer = PartyFolder(out / REVIEWER)
    reviewer.root.mkdir(parents=True, exist_ok=True)
    Registry.load(server.registry).save(reviewer.registry)
    return SimulatedSites(out, records, fingerprints)


def _own_keys(party: PartyFolder, role: str):  # noqa: ANN202 - PublicIdentity
    return init_party_keys(party.keys, party.name, role)  # type: ignore[arg-type]


def _write_records(path: Path, examples: list[Example], config: Config) -> None:
    """Examples as a CSV with the job's text and label columns (labels by name)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([config.data.text_column, config.data.label_column])
    for example in examples:
        writer.writerow([example.text, config.task.labels[example.label]])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue(), mode=0o600)
