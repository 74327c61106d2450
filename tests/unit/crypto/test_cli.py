from __future__ import annotations

import stat

from typer.testing import CliRunner

from crosslm_secure.crypto.cli import keys_app
from crosslm_secure.crypto.keys import Registry, load_identity

runner = CliRunner()


def test_init_fingerprint_enroll(tmp_path, monkeypatch):
    monkeypatch.setenv("SITE_PASS", "s3cret horse battery")
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


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_weak_passphrase_is_one_sentence_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SITE_PASS", "a")
    out = tmp_path / "keys"
    line = _one_line_error(
        runner.invoke(keys_app, ["init", "--site", "c", "--out", str(out), "--passphrase-env", "SITE_PASS"])
    )
    assert "use at least 12" in line and not out.exists()


def test_init_out_pointing_at_a_file_is_one_sentence(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep")
    line = _one_line_error(runner.invoke(keys_app, ["init", "--site", "c", "--out", str(target)]))
    assert "is a file" in line and target.read_text() == "keep"


def test_fingerprint_and_enroll_refuse_binary_and_malformed_files_in_one_sentence(tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00\x80" * 64)
    assert "not UTF-8" in _one_line_error(runner.invoke(keys_app, ["fingerprint", str(binary)]))
    assert "not UTF-8" in _one_line_error(runner.invoke(keys_app, ["enroll", str(binary), "--registry", "r.json"]))
    out = tmp_path / "client-1"
    assert runner.invoke(keys_app, ["init", "--site", "client-1", "--out", str(out)]).exit_code == 0
    for text in ('{"participants": 7}', '{"participants": [1, 2]}', "[" * 5000, '{"participants": "abc"}'):
        registry = tmp_path / "registry.json"
        registry.write_text(text)
        line = _one_line_error(runner.invoke(keys_app, ["enroll", str(out), "--registry", str(registry)]))
        assert "not a crosslm registry" in line
        assert registry.read_text() == text
        if '"participants"' in text:
            assert "not a crosslm registry" in _one_line_error(runner.invoke(keys_app, ["fingerprint", str(registry)]))
    registry.write_bytes(b"\xff" + b'"participants"')
    assert "not UTF-8" in _one_line_error(runner.invoke(keys_app, ["fingerprint", str(registry)]))
