"""``crosslm pki init``: TLS material, SuperNode authentication keys and protocol identities.

One folder tree, one sub-folder to copy to each machine::

    <out>/ca/ca.pem, ca.key                     the CA (keep ca.key offline; it signs nothing else)
    <out>/superlink/ca.pem, server.pem, server.key   TLS for the SuperLink (server machine)
    <out>/server/keys/, registry.json, ca.pem   the server's protocol identity (server machine)
    <out>/sites/<site>/auth_key, auth_key.pub   SuperNode authentication key (OpenSSH, NIST P-384)
    <out>/sites/<site>/keys/, registry.json, ca.pem   the site's protocol identity, the registry, the CA
    <out>/registry.json                          every public protocol identity

Private files are written mode 0600 through the atomic writers; nothing private leaves its folder.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crosslm_secure.crypto.enrolment import write_supernode_key
from crosslm_secure.crypto.keys import ParticipantKeys, Registry, check_site_name, save_participant_keys
from crosslm_secure.crypto.storage import write_secret_file
from crosslm_secure.errors import CryptoError
from crosslm_secure.parties import SERVER, PartyFolder, Sites
from crosslm_secure.storage import atomic_write_bytes

CA_CERT = "ca.pem"
AUTH_KEY = "auth_key"
AUTH_PUB = "auth_key.pub"
REGISTRY = "registry.json"
_DAYS = 825


@dataclass(frozen=True)
class SiteFiles:
    """Where one site's credentials live inside a PKI folder."""

    folder: Path

    @property
    def site(self) -> str:
        return self.folder.name

    @property
    def ca(self) -> Path:
        return self.folder / CA_CERT

    @property
    def auth_key(self) -> Path:
        return self.folder / AUTH_KEY

    @property
    def auth_pub(self) -> Path:
        return self.folder / AUTH_PUB

    @property
    def keys(self) -> Path:
        return self.folder / "keys"

    @property
    def registry(self) -> Path:
        return self.folder / REGISTRY


@dataclass(frozen=True)
class PKI:
    """A folder written by :func:`init_pki`."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca" / CA_CERT

    @property
    def superlink_ca(self) -> Path:
        return self.root / "superlink" / CA_CERT

    @property
    def superlink_cert(self) -> Path:
        return self.root / "superlink" / "server.pem"

    @property
    def superlink_key(self) -> Path:
        return self.root / "superlink" / "server.key"

    @property
    def server(self) -> SiteFiles:
        return SiteFiles(self.root / "server")

    def site(self, name: str) -> SiteFiles:
        files = SiteFiles(self.root / "sites" / name)
        if not files.folder.is_dir():
            raise CryptoError(
                f"pki: {self.root} has no credentials for {name!r}; run `crosslm pki init` with that site"
            )
        return files

    def auth_pub(self, name: str) -> Path:
        """The SuperNode public key the coordinator registers for ``name``."""
        return self.site(name).auth_pub

    def sites(self) -> list[str]:
        folder = self.root / "sites"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    @classmethod
    def open(cls, root: Path) -> PKI:
        pki = cls(Path(root))
        if not pki.ca.is_file() or not (pki.root / REGISTRY).is_file():
            raise CryptoError(f"pki: {root} is not a PKI folder; create it with `crosslm pki init --out {root}`")
        return pki


@dataclass(frozen=True)
class PartySiteFiles(SiteFiles):
    """A site's credentials in its own party folder ``DIR/<site>/`` (its SuperNode key sits in ``keys/``)."""

    @property
    def auth_key(self) -> Path:
        return PartyFolder(self.folder).auth_key

    @property
    def auth_pub(self) -> Path:
        return PartyFolder(self.folder).auth_pub


