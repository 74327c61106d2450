from __future__ import annotations

import stat

from typer.testing import CliRunner

from crosslm_secure.crypto.cli import keys_app
from crosslm_secure.crypto.keys import Registry, load_identity

runner = CliRunner()


def test_init_fingerprint_enroll(tmp_path, monkeypatch):
    monkeypatch.setenv("SITE_PASS", "s3cret")
    out = tmp_path / "client-1"
    result = runner.invoke(keys_app, ["init", "--site", "client-1", "--out", str(out), "--passphrase-env", "SITE_PASS"])
    assert result.exit_code == 0, result.output
    assert "s3cret" not in result.output and "encrypted" in result.output
    assert stat.S_IMODE((out / "signing.pem").stat().st_mode) == 0o600
    fingerprint = load_identity(out).fingerprint
    assert fingerprint in runner.invoke(keys_app, ["fingerprint", str(out)]).output
    again = runner.invoke(keys_app, ["init", "--site", "client-1", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    registry = tmp_path / "registry.json"
    bad = runner.invoke(
        keys_app, ["enroll", str(out / "identity.json"), "--registry", str(registry), "--expect", "00" * 32]
    )
    assert bad.exit_code == 2 and not registry.exists()
    result = runner.invoke(
        keys_app, ["enroll", str(out / "identity.json"), "--registry", str(registry), "--expect", fingerprint]
    )
    assert result.exit_code == 0, result.output
    assert [i.site for i in Registry.load(registry)] == ["client-1"]
    assert "client-1" in runner.invoke(keys_app, ["fingerprint", str(registry)]).output


def test_missing_passphrase_variable_is_a_sentence(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    result = runner.invoke(keys_app, ["init", "--site", "c", "--out", str(tmp_path), "--passphrase-env", "NOPE"])
    assert result.exit_code == 2 and "NOPE is unset" in result.output
