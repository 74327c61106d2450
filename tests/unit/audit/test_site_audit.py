"""A site audits its own model on its own records and signs the result (``crosslm audit site``).

The site is laid out from a finished tiny DP run: its keys, a data.csv from which the site's
own split gives exactly the records client-1 trained on (and held-out records no one trained
on), and client-1's state copied under ``state/<run-id>/``. Real training, real Opacus, real
attacks on tiny models.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from crosslm_secure.audit.population import open_run
from crosslm_secure.audit.site_audit import DOCUMENT_KIND, SCHEMA, model_sha256, run_site_audit
from crosslm_secure.audit.site_ledger import first_difference
from crosslm_secure.cli import app
from crosslm_secure.crypto.keys import ParticipantKeys, Registry, save_participant_keys
from crosslm_secure.crypto.signed import verify_document
from crosslm_secure.data.partition import stratified_mask
from crosslm_secure.data.records import Example
from crosslm_secure.data.site import OWN_DATA_FILE, load_site_data
from crosslm_secure.parties import PartyFolder
from crosslm_secure.runstore import RunStore

SITE = "client-1"
MIA_MAX_AUC = 0.99
MIA_LIMIT = f"audit.mia_max_auc={MIA_MAX_AUC}"
"""The MIA limit these site audits run at. This site's 59 members and 28 held-out non-members give
AUC intervals 0.27-0.39 wide (LiRA the widest), and an interval wider than the gap between chance
and the limit is "not resolvable": at 0.9 (0.4 above chance) a fresh-clone run drew one."""


def _site_rows(train: list[Example], spare: list[Example], fraction: float, seed: int) -> list[Example]:
    """Records in the order that makes the site's seeded stratified hold-out pick exactly ``spare``'s part.

    Per label, ``h`` held-out records with ``round(fraction * (t + h)) == h`` for the label's ``t``
    training records; the hold-out mask depends only on the labels, so it is computed first and
    the held-out positions are filled with never-trained records.
    """
    train_by, spare_by = _by_label(train), _by_label(spare)
    held_count = {}
    for label, records in train_by.items():
        t = len(records)
        held_count[label] = next(h for h in range(1, len(spare_by[label]) + 1) if round(fraction * (t + h)) == h)
    labels = np.array([label for label in sorted(train_by) for _ in range(len(train_by[label]) + held_count[label])])
    mask = stratified_mask(labels, fraction, np.random.default_rng([seed, 1]))
    pools = {label: (list(train_by[label]), spare_by[label][: held_count[label]]) for label in train_by}
    return [pools[label][1].pop() if held else pools[label][0].pop() for label, held in zip(labels, mask, strict=True)]


def _by_label(records: list[Example]) -> dict[int, list[Example]]:
    out: dict[int, list[Example]] = {}
    for record in records:
        out.setdefault(record.label, []).append(record)
    return out


def _lay_out_site(run_dir: Path, root: Path, name: str = SITE) -> tuple[PartyFolder, ParticipantKeys]:
    """``root/<name>/``: keys, data.csv and client-1's state for the run."""
    run = open_run(run_dir, None)
    config = run.config
    party = PartyFolder(root / name)
    keys = ParticipantKeys.generate(name)
    save_participant_keys(keys, party.keys)
    Registry([keys.public()]).save(party.registry)  # the registry the coordinator sent it
    rows = _site_rows(list(run.client(SITE).train), run.population, config.data.test_fraction, config.run.seed)
    with (party.root / "data.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([config.data.text_column, config.data.label_column])
        writer.writerows([ex.text, config.task.labels[ex.label]] for ex in rows)
    state = RunStore(party.state_root(RunStore(run_dir).run_id))
    shutil.copytree(RunStore(run_dir).client_dir(SITE), state.client_dir(name))
    return party, keys


@pytest.fixture
def site(dp_run: Path, tmp_path: Path) -> tuple[PartyFolder, ParticipantKeys]:
    return _lay_out_site(dp_run, tmp_path / "sites")


def _texts(records: list[Example]) -> list[tuple[str, int]]:
    return sorted((ex.text, ex.label) for ex in records)


def _invoke(party: PartyFolder, run_dir: Path, *settings: str, as_json: bool = False):  # type: ignore[no-untyped-def]
    words = ["audit", "site", "--site", str(party.root), "--run", str(run_dir), "--no-progress"]
    words += ["--json"] if as_json else []
    for item in settings:
        words += ["--set", item]
    return CliRunner().invoke(app, words)


def test_the_site_file_gives_the_records_the_client_trained_on(dp_run: Path, site) -> None:
    party, _ = site
    run = open_run(dp_run, None)
    own = load_site_data(party.data(), run.config.data, run.config.task, seed=run.config.run.seed, client_id=SITE)
    assert _texts(own.train) == _texts(run.client(SITE).train)
    trained = {ex.text for client in run.split.clients for ex in client.train}
    assert not trained & {ex.text for ex in own.test}


def test_an_honest_site_writes_a_signed_result_that_verifies(dp_run: Path, site) -> None:
    party, keys = site
    done = _invoke(party, dp_run, MIA_LIMIT)
    assert done.exit_code == 0, done.output
    path = party.audit_file(RunStore(dp_run).run_id)
    document = json.loads(path.read_text())
    body = verify_document(document, DOCUMENT_KIND, Registry([keys.public()]), where=str(path))
    assert set(body) == {"schema", "run_id", "site", "verdict", "ledger", "checks", "model_sha256", "created"}
    assert (body["schema"], body["run_id"], body["site"], body["verdict"]) == (
        SCHEMA,
        RunStore(dp_run).run_id,
        SITE,
        "pass",
    )
    server_copy = [json.loads(line) for line in RunStore(dp_run).ledger_path(SITE).read_text().splitlines()]
    assert body["ledger"] == {
        "entries": len(server_copy),
        "last_hash": server_copy[-1]["hash"],
        "matches_server_copy": True,
    }
    assert set(body["checks"]) == {"ledger", "mia", "dp"}
    assert all(check["verdict"] == "pass" and check["summary"] for check in body["checks"].values())
    mia = body["checks"]["mia"]
    run = open_run(dp_run, None)
    own = load_site_data(party.data(), run.config.data, run.config.task, seed=run.config.run.seed, client_id=SITE)
    assert (mia["members"], mia["non_members"]) == (len(run.client(SITE).train), len(own.test) // 2)
    assert 0 <= mia["loss_auc_low"] <= mia["loss_auc_high"] <= MIA_MAX_AUC and "lira_auc" in mia and "rmia_auc" in mia
    assert body["checks"]["dp"]["mode"] == "white-box" and body["checks"]["dp"]["claimed_epsilon"] == pytest.approx(
        1, abs=0.05
    )
    assert body["model_sha256"] == model_sha256(RunStore(party.state_root(body["run_id"])).slm_dir(SITE))
    # No record, nor its text, leaves the site.
    text = path.read_text()
    with party.data().open() as handle:
        assert not [row for row in csv.DictReader(handle) if row["note"] in text]


def test_a_server_copy_that_differs_fails_naming_the_entry(dp_run: Path, tmp_path: Path) -> None:
    run_copy = tmp_path / dp_run.name
    shutil.copytree(dp_run, run_copy, ignore=shutil.ignore_patterns("audit"))
    party, _ = _lay_out_site(run_copy, tmp_path / "sites")
    ledger = RunStore(run_copy).ledger_path(SITE)
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    entries[0]["noise_multiplier"] *= 2  # the server's copy claims more noise than the site recorded
    ledger.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    audit = run_site_audit(party.root, run_copy, [MIA_LIMIT], progress=False)
    assert audit.verdict == "fail" and audit.body["ledger"]["matches_server_copy"] is False
    check = audit.body["checks"]["ledger"]
    assert check["verdict"] == "fail"
    assert f"entry 0 (round {entries[0]['round']}, dp-sgd) differs" in check["summary"]
    assert "(noise_multiplier)" in check["summary"]
    assert json.loads(audit.path.read_text())["body"]["verdict"] == "fail"


def test_too_few_held_out_records_are_not_resolvable_not_a_pass(dp_run: Path, site) -> None:
    party, _ = site
    done = _invoke(party, dp_run, "audit.population_records=10", as_json=True)
    assert done.exit_code == 1, done.output
    out = json.loads(done.stdout)  # --json: the result on stdout, the per-check lines on stderr
    assert (out["verdict"], out["exit_code"], out["overrides"]) == (
        "not resolvable",
        1,
        ["audit.population_records=10"],
    )
    assert {c["check"]: c["verdict"] for c in out["checks"]}["mia"] == "not resolvable" and "mia: " in done.stderr
    assert out["signed_result"] == str(party.audit_file(RunStore(dp_run).run_id))
    body = json.loads(party.audit_file(RunStore(dp_run).run_id).read_text())["body"]
    assert body["checks"]["mia"]["verdict"] == "not resolvable" and body["checks"]["mia"]["non_members"] == 5
    summary = body["checks"]["mia"]["summary"]
    assert "the AUC intervals cannot decide" in summary and "fewer than 10 a side" in summary
    assert body["verdict"] == "not resolvable"


def test_a_dp_audit_with_too_few_canaries_to_show_the_claim_is_not_resolvable(dp_run: Path, site) -> None:
    party, _ = site
    audit = run_site_audit(party.root, dp_run, [MIA_LIMIT, "audit.canaries=10"], progress=False)
    dp = audit.body["checks"]["dp"]
    assert (dp["canaries"], dp["guesses"]) == (10, 2)  # all 2 guesses right cannot show epsilon 1
    assert dp["verdict"] == "not resolvable" and "too few canaries to decide" in dp["summary"]
    assert audit.verdict == "not resolvable"


def _no_keys(party: PartyFolder, run_dir: Path) -> None:
    shutil.rmtree(party.keys)


def _keys_of_another_site(party: PartyFolder, run_dir: Path) -> None:
    shutil.rmtree(party.keys)
    save_participant_keys(ParticipantKeys.generate("client-2"), party.keys)


def _other_columns(party: PartyFolder, run_dir: Path) -> None:
    text = party.data().read_text()
    party.data().write_text(text.replace("note,outcome", "text,outcome", 1))


def _other_labels(party: PartyFolder, run_dir: Path) -> None:
    text = party.data().read_text()
    party.data().write_text(text.replace(",neutral", ",unsure"))


def _no_state(party: PartyFolder, run_dir: Path) -> None:
    shutil.rmtree(party.state_root(RunStore(run_dir).run_id))


def _other_file_than_trained_on(party: PartyFolder, run_dir: Path) -> None:
    client = RunStore(party.state_root(RunStore(run_dir).run_id)).client_dir(SITE)
    (client / OWN_DATA_FILE).write_text(json.dumps({"file": "data.csv", "train": 500, "test": 100}))


@pytest.mark.parametrize(
    ("break_site", "said"),
    [
        (_no_keys, r"sites: .*client-1 has no keys; .*crosslm keys init --site client-1"),
        (_keys_of_another_site, r"keys .*holds the keys of client-2, not of client-1; put client-1's own keys"),
        (_other_columns, r"column 'note' is not in .*data.csv.*the site's file must have the job's columns 'note'"),
        (_other_labels, r"label 'unsure' in .*data.csv row \d+ is not a task label.*must .* labels negative, neutral"),
        (_no_state, r"state/.* holds no state of client-1 for run .*; pass a run this site took part in"),
        (
            _other_file_than_trained_on,
            r"data.csv gives \d+ training .* but the site trained on 500 .*; restore the file",
        ),
    ],
    ids=["no-keys", "another-sites-keys", "other-columns", "other-labels", "no-state", "other-file"],
)
def test_bad_input_is_one_sentence_and_writes_nothing(dp_run: Path, site, break_site, said: str) -> None:
    party, _ = site
    break_site(party, dp_run)
    done = _invoke(party, dp_run)
    assert done.exit_code == 2, done.output
    message = done.stderr.strip()
    assert message.startswith("error: audit site: ") and len(message.splitlines()) == 1, message
    assert re.search(said, message), message
    assert not party.audit_dir.exists()


def test_a_site_that_is_not_a_client_of_the_run_is_refused(dp_run: Path, tmp_path: Path) -> None:
    party, _ = _lay_out_site(dp_run, tmp_path / "sites", name="client-9")
    done = _invoke(party, dp_run, as_json=True)
    assert done.exit_code == 2
    assert "client-9 is not a client of run" in done.stderr and "pass the run this site took part in" in done.stderr
    assert json.loads(done.stdout)["exit_code"] == 2 and "client-9" in json.loads(done.stdout)["error"]
    assert not party.audit_dir.exists()


def test_the_sides_are_disjoint(dp_run: Path, site) -> None:
    from crosslm_secure.audit.site_run import open_site_run

    party, _ = site
    opened = open_site_run(party.root, dp_run)
    members = Counter(ex.uid for ex in opened.audit.client(SITE).train)
    others = [ex.uid for ex in opened.audit.non_members + opened.audit.reference_pool]
    assert not set(members) & set(others) and len(set(others)) == len(others)
    assert not {ex.uid for ex in opened.audit.non_members} & {ex.uid for ex in opened.audit.reference_pool}


_OPENED: list[str] | None = None
"""Paths opened while a test records them (a process-wide audit hook can only be added, never removed)."""


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_record_open)


def test_the_site_opens_only_its_own_folder_and_its_ledger_copy_in_the_run(dp_run: Path, tmp_path: Path) -> None:
    global _OPENED
    run_copy = tmp_path / dp_run.name
    shutil.copytree(dp_run, run_copy, ignore=shutil.ignore_patterns("audit"))
    party, _ = _lay_out_site(run_copy, tmp_path / "sites")
    other, _ = _lay_out_site(run_copy, tmp_path / "sites", name="client-2")
    job_data = Path(open_run(run_copy, None).config.data.path).resolve()
    _OPENED = []
    try:
        audit = run_site_audit(party.root, run_copy, [MIA_LIMIT], progress=False)
    finally:
        opened, _OPENED = _OPENED, None
    assert audit.verdict == "pass"
    in_run = {Path(p).relative_to(run_copy.resolve()).as_posix() for p in opened if Path(p).is_relative_to(run_copy)}
    assert in_run == {"config.yaml", "run.json", "clients/client-1/ledger.jsonl"}, in_run
    assert not [p for p in opened if Path(p).is_relative_to(other.root)]
    assert str(job_data) not in opened  # the site never reads the job's data file: it has its own
    assert any(Path(p).is_relative_to(party.root) for p in opened)


def test_the_first_difference_names_a_missing_or_an_extra_entry(tmp_path: Path) -> None:
    own = [
        {"seq": 0, "round": 1, "mechanism": "dp-sgd", "hash": "a"},
        {"seq": 1, "round": 1, "mechanism": "score", "hash": "b"},
    ]
    copy = tmp_path / "ledger.jsonl"
    assert first_difference(own, own, copy) == ""
    assert first_difference(own, own[:1], copy) == f"entry 1 (round 1, score) is missing from the server's copy {copy}"
    extra = [*own, {"seq": 2, "round": 2, "mechanism": "dp-sgd", "hash": "c"}]
    assert first_difference(own, extra, copy) == (
        f"the server's copy {copy} has an entry 2 (round 2, dp-sgd) the site never wrote"
    )