@dataclass(frozen=True)
class SitesPKI:
    """The deployment view of a folder of party folders: the coordinator's TLS in ``server/tls/``,
    the sites' SuperNode public keys it enrolled in ``server/supernodes/``, each site's own folder."""

    root: Path

    @property
    def _server(self) -> PartyFolder:
        return PartyFolder(self.root / SERVER)

    @property
    def ca(self) -> Path:
        return self._server.tls / CA_CERT

    @property
    def superlink_ca(self) -> Path:
        return self.ca

    @property
    def superlink_cert(self) -> Path:
        return self._server.tls / "superlink.pem"

    @property
    def superlink_key(self) -> Path:
        return self._server.tls / "superlink.key"

    @property
    def server(self) -> SiteFiles:
        return SiteFiles(self._server.root)

    def site(self, name: str) -> SiteFiles:
        return PartySiteFiles(Sites(self.root).party(name).root)

    def auth_pub(self, name: str) -> Path:
        path = self._server.supernode_key(name)
        if not path.is_file():
            raise CryptoError(
                f"pki: the coordinator has no SuperNode key for {name} ({path}); enrol the site with "
                f"`crosslm keys enroll <its keys>/identity.json --registry {self._server.registry}`"
            )
        return path

    def sites(self) -> list[str]:
        """The sites whose SuperNode keys the coordinator enrolled."""
        folder = self._server.supernodes
        return sorted(p.stem for p in folder.glob("*.pub")) if folder.is_dir() else []

    @classmethod
    def open(cls, root: Path) -> SitesPKI:
        pki = cls(Path(root).resolve())
        if not pki.ca.is_file() or not pki.superlink_cert.is_file():
            raise CryptoError(
                f"pki: {pki._server.tls} holds no coordinator TLS; on the coordinator run "
                f"`crosslm pki coordinator --out {pki._server.root} --host <its host name>`"
            )
        return pki


def init_pki(out: Path, sites: list[str], hosts: list[str], *, force: bool = False) -> PKI:
    """Create a CA, a SuperLink certificate for ``hosts``, and credentials for the server and each site.

    Raises:
        CryptoError: ``out`` already holds a PKI (and ``force`` is off), or a site name is invalid.
    """
    out = Path(out)
    if (out / "ca" / CA_CERT).exists() and not force:
        raise CryptoError(f"pki: {out} already holds a CA; pass --force to replace everything in it")
    if not sites:
        raise CryptoError("pki: name at least one site (e.g. --clients 3)")
    for name in sites:
        check_site_name(name)
        if name == SERVER:
            raise CryptoError("pki: 'server' is the coordinator's name; pick other site names")
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = _ca_certificate(ca_key)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    _write_public(out / "ca" / CA_CERT, ca_pem)
    _write_private(out / "ca" / "ca.key", _pem_key(ca_key))

    link_key = ec.generate_private_key(ec.SECP384R1())
    _write_public(out / "superlink" / CA_CERT, ca_pem)
    _write_public(out / "superlink" / "server.pem", _leaf(link_key, ca_key, ca_cert, hosts or ["127.0.0.1"]))
    _write_private(out / "superlink" / "server.key", _pem_key(link_key))

    identities = {SERVER: ParticipantKeys.generate(SERVER, "server")}
    identities.update({name: ParticipantKeys.generate(name, "client") for name in sites})
    registry = Registry(k.public() for k in identities.values())
    registry.save(out / REGISTRY)
    pki = PKI(out)
    for name, keys in identities.items():
        files = pki.server if name == SERVER else SiteFiles(out / "sites" / name)
        save_participant_keys(keys, files.keys)
        registry.save(files.registry)
        _write_public(files.ca, ca_pem)
        if name != SERVER:
            write_supernode_key(files.auth_key, files.auth_pub, name)
    return pki


def init_coordinator_tls(folder: Path, hosts: list[str], *, force: bool = False) -> Path:
    """The coordinator's own CA and SuperLink certificate in ``folder`` (``DIR/server/tls/``).

    Writes ``ca.pem`` (give it to every site), ``ca.key`` (private; signs nothing else),
    ``superlink.pem`` and ``superlink.key``. Returns the CA certificate's path.

    Raises:
        CryptoError: ``folder`` already holds a CA and ``force`` is off.
    """
    folder = Path(folder)
    if (folder / CA_CERT).exists() and not force:
        raise CryptoError(
            f"pki: {folder} already holds a CA; pass --force to replace it (every site then needs the new ca.pem)"
        )
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = _ca_certificate(ca_key)
    link_key = ec.generate_private_key(ec.SECP384R1())
    _write_private(folder / "ca.key", _pem_key(ca_key))
    _write_private(folder / "superlink.key", _pem_key(link_key))
    _write_public(folder / "superlink.pem", _leaf(link_key, ca_key, ca_cert, hosts or ["127.0.0.1"]))
    _write_public(folder / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM))
    return folder / CA_CERT


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crosslm deployment CA")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # cert sign, crl sign
        .sign(key, hashes.SHA384())
    )


def _leaf(
    key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, hosts: list[str]
) -> bytes:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "superlink")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    write_secret_file(path, data)


def _write_public(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, mode=0o644)
