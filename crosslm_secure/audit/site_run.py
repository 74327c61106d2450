"""A site's own view of a run, for the audits it runs on its machine.

The site reads only its own folder (``DIR/<site>/``: its keys, its records, its state for the
run under ``state/<run-id>/``) and the coordinator's run folder (its config and the server's
copy of the site's ledger). Members are the site's training split of its own records;
non-members and the reference models' pool are its held-out split, halved: the three never
overlap. Every problem is one sentence naming the file and the fix, raised before anything is
written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crosslm_secure.audit.base import AuditError
from crosslm_secure.audit.population import AuditRun, audit_run
from crosslm_secure.audit.runinfo import run_config
from crosslm_secure.config import Config
from crosslm_secure.crypto.keys import ParticipantKeys
from crosslm_secure.data.records import ClientData, TaskData
from crosslm_secure.data.site import own_data_marker
from crosslm_secure.errors import CrossLMError, DataError
from crosslm_secure.parties import PartyFolder
from crosslm_secure.party_run import Site, open_site
from crosslm_secure.runstore import RunStore


@dataclass(frozen=True)
class SiteRun:
    """One site's records and state for one run, opened for its audits."""

    party: PartyFolder
    keys: ParticipantKeys
    run_id: str
    audit: AuditRun
    """The site alone, its state as the run folder: what the attacks read."""
    server_ledger: Path
    """The server's copy of the site's ledger, in the coordinator's run folder."""

    @property
    def site(self) -> str:
        return self.party.name

    @property
    def ledger(self) -> Path:
        """The site's own, authoritative ledger."""
        return self.audit.store.ledger_path(self.site)

    @property
    def checkpoint(self) -> Path:
        return self.audit.store.slm_dir(self.site)


def open_site_run(site_dir: Path, run_dir: Path, overrides: Sequence[str] = ()) -> SiteRun:
    """Open ``site_dir`` (``DIR/<site>``) for the audits of the run in ``run_dir``.

    Raises:
        AuditError: the site has no keys or another site's keys, no registry holding its key,
            the run folder is not a run, the site is not one of its clients or holds no state for
            it, or the site's records do not fit the job (columns, labels, count).
    """
    party = PartyFolder(Path(site_dir))
    if not party.root.is_dir():
        raise AuditError(f"audit site: {party.root} is not a folder; pass --site DIR/<site>, the site's own folder")
    config = run_config(run_dir, overrides)
    run_id = RunStore(Path(run_dir)).run_id
    if party.name not in config.client_ids():
        raise AuditError(
            f"audit site: {party.name} is not a client of run {run_id} ({Path(run_dir) / 'config.yaml'} lists "
            f"{', '.join(config.client_ids())}); pass the run this site took part in"
        )
    site = _open(party, config)
    state = party.state_root(run_id)
    if not RunStore(state).client_dir(party.name).is_dir():
        raise AuditError(
            f"audit site: {state} holds no state of {party.name} for run {run_id}; pass a run this site "
            f"took part in, or put its state for that run in {state}"
        )
    client = _trained_on(site.data, party, state)
    audit = audit_run(
        state,
        config,
        config.audit,
        TaskData(clients=[client]),
        list(client.test),
        too_few=f"of {party.name} are held out from training; add records to {party.data()}",
    )
    return SiteRun(party, site.keys, run_id, audit, RunStore(Path(run_dir)).ledger_path(party.name))


def _open(party: PartyFolder, config: Config) -> Site:
    """The site's keys, registry and records, opened as the site opens them to train.

    Raises:
        AuditError: no keys or another site's, no registry holding its key, or records whose
            columns or labels do not match the job.
    """
    try:
        return open_site(party, config)
    except DataError as exc:
        raise AuditError(
            f"audit site: {exc}; the site's file must have the job's columns {config.data.text_column!r} and "
            f"{config.data.label_column!r} and labels {', '.join(config.task.labels)}"
        ) from None
    except CrossLMError as exc:
        raise AuditError(f"audit site: {exc}") from None


def _trained_on(client: ClientData, party: PartyFolder, state: Path) -> ClientData:
    """``client``, once its record counts are those the site recorded when it trained (when it did).

    Raises:
        AuditError: the file gives other counts than the site trained on.
    """
    recorded = own_data_marker(RunStore(state).client_dir(party.name))
    counts = (len(client.train), len(client.test))
    if recorded is not None and (recorded.get("train"), recorded.get("test")) != counts:
        raise AuditError(
            f"audit site: {party.data()} gives {counts[0]} training and {counts[1]} held-out records, but the site "
            f"trained on {recorded.get('train')} and held out {recorded.get('test')} ({recorded.get('file')}); "
            "restore the file it trained on"
        )
    return client
