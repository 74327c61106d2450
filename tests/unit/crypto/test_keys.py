from __future__ import annotations

import stat

import pytest

from crosslm_secure.crypto.keys import (
    EXCHANGE_KEY_FILE,
    SIGNING_KEY_FILE,
    ParticipantKeys,
    Registry,
    load_participant_keys,
    save_participant_keys,
)
from crosslm_secure.crypto.storage import load_secret, save_secret
from crosslm_secure.errors import CryptoError


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_are_0600_and_round_trip(tmp_path):
    keys = ParticipantKeys.generate("client-1")
    save_participant_keys(keys, tmp_path)
    for name in (SIGNING_KEY_FILE, EXCHANGE_KEY_FILE):
        assert _mode(tmp_path / name) == 0o600
        assert b"ENCRYPTED" not in (tmp_path / name).read_bytes()
    assert load_participant_keys(tmp_path).public() == keys.public()


def test_keys_are_encrypted_with_passphrase(tmp_path):
    keys = ParticipantKeys.generate("client-1")
    save_participant_keys(keys, tmp_path, passphrase="correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / SIGNING_KEY_FILE).read_bytes()
    assert _mode(tmp_path / SIGNING_KEY_FILE) == 0o600
    with pytest.raises(CryptoError, match="passphrase"):
        load_participant_keys(tmp_path)
    with pytest.raises(CryptoError, match="wrong passphrase"):
        load_participant_keys(tmp_path, passphrase="wrong")
    assert load_participant_keys(tmp_path, passphrase="correct horse").public() == keys.public()


def test_permissive_secret_file_is_refused(tmp_path):
    save_participant_keys(ParticipantKeys.generate("client-1"), tmp_path)
    (tmp_path / SIGNING_KEY_FILE).chmod(0o644)
    with pytest.raises(CryptoError, match="chmod 600"):
        load_participant_keys(tmp_path)


def test_sealed_secret_is_0600_encrypted_and_authenticated(tmp_path):
    path = tmp_path / "ckks-secret.ctx"
    save_secret(path, b"top secret context", passphrase="pw")
    assert _mode(path) == 0o600 and b"top secret" not in path.read_bytes()
    assert load_secret(path, "pw") == b"top secret context"
    with pytest.raises(CryptoError, match="wrong passphrase"):
        load_secret(path, "nope")
    with pytest.raises(CryptoError, match="passphrase"):
        load_secret(path, None)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(CryptoError, match="tampered"):
        load_secret(path, "pw")


def test_repr_hides_private_keys():
    keys = ParticipantKeys.generate("client-1")
    assert "hidden" in repr(keys) and "Private" not in repr(keys)


def test_registry_round_trip_and_conflicts(tmp_path):
    a, b = ParticipantKeys.generate("client-1"), ParticipantKeys.generate("server", "server")
    registry = Registry([a.public(), b.public()])
    registry.save(tmp_path / "registry.json")
    loaded = Registry.load(tmp_path / "registry.json")
    assert [i.site for i in loaded] == ["client-1", "server"] and [i.site for i in loaded.clients()] == ["client-1"]
    loaded.enroll(a.public())  # same keys again: fine
    with pytest.raises(CryptoError, match="already enrolled"):
        loaded.enroll(ParticipantKeys.generate("client-1").public())
    with pytest.raises(CryptoError, match="unknown signer"):
        loaded.get("client-9")


def test_altered_registry_entry_is_refused(tmp_path):
    text = Registry([ParticipantKeys.generate("client-1").public()]).to_json()
    tampered = text.replace('"role": "client"', '"role": "server"')
    with pytest.raises(CryptoError, match="fingerprint"):
        Registry.from_json(tampered)


def test_signature_verifies_only_for_its_message_and_signer():
    a, b = ParticipantKeys.generate("client-1"), ParticipantKeys.generate("client-2")
    signature = a.sign(b"hello")
    a.public().verify(signature, b"hello")
    with pytest.raises(CryptoError, match="forged"):
        a.public().verify(signature, b"hellO")
    with pytest.raises(CryptoError, match="forged"):
        b.public().verify(signature, b"hello")


def test_bad_site_name_is_refused():
    with pytest.raises(CryptoError, match="site name"):
        ParticipantKeys.generate("../etc")
