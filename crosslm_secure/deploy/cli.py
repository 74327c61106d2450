"""``crosslm pki ...`` and ``crosslm deploy ...``."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from crosslm_secure.clitools import EXIT_STOPPED_EARLY, console, fail
from crosslm_secure.config import Config, config_from_dict, load_config
from crosslm_secure.deploy import refuse_seeded_noise
from crosslm_secure.errors import CrossLMError
from crosslm_secure.runstore import RunStore

if TYPE_CHECKING:
    from crosslm_secure.deploy.local import Deployment
    from crosslm_secure.deploy.pki import PKI, SiteFiles
    from crosslm_secure.parties import PartyFolder, SitesPKI


pki_app = typer.Typer(help="TLS certificates, SuperNode keys and protocol identities.", no_args_is_help=True)
deploy_app = typer.Typer(help="Run jobs on Flower: SuperLink, SuperNodes, TLS, node authentication.")


def _job(config: Path | None, overrides: list[str] | None, resume: Path | None) -> Config:
    """The job to run: the resumed run's own config, or the YAML with its overrides (never seeded noise)."""
    if resume is not None:
        job = config_from_dict(RunStore.open(resume).config_dict())
    elif config is None:
        raise CrossLMError("deploy: give the job YAML, or --resume runs/<id> after a server crash")
    else:
        job = load_config(config, overrides or [])
    refuse_seeded_noise(job)
    return job


def _pki(folder: Path) -> PKI | SitesPKI:
    """A ``crosslm pki init`` folder, or the coordinator's party folder (``DIR/server`` with ``tls/``)."""
    from crosslm_secure.deploy.pki import PKI, SitesPKI
    from crosslm_secure.parties import PartyFolder

    folder = folder.resolve()
    if PartyFolder(folder).tls.is_dir():
        return SitesPKI.open(folder.parent)
    return PKI.open(folder)


def _admin(keys: PKI | SitesPKI, superlink: str, job: Config | None) -> Deployment:
    """The server machine's handle on a SuperLink started with ``crosslm deploy superlink``."""
    from crosslm_secure.deploy.local import Deployment
    from crosslm_secure.deploy.pki import SitesPKI

    sites = keys.root if isinstance(keys, SitesPKI) else None
    workdir = keys.server.folder / "admin" if sites is not None else keys.root / "admin"
    admin = Deployment(workdir, job, log=console.print, sites_root=sites)
    admin.attach(keys, superlink)
    return admin


def _exit_if_stopped_early(run_dir: Path) -> None:
    """Exit 3 with the reason when the deployed run ended before its last round, as ``crosslm run`` does."""
    from crosslm_secure.runstore import RunStore

    reason = None
    for event in RunStore(run_dir).events():  # the last start's outcome: a resumed run may have stopped before
        if event.get("event") == "run_started":
            reason = None
        elif event.get("event") == "run_stopped":
            reason = event.get("reason")
    if reason is not None:
        console.print(f"[yellow]run ended early:[/] {escape(str(reason))}", highlight=False)
        raise typer.Exit(EXIT_STOPPED_EARLY)


def _site_files(
    party: Path | None, site_dir: Path | None, state_dir: Path | None
) -> tuple[SiteFiles, PartyFolder | None, Path]:
    """A site's credentials, its party folder (or None) and its state folder, from `deploy site`'s options."""
    from crosslm_secure.deploy.pki import PartySiteFiles, SiteFiles
    from crosslm_secure.parties import STATE_DIR, PartyFolder

    if (party is None) == (site_dir is None):
        raise CrossLMError("deploy site: give --site DIR/<site> (its party folder), or --site-dir and --state-dir")
    if party is not None:
        folder = PartyFolder(party.resolve())
        return PartySiteFiles(folder.root), folder, folder.root / STATE_DIR
    if state_dir is None:
        raise CrossLMError("deploy site: --site-dir needs --state-dir (where the site keeps its state)")
    return SiteFiles(site_dir.resolve()), None, state_dir


