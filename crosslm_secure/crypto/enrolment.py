"""Each party makes its own keys; the coordinator enrols only their public halves.

``crosslm keys init`` runs :func:`init_party_keys` on the party's own machine: the private
keys never leave its folder. The party sends ``identity.json`` (and, for a site, its SuperNode
key ``auth_key.pub``) to the coordinator, and reads its fingerprint to them out of band;
``crosslm keys enroll --expect`` (:func:`enroll`) refuses the file if the fingerprints differ.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from crosslm_secure.crypto.keys import (
    ParticipantKeys,
    PublicIdentity,
    Registry,
    Role,
    load_identity,
    save_participant_keys,
)
from crosslm_secure.crypto.storage import write_secret_file
from crosslm_secure.errors import CryptoError
from crosslm_secure.parties import SUPERNODES_DIR
from crosslm_secure.storage import atomic_write_bytes

AUTH_PUB = "auth_key.pub"


def init_party_keys(folder: Path, site: str, role: Role, passphrase: str | None = None) -> PublicIdentity:
    """Write a party's signing and exchange keys, and for a site its SuperNode key, into ``folder``.

    Raises:
        CryptoError: a bad site name or passphrase; nothing is written.
    """
    keys = ParticipantKeys.generate(site, role)
    save_participant_keys(keys, folder, passphrase)
    if role == "client":
        write_supernode_key(Path(folder) / "auth_key", Path(folder) / AUTH_PUB, site)
    return keys.public()


def write_supernode_key(private_path: Path, public_path: Path, site: str) -> None:
    """A site's SuperNode authentication key pair (NIST P-384, OpenSSH): private 0600, public 0644."""
    auth = ec.generate_private_key(ec.SECP384R1())
    private = auth.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    Path(private_path).parent.mkdir(parents=True, exist_ok=True)
    Path(private_path).parent.chmod(0o700)
    write_secret_file(private_path, private)
    public = auth.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    atomic_write_bytes(Path(public_path), public + f" crosslm-{site}\n".encode(), mode=0o644)


def same_fingerprint(expected: str, identity: PublicIdentity) -> bool:
    """Whether a fingerprint read out of band (any case, colons optional) is ``identity``'s."""
    return expected.replace(":", "").strip().lower() == identity.fingerprint.replace(":", "")


def enroll(identity_path: Path, registry_path: Path, expect: str | None = None) -> PublicIdentity:
    """Add a party's public identity to the registry; a site's SuperNode key goes to ``supernodes/``.

    Args:
        identity_path: the party's ``identity.json`` (or its keys folder).
        registry_path: the registry (created if missing).
        expect: the fingerprint the party read out of band; enrolment is refused if it differs.

    Raises:
        CryptoError: the fingerprint differs from ``expect``, or the site is enrolled with other keys.
    """
    identity = load_identity(identity_path)
    if expect is not None and not same_fingerprint(expect, identity):
        raise CryptoError(
            f"keys: {identity.site}'s fingerprint in {identity_path} is {identity.fingerprint}, not the one you were "
            "given out of band; do not enrol it, and ask the site to send its identity.json again"
        )
    registry = Registry.load(registry_path) if Path(registry_path).exists() else Registry()
    registry.enroll(identity)
    registry.save(registry_path)
    folder = Path(identity_path) if Path(identity_path).is_dir() else Path(identity_path).parent
    if identity.role == "client" and (folder / AUTH_PUB).is_file():
        target = Path(registry_path).parent / SUPERNODES_DIR / f"{identity.site}.pub"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / AUTH_PUB, target)
    return identity
