"""`crosslm pki init`: a CA that verifies the SuperLink certificate, private files 0600, usable site keys."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.crypto.keys import Registry, load_participant_keys
from crosslm_secure.deploy.pki import PKI, init_pki
from crosslm_secure.errors import CryptoError


def test_pki_init_writes_verifiable_certificates_and_private_files_0600(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["pki", "init", "--out", str(tmp_path / "pki"), "--clients", "2"])
    assert result.exit_code == 0, result.output
    pki = PKI.open(tmp_path / "pki")
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    leaf = x509.load_pem_x509_certificate(pki.superlink_cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert pki.sites() == ["client-1", "client-2"]
    private = [pki.root / "ca" / "ca.key", pki.superlink_key]
    for site in pki.sites():
        files = pki.site(site)
        private += [files.auth_key, files.keys / "signing.pem", files.keys / "exchange.pem"]
        auth = load_ssh_private_key(files.auth_key.read_bytes(), None)
        assert isinstance(auth, ec.EllipticCurvePrivateKey)
        assert load_ssh_public_key(files.auth_pub.read_bytes()) == auth.public_key()
        assert load_participant_keys(files.keys).site == site
        assert files.ca.read_bytes() == pki.ca.read_bytes()
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    registry = Registry.load(pki.root / "registry.json")
    assert [i.site for i in registry] == ["client-1", "client-2", "server"]


def test_pki_init_refuses_to_overwrite_and_bad_site_names(tmp_path: Path) -> None:
    init_pki(tmp_path, ["client-1"], ["127.0.0.1"])
    with pytest.raises(CryptoError, match="already holds a CA"):
        init_pki(tmp_path, ["client-1"], ["127.0.0.1"])
    with pytest.raises(CryptoError, match="coordinator's name"):
        init_pki(tmp_path / "other", ["server"], ["127.0.0.1"])
