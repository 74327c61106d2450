"""``crosslm keys ...``: make participant keys, print fingerprints, enroll into a registry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from crosslm_secure.clitools import fail
from crosslm_secure.crypto.enrolment import enroll as enroll_identity
from crosslm_secure.crypto.enrolment import init_party_keys
from crosslm_secure.crypto.keys import IDENTITY_FILE, Registry, load_identity, read_json_text
from crosslm_secure.errors import CryptoError

keys_app = typer.Typer(help="Participant keys: init, fingerprint, enroll.", no_args_is_help=True)


@keys_app.command("init")
def init(
    site: Annotated[str, typer.Option("--site", help="Site id, e.g. client-1 or server.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the keys (private files get mode 0600).")],
    role: Annotated[str, typer.Option("--role", help="client or server.")] = "client",
    passphrase_env: Annotated[
        str | None,
        typer.Option("--passphrase-env", help="Environment variable holding the passphrase that encrypts the keys."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing keys in --out.")] = False,
) -> None:
    """Generate this party's keys on its own machine: Ed25519 signing, X25519 exchange, and for a
    client its SuperNode authentication key. Private files stay in --out (mode 0600)."""
    try:
        if role not in ("client", "server"):
            raise CryptoError(f"keys: --role must be client or server (got {role!r})")
        if (out / IDENTITY_FILE).exists() and not force:
            raise CryptoError(f"keys: {out} already holds keys; pass --force to replace them")
        passphrase = _passphrase(passphrase_env)
        identity = init_party_keys(out, site, role, passphrase)  # type: ignore[arg-type]
    except CryptoError as exc:
        fail(exc)
    state = "encrypted" if passphrase else "NOT encrypted (no passphrase)"
    typer.echo(f"wrote keys for {site} ({role}) to {out}; private keys {state}, mode 0600")
    typer.echo(f"public identity: {out / IDENTITY_FILE}  <- send it to the coordinator")
    if role == "client":
        typer.echo(f"SuperNode key: {out / 'auth_key.pub'}  <- send it with identity.json")
    typer.echo(f"fingerprint: {identity.fingerprint}  <- read it to the coordinator out of band")


@keys_app.command("fingerprint")
def fingerprint(
    path: Annotated[Path, typer.Argument(help="identity.json, a key folder, or a registry file.")],
) -> None:
    """Print fingerprints to compare out of band (phone, in person) before enrolling."""
    try:
        if path.is_file() and '"participants"' in read_json_text(path, "keys"):
            for identity in Registry.load(path):
                typer.echo(f"{identity.site:<20} {identity.role:<7} {identity.fingerprint}")
            return
        identity = load_identity(path)
    except CryptoError as exc:
        fail(exc)
    typer.echo(f"{identity.site:<20} {identity.role:<7} {identity.fingerprint}")


@keys_app.command("enroll")
def enroll(
    identity_path: Annotated[Path, typer.Argument(help="The participant's identity.json (public keys only).")],
    registry_path: Annotated[Path, typer.Option("--registry", help="Registry JSON file (created if missing).")],
    expect: Annotated[
        str | None,
        typer.Option("--expect", help="Fingerprint confirmed out of band; enrollment is refused if it differs."),
    ] = None,
) -> None:
    """Add a party's public identity to the registry (a site's auth_key.pub beside it goes to supernodes/)."""
    try:
        identity = enroll_identity(identity_path, registry_path, expect)
    except CryptoError as exc:
        fail(exc)
    typer.echo(f"enrolled {identity.site} ({identity.role}) in {registry_path}")
    typer.echo(f"fingerprint: {identity.fingerprint}  <- confirm with the site out of band")


def _passphrase(variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise CryptoError(f"keys: environment variable {variable} is unset or empty; export the passphrase there")
    return value


@keys_app.command("remove")
def remove(
    site: Annotated[str, typer.Argument(help="The party to take out, e.g. client-2.")],
    registry_path: Annotated[Path, typer.Option("--registry", help="Registry JSON file.")],
) -> None:
    """Take a party out of the registry (its key was lost or rotated); enrol its new identity after."""
    try:
        registry = Registry.load(registry_path)
        identity = registry.remove(site)
        registry.save(registry_path)
    except CryptoError as exc:
        fail(exc)
    typer.echo(f"removed {site} (fingerprint {identity.fingerprint}) from {registry_path}")
    typer.echo("keep the registry each finished run was audited against with that run: its ledgers need the old key")
