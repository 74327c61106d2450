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
from crosslm_secure.crypto.storage import MIN_PASSPHRASE_CHARS, SCRYPT_LOG2_N, load_secret, save_secret, seal
from crosslm_secure.errors import CryptoError

PASSPHRASE = "correct horse battery"


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
    save_participant_keys(keys, tmp_path, passphrase="correct horse", log2_n=12)
    sealed = (tmp_path / SIGNING_KEY_FILE).read_bytes()
    assert sealed[:6] == b"CLMP\x02\x0c" and b"PRIVATE KEY" not in sealed  # scrypt, cost 2^12 recorded
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
    save_secret(path, b"top secret context", passphrase=PASSPHRASE, log2_n=11)
    assert _mode(path) == 0o600 and b"top secret" not in path.read_bytes()
    assert load_secret(path, PASSPHRASE) == b"top secret context"
    with pytest.raises(CryptoError, match="wrong passphrase"):
        load_secret(path, "nope")
    with pytest.raises(CryptoError, match="passphrase"):
        load_secret(path, None)
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(CryptoError, match="tampered"):
        load_secret(path, PASSPHRASE)


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


def test_a_short_passphrase_is_refused_and_nothing_is_written(tmp_path):
    folder = tmp_path / "keys"
    with pytest.raises(CryptoError, match=f"use at least {MIN_PASSPHRASE_CHARS}"):
        save_participant_keys(ParticipantKeys.generate("client-1"), folder, passphrase="a")
    assert not folder.exists()
    with pytest.raises(CryptoError, match="use at least"):
        save_secret(tmp_path / "ctx", b"secret", passphrase="short")
    assert not (tmp_path / "ctx").exists()


def test_sealing_defaults_to_memory_hard_scrypt_and_the_file_records_its_cost():
    assert SCRYPT_LOG2_N >= 17  # 128 MiB per guess; was 2^15 and PKCS#8's PBKDF2 at 2,048 iterations for keys
    blob = seal(b"x", PASSPHRASE, log2_n=11)
    assert blob[4:6] == bytes([2, 11])
    lowered = bytearray(blob)
    lowered[5] = 10  # an attacker who lowers the recorded cost breaks the authenticated header
    path_blob = bytes(lowered)
    from crosslm_secure.crypto.storage import unseal

    with pytest.raises(CryptoError, match="wrong passphrase|tampered"):
        unseal(path_blob, PASSPHRASE)


def test_keys_encrypted_by_pkcs8_itself_still_load(tmp_path):
    from cryptography.hazmat.primitives import serialization

    keys = ParticipantKeys.generate("client-1")
    save_participant_keys(keys, tmp_path)
    for name, key in ((SIGNING_KEY_FILE, keys.signing_key), (EXCHANGE_KEY_FILE, keys.exchange_key)):
        encryption = serialization.BestAvailableEncryption(b"older passphrase")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        (tmp_path / name).write_bytes(pem)
    assert load_participant_keys(tmp_path, passphrase="older passphrase").public() == keys.public()


def test_keys_out_pointing_at_a_file_is_refused(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    with pytest.raises(CryptoError, match="is a file; pass --out a folder"):
        save_participant_keys(ParticipantKeys.generate("client-1"), target)
    assert target.read_text() == "keep me"