def _passphrase(variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise CrossLMError(
            f"deploy site: environment variable {variable} is unset or empty; export the passphrase there"
        )
    return value


PKI_HELP = "The PKI folder from `crosslm pki init`, or the coordinator's party folder (DIR/server, with tls/)."


@pki_app.command("init")
def pki_init(
    out: Annotated[Path, typer.Option("--out", help="Folder to create (private files get mode 0600).")],
    clients: Annotated[int, typer.Option("--clients", help="Number of client sites (client-1..N).")] = 3,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="SuperLink host name or IP for its certificate (repeat).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing PKI in --out.")] = False,
) -> None:
    """Create a CA, the SuperLink certificate, and per-site credentials (auth key + protocol identity)."""
    from crosslm_secure.deploy.pki import init_pki

    try:
        pki = init_pki(out, [f"client-{i + 1}" for i in range(clients)], host or ["127.0.0.1"], force=force)
    except CrossLMError as exc:
        fail(exc)
    console.print(
        f"wrote {pki.root}: a loopback or demo PKI (every site's private keys were made here); for a pilot, "
        "each site runs `crosslm keys init` on its own machine and the coordinator `crosslm pki coordinator`"
    )
    console.print("copy superlink/, server/ and ca/ca.pem to the server, sites/<site>/ to each site")
    console.print(
        "then, on the server: `crosslm deploy superlink --pki PKI` and `crosslm deploy register --pki PKI ...`"
    )


@pki_app.command("coordinator")
def pki_coordinator(
    out: Annotated[Path, typer.Option("--out", help="The coordinator's party folder, e.g. sites/server.")],
    host: Annotated[
        list[str] | None, typer.Option("--host", help="SuperLink host name or IP for its certificate (repeat).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the coordinator's CA (every site needs the new ca.pem).")
    ] = False,
) -> None:
    """Make the coordinator's own CA and SuperLink certificate in OUT/tls/ (no site's key is made here)."""
    from crosslm_secure.deploy.pki import init_coordinator_tls
    from crosslm_secure.parties import PartyFolder

    try:
        ca = init_coordinator_tls(PartyFolder(out).tls, host or ["127.0.0.1"], force=force)
    except CrossLMError as exc:
        fail(exc)
    console.print(f"wrote {ca.parent}: give {ca} to every site (its ca.pem); ca.key and superlink.key stay here")


@deploy_app.command("local")
def local(
    config: Annotated[Path | None, typer.Argument(help="Job YAML, e.g. experiments/configs/quick.yaml")] = None,
    clients: Annotated[int, typer.Option("--clients", help="SuperNodes (client sites) to start.")] = 3,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: section.field=value")] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Deployment folder (PKI, logs); default <output_dir>/deploy-<time>")
    ] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue runs/<id> from its last round.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds a site may take per request.")] = 1800.0,
    sites: Annotated[
        Path | None,
        typer.Option(
            "--sites",
            help="Folder of party folders (server/, client-1/, ...): each party's own keys and records; the "
            "coordinator's TLS in server/tls/. Without it, a loopback PKI is made and the data file split "
            "(a simulation).",
        ),
    ] = None,
) -> None:
    """Start a SuperLink and one SuperNode per client on loopback with TLS, run one job, stop them."""
    from crosslm_secure.deploy.local import deploy_local

    try:
        job = _job(config, set_, resume)
        if sites is not None:
            from crosslm_secure.party_run import check_sites

            check_sites(job, sites)
            clients = job.partition.clients
        folder = workdir or Path(job.run.output_dir) / f"deploy-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = deploy_local(job, clients, folder, resume=resume, log=console.print, timeout=timeout, sites=sites)
    except CrossLMError as exc:
        fail(exc)
    console.print(f"[green]done:[/] {run_dir / 'summary.md'}")
    _exit_if_stopped_early(run_dir)


