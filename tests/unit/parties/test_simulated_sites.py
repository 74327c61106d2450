"""``crosslm sites split`` and key enrolment: private keys stay in their party's folder."""

from __future__ import annotations

import stat
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crosslm_secure.cli import app
from crosslm_secure.crypto.keys import Registry, load_identity
from crosslm_secure.errors import CrossLMError
from crosslm_secure.simulate import split_into_sites
from tests.unit.parties.pilot_job import tiny_job

PRIVATE = {"signing.pem", "exchange.pem", "auth_key", "ca.key", "superlink.key"}


@pytest.fixture(scope="module")
def sites(job_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split") / "sites"
    split_into_sites(tiny_job(job_root, "split"), out)
    return out


def test_every_private_key_lies_in_its_own_party_s_keys_or_tls_folder(sites: Path) -> None:
    private = [p for p in sites.rglob("*") if p.name in PRIVATE]
    assert private, "no private key files found"
    for path in private:
        party, folder = path.relative_to(sites).parts[:2]
        assert folder in ("keys", "tls"), path
        assert folder == "keys" or party == "server", path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        if path.name in ("signing.pem", "exchange.pem"):
            assert load_identity(path.parent).site == party


def test_the_registry_enrols_every_party_and_each_party_holds_a_copy(sites: Path) -> None:
    registry = Registry.load(sites / "server" / "registry.json")
    assert [i.site for i in registry] == ["client-1", "client-2", "client-3", "server"]
    for identity in registry:
        assert load_identity(sites / identity.site / "keys") == identity
    for party in ("client-1", "client-2", "client-3", "reviewer"):
        assert list(Registry.load(sites / party / "registry.json")) == list(registry)
    for site in ("client-1", "client-2", "client-3"):
        assert (sites / "server" / "supernodes" / f"{site}.pub").read_bytes() == (
            sites / site / "keys" / "auth_key.pub"
        ).read_bytes()


def test_the_evaluator_set_and_the_sites_records_partition_the_job_s_data(job_root: Path, sites: Path) -> None:
    def rows(path: Path) -> Counter[str]:
        return Counter(path.read_text().splitlines()[1:])

    evaluator = rows(sites / "server" / "eval.csv")
    records = [rows(sites / site / "data.csv") for site in ("client-1", "client-2", "client-3")]
    assert evaluator and all(records)
    held = evaluator + records[0] + records[1] + records[2]
    source = rows(job_root / "notes.csv")
    assert held <= source and held.total() <= source.total()


def test_a_folder_that_is_not_empty_is_refused(job_root: Path, sites: Path) -> None:
    with pytest.raises(CrossLMError, match="is not empty"):
        split_into_sites(tiny_job(job_root, "split"), sites)


def test_enrolment_refuses_a_fingerprint_that_differs_from_the_one_read_out_of_band(tmp_path: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["keys", "init", "--site", "client-7", "--out", str(tmp_path / "client-7" / "keys")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "client-7" / "keys" / "auth_key.pub").is_file()
    fingerprint = load_identity(tmp_path / "client-7" / "keys").fingerprint
    registry = tmp_path / "server" / "registry.json"
    wrong = fingerprint[:-4] + ("0000" if not fingerprint.endswith("0000") else "1111")
    done = runner.invoke(
        app, ["keys", "enroll", str(tmp_path / "client-7" / "keys"), "--registry", str(registry), "--expect", wrong]
    )
    assert done.exit_code != 0 and "do not enrol it" in " ".join(done.output.split())
    assert not registry.exists()
    done = runner.invoke(
        app,
        [
            "keys",
            "enroll",
            str(tmp_path / "client-7" / "keys" / "identity.json"),
            "--registry",
            str(registry),
            "--expect",
            fingerprint.upper(),
        ],
    )
    assert done.exit_code == 0, done.output
    assert "client-7" in Registry.load(registry)
    assert (tmp_path / "server" / "supernodes" / "client-7.pub").is_file()


def test_a_lost_key_is_removed_then_the_new_identity_enrolled(tmp_path: Path) -> None:
    runner = CliRunner()
    registry = tmp_path / "registry.json"
    for attempt in ("old", "new"):
        keys = tmp_path / attempt / "keys"
        assert runner.invoke(app, ["keys", "init", "--site", "client-2", "--out", str(keys)]).exit_code == 0
        done = runner.invoke(app, ["keys", "enroll", str(keys), "--registry", str(registry)])
        if attempt == "old":
            assert done.exit_code == 0, done.output
    assert done.exit_code != 0 and "already enrolled" in " ".join(done.output.split())
    done = runner.invoke(app, ["keys", "remove", "client-2", "--registry", str(registry)])
    assert done.exit_code == 0, done.output
    assert "client-2" not in Registry.load(registry)
    assert (
        runner.invoke(app, ["keys", "enroll", str(tmp_path / "new" / "keys"), "--registry", str(registry)]).exit_code
        == 0
    )
    assert Registry.load(registry).get("client-2") == load_identity(tmp_path / "new" / "keys")
    done = runner.invoke(app, ["keys", "remove", "client-9", "--registry", str(registry)])
    assert done.exit_code != 0 and "'client-9' is not enrolled" in " ".join(done.output.split())
