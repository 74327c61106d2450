"""A deployed site training on its own data file (``crosslm deploy site --data FILE``); no Flower processes."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from crosslm_secure.audit.base import AuditError
from crosslm_secure.audit.population import open_run
from crosslm_secure.cli import app
from crosslm_secure.config import Config, DataConfig, TaskConfig, config_to_dict, load_config
from crosslm_secure.crypto.keys import load_participant_keys
from crosslm_secure.data.site import OWN_DATA_FILE, load_site_data
from crosslm_secure.deploy.pki import PKI, SiteFiles, init_pki
from crosslm_secure.deploy.site import SiteWorker, serve_worker
from crosslm_secure.deploy.wire import ask_worker, ping_worker
from crosslm_secure.errors import DataError
from crosslm_secure.protocol.messages import EvaluateRequest
from crosslm_secure.protocol.party import party_of
from crosslm_secure.runstore import RunStore
from tests.tiny_models import tiny_bert_dir, tiny_llm_dir, write_sentiment_csv

TASK = TaskConfig()
SITES = ["client-1", "client-2", "client-3"]
NOTES = DataConfig(source="csv", text_column="note", label_column="outcome", test_fraction=0.2)
"""The job's data section: its columns apply to a site's file, its source and path do not."""


def _notes_jsonl(path: Path, rows: int) -> Path:
    """The rows of ``write_sentiment_csv`` as JSONL, labels as integer indices, plus a column the job ignores."""
    with write_sentiment_csv(path.with_suffix(".csv"), rows).open(newline="") as handle:
        records = [{"note": row["note"], "outcome": i % 3, "extra": i} for i, row in enumerate(csv.DictReader(handle))]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_site_csv_is_split_stratified_and_seeded(tmp_path: Path) -> None:
    path = write_sentiment_csv(tmp_path / "site.csv", 90)
    client = load_site_data(path, NOTES, TASK, seed=3, client_id="client-2")
    assert client.client_id == "client-2"
    assert (len(client.train), len(client.test)) == (72, 18)
    assert Counter(ex.label for ex in client.test) == {0: 6, 1: 6, 2: 6}
    assert Counter(ex.label for ex in client.train) == {0: 24, 1: 24, 2: 24}
    rows = sorted(int(ex.uid.rsplit(":", 1)[1]) for ex in client.train + client.test)
    assert rows == list(range(90))
    by_uid = {ex.uid: ex for ex in client.train + client.test}
    assert by_uid["csv:train:4"].label == 1 and by_uid["csv:train:4"].text.startswith("the drug was ")
    again = load_site_data(path, NOTES, TASK, seed=3, client_id="client-2")
    other = load_site_data(path, NOTES, TASK, seed=4, client_id="client-2")
    assert [ex.uid for ex in again.test] == [ex.uid for ex in client.test]
    assert {ex.uid for ex in other.test} != {ex.uid for ex in client.test}


def test_site_jsonl_uses_the_jobs_columns_labels_and_text_cut(tmp_path: Path) -> None:
    path = _notes_jsonl(tmp_path / "site.jsonl", 30)
    client = load_site_data(path, NOTES.model_copy(update={"max_text_chars": 16}), TASK, seed=0, client_id="client-1")
    assert (len(client.train), len(client.test)) == (24, 6)
    assert Counter(ex.label for ex in client.test) == {0: 2, 1: 2, 2: 2}
    assert all(ex.uid.startswith("jsonl:train:") for ex in client.train + client.test)
    assert max(len(ex.text) for ex in client.train) == 16
    by_row = {int(ex.uid.rsplit(":", 1)[1]): ex for ex in client.train + client.test}
    assert [by_row[i].label for i in range(6)] == [0, 1, 2, 0, 1, 2]


def test_site_datasets_folder_is_read_as_hf_disk(tmp_path: Path) -> None:
    import datasets

    folder = tmp_path / "site-ds"
    rows = {"note": [f"note {i} was good" for i in range(20)], "outcome": [TASK.labels[i % 3] for i in range(20)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder))
    client = load_site_data(folder, NOTES, TASK, seed=0, client_id="client-1")
    assert (len(client.train), len(client.test)) == (17, 3)
    assert all(ex.uid.startswith("hf_disk:") for ex in client.train)


def test_missing_site_file_names_it_and_the_option(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"site's data .*absent\.csv not found; check --data"):
        load_site_data(tmp_path / "absent.csv", NOTES, TASK, seed=0, client_id="client-1")


def test_unknown_suffix_says_which_files_are_read(tmp_path: Path) -> None:
    path = write_sentiment_csv(tmp_path / "site.xlsx", 30)
    with pytest.raises(DataError, match=r"suffix '\.xlsx'.*give a \.csv, \.jsonl file or a datasets folder"):
        load_site_data(path, NOTES, TASK, seed=0, client_id="client-1")


def test_missing_column_names_the_jobs_setting(tmp_path: Path) -> None:
    path = write_sentiment_csv(tmp_path / "site.csv", 30)
    wrong = NOTES.model_copy(update={"text_column": "review"})
    with pytest.raises(DataError, match=r"column 'review' is not in .*site\.csv; its columns are 'note', 'outcome'"):
        load_site_data(path, wrong, TASK, seed=0, client_id="client-1")


def test_label_outside_the_task_is_refused(tmp_path: Path) -> None:
    path = write_sentiment_csv(tmp_path / "site.csv", 30)
    two_labels = TaskConfig(labels=["negative", "positive"])
    with pytest.raises(DataError, match=r"label 'neutral' .* row 1 is not a task label"):
        load_site_data(path, NOTES, two_labels, seed=0, client_id="client-1")


@pytest.mark.parametrize("rows", [1, 4])
def test_too_few_records_for_dp_training_is_refused(tmp_path: Path, rows: int) -> None:
    path = write_sentiment_csv(tmp_path / "site.csv", rows)
    with pytest.raises(DataError, match=rf"has {rows} usable records, too few .* 4 training records"):
        load_site_data(path, NOTES, TASK, seed=0, client_id="client-1")


# --- the site worker -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return init_pki(tmp_path_factory.mktemp("pki"), SITES, ["127.0.0.1"])


def _job(root: Path) -> Config:
    """A tiny job whose data file is on the server only (it does not exist here)."""
    raw = {
        "run": {"name": "site-data", "rounds": 1, "progress": False, "output_dir": str(root / "runs"), "threads": 1},
        "data": {"source": "csv", "path": str(root / "server-only" / "notes.csv"), "text_column": "note"}
        | {"label_column": "outcome", "test_fraction": 0.25},
        "llm": {"model": str(tiny_llm_dir(root)), "lora": {"r": 2, "alpha": 4}},
        "slm": {"model": str(tiny_bert_dir(root)), "max_length": 16, "batch_size": 8, "private_epochs": 1},
        "feedback": {"ckks_preset": "n4096"},
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_site_worker_trains_on_its_own_file_without_the_jobs_data(tmp_path: Path, pki: PKI) -> None:
    config = _job(tmp_path)
    assert not config.data.path.exists()
    files: SiteFiles = pki.site("client-2")
    with pytest.raises(DataError, match=r"notes.csv is not a file"):  # the job's silo needs the server's file
        SiteWorker(config, files, tmp_path / "state", log=lambda _: None)

    own = write_sentiment_csv(tmp_path / "hospital.csv", 40)
    lines: list[str] = []
    worker = SiteWorker(config, files, tmp_path / "state", log=lines.append, data=own)
    expected = load_site_data(own, config.data, config.task, seed=config.run.seed, client_id="client-2")
    assert worker.client == expected
    assert (len(worker.client.train), len(worker.client.test)) == (30, 10)
    assert lines == [f"client-2: using its own data {own}: 30 train / 10 test records"]

    # A real sealed request from the server: the site builds its node on its own records and answers.
    store = RunStore.create(tmp_path / "state", "own", config.run.seed, config_to_dict(config))
    server = party_of(load_participant_keys(pki.server.keys), store.run_id, worker.registry)
    # Through the private socket, as the per-message ClientApp reaches it.
    path, listening = serve_worker(worker)
    try:
        ping_worker(path)  # what the site-name query checks before it claims the site
        reply = ask_worker(path, 1, server.seal("client-2", 0, EvaluateRequest(), ()))
    finally:
        listening.shutdown()
        listening.server_close()
    with pytest.raises(RuntimeError, match="is not running"):
        ping_worker(path)
    envelope, body = server.open(reply, expect_round=0)
    # What crosses to the server carries neither the site's records nor its file's name.
    assert b"hospital.csv" not in reply
    assert not any(ex.text.encode() in reply for ex in worker.client.train + worker.client.test)
    assert envelope.type == "evaluate.reply" and body.n == 10
    assert worker._node.trainer.num_records == 30 and worker._node.trainer.private
    # The site leaves a marker (file name and counts only), and the audits that rebuild silos refuse it.
    marker = json.loads((store.root / "clients" / "client-2" / OWN_DATA_FILE).read_text())
    assert marker == {"file": "hospital.csv", "train": 30, "test": 10}
    with pytest.raises(AuditError, match=r"client-2 trained on its own file hospital.csv.*`crosslm audit site --site"):
        open_run(store.root, None)


def test_deploy_site_cli_passes_data_to_the_worker(tmp_path: Path, pki: PKI) -> None:
    config = _job(tmp_path)
    job_file = tmp_path / "job.yaml"
    assert config.data.path is not None
    result = CliRunner().invoke(
        app,
        ["deploy", "site", "--site-dir", str(pki.site("client-1").folder), "--config", str(job_file)]
        + ["--superlink", "127.0.0.1:9", "--state-dir", str(tmp_path / "state"), "--data", str(tmp_path / "no.csv")],
    )
    assert result.exit_code == 2, result.output
    assert "no.csv not found; check --data" in " ".join(result.output.split())  # rich wraps long lines