@deploy_app.command("register")
def register(
    pki: Annotated[Path, typer.Option("--pki", help=PKI_HELP)],
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink address host:port.")],
    site: Annotated[list[str] | None, typer.Option("--site", help="Site to register (repeat); default all.")] = None,
) -> None:
    """Register sites' SuperNode authentication keys with a running SuperLink (the server machine)."""
    try:
        keys = _pki(pki)
        admin = _admin(keys, superlink, None)
        names = site or keys.sites()
        if not names:
            raise CrossLMError(
                f"deploy register: {keys.root} holds no site's SuperNode key; "
                "enrol each site with `crosslm keys enroll`"
            )
        for name in names:
            admin.register(name)
            console.print(f"registered {name}")
    except CrossLMError as exc:
        fail(exc)


@deploy_app.command("submit")
def submit(
    config: Annotated[Path | None, typer.Argument(help="The job YAML every site agreed on.")] = None,
    pki: Annotated[Path, typer.Option("--pki", help=PKI_HELP)] = Path("pki"),
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink address host:port.")] = "127.0.0.1:9093",
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue runs/<id> from its last round.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds a site may take per request.")] = 1800.0,
) -> None:
    """Start a job (or resume one) on a running SuperLink and follow it to the end (the server machine)."""
    from crosslm_secure.deploy.local import follow

    try:
        job = _job(config, [], resume)
        admin = _admin(_pki(pki), superlink, job)
        run_dir = follow(admin, admin.submit(resume=resume, timeout=timeout), console.print)
    except CrossLMError as exc:
        fail(exc)
    console.print(f"[green]done:[/] {run_dir / 'summary.md'}")
    _exit_if_stopped_early(run_dir)


@deploy_app.command("site")
def site(
    config: Annotated[Path, typer.Option("--config", help="The job YAML every site agreed on.")],
    superlink: Annotated[str, typer.Option("--superlink", help="SuperLink address host:port.")],
    party: Annotated[
        Path | None,
        typer.Option(
            "--site",
            help="This site's party folder (DIR/client-1): its keys, registry, ca.pem and records; its state "
            "is kept in its state/.",
        ),
    ] = None,
    site_dir: Annotated[
        Path | None, typer.Option("--site-dir", help="Instead of --site: this site's folder from `crosslm pki init`.")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="With --site-dir: where this site keeps checkpoints and ledgers.")
    ] = None,
    max_wait: Annotated[
        float,
        typer.Option(
            "--max-wait",
            help="Give up connecting after this many seconds (a site restarted after a crash may wait 20 s).",
        ),
    ] = 120.0,
    passphrase_env: Annotated[
        str | None,
        typer.Option("--passphrase-env", help="With --site: environment variable holding the keys' passphrase."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="The site's own labelled records (.csv, .jsonl or a datasets folder), read with the job's "
            "columns and labels; default: its silo of the job's data.",
        ),
    ] = None,
) -> None:
    """Run one client site: its worker (holds the node) and its SuperNode."""
    from crosslm_secure.config import load_config
    from crosslm_secure.deploy.site import run_site

    try:
        files, folder, state_dir = _site_files(party, site_dir, state_dir)
        run_site(
            load_config(config),
            files,
            superlink,
            state_dir=state_dir,
            max_wait=max_wait,
            log=console.print,
            data=data,
            party=folder,
            passphrase=_passphrase(passphrase_env),
        )
    except CrossLMError as exc:
        fail(exc)


@deploy_app.command("superlink")
def superlink(
    pki: Annotated[Path, typer.Option("--pki", help=PKI_HELP)],
    port: Annotated[int, typer.Option("--port", help="Port for the Fleet, Control and Runtime APIs.")] = 9093,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "0.0.0.0",
) -> None:
    """Run the SuperLink with TLS and SuperNode authentication on (the server machine)."""
    from crosslm_secure.deploy.local import superlink_command
    from crosslm_secure.deploy.pki import PKI
    from crosslm_secure.deploy.site import flower_env
    from crosslm_secure.parties import PartyFolder

    keys = _pki(pki) if PartyFolder(pki.resolve()).tls.is_dir() else PKI(pki.resolve())
    command = superlink_command(keys, port, host)
    console.print(" ".join(command))
    raise typer.Exit(subprocess.call(command, env=flower_env()))


if __name__ == "__main__":  # ``python -m crosslm_secure.deploy.cli site ...`` (used by deploy local)
    deploy_app()
