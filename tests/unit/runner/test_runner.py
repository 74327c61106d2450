"""Whole jobs on tiny models: a local model folder and a CSV dataset need only a config change;
a crashing client is excluded and the round goes on; an exhausted budget ends the run cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from crosslm_secure.audit.ledger_audit import run_ledger_audit
from crosslm_secure.audit.protocol_audit import run_protocol_audit
from crosslm_secure.cli import app
from crosslm_secure.client.node import ClientNode
from crosslm_secure.config import load_config
from crosslm_secure.errors import ModelError
from crosslm_secure.eval.llm_eval import text_label_logits
from crosslm_secure.eval.metrics import accuracy
from crosslm_secure.eval.predictions import read_predictions
from crosslm_secure.models.llm import load_llm
from crosslm_secure.models.lora import load_lora
from crosslm_secure.privacy.ledger import Ledger, ledger_path
from crosslm_secure.privacy.noise_source import SEEDED_WARNING
from crosslm_secure.runner import prepare_job, resume_job, run_job
from crosslm_secure.server.coordinator import Coordinator
from crosslm_secure.server.llm_side import LABEL_BIAS_FILE, read_label_bias
from tests.tiny_models import tiny_bert_dir, tiny_llm_dir, write_sentiment_csv

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def job_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("job")
    data = write_sentiment_csv(root / "notes.csv", 72)
    return {"root": root, "data": data, "slm": tiny_bert_dir(root), "llm": tiny_llm_dir(root)}


def write_config(files: dict[str, Path], name: str, **overrides: dict) -> Path:
    raw = {
        "run": {"name": name, "rounds": 2, "progress": False, "output_dir": str(files["root"] / "runs")},
        "data": {"source": "csv", "path": str(files["data"]), "text_column": "note", "label_column": "outcome"},
        "llm": {"model": str(files["llm"]), "lora": {"r": 2, "alpha": 4}},
        "slm": {"model": str(files["slm"]), "max_length": 16, "batch_size": 8, "private_epochs": 1},
        "generation": {"samples_per_label": 2, "max_new_tokens": 12, "min_chars": 2, "batch_size": 6},
        "tuning": {"max_length": 48, "batch_size": 4},
        "feedback": {"ckks_preset": "n4096", "threshold": 0.0},
        "eval": {"llm_examples": 6, "perplexity_chunks": 1, "perplexity_chunk_tokens": 16, "llm_max_length": 64},
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    path = files["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def only_run(files: dict[str, Path], name: str) -> Path:
    (run,) = (files["root"] / "runs").glob(f"{name}-s0-*")
    return run


def test_a_local_model_folder_and_a_csv_need_only_a_config(job_files: dict[str, Path]) -> None:
    result = CliRunner().invoke(app, ["run", str(write_config(job_files, "csvjob"))])
    assert result.exit_code == 0, result.output
    run = only_run(job_files, "csvjob")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(r["aggregator"] == "ckks" and r["active_clients"] == 3 for r in rows)
    assert all(0 < r["epsilon/client-1"] < float("inf") for r in rows[1:])
    assert rows[2]["epsilon/client-1"] > rows[1]["epsilon/client-1"]
    summary = (run / "summary.md").read_text()
    assert str(job_files["llm"]) in summary and "csv" in summary and "DP-SGD" in summary
    llm_answers = read_predictions(run / "server" / "predictions" / "round-2.jsonl")
    assert llm_answers is not None and len(llm_answers) == 6  # eval.llm_examples
    assert accuracy(llm_answers.labels, llm_answers.predicted) == pytest.approx(rows[2]["llm_accuracy"])
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    split = next(e for e in events if e["event"] == "data")["clients"]["client-1"]
    client_answers = read_predictions(run / "clients" / "client-1" / "predictions" / "round-1.jsonl")
    assert client_answers is not None and len(client_answers) == split["test"]
    assert sum(split["train_by_label"].values()) == split["train"] and list(split["train_by_label"]) == LABELS
    assert accuracy(client_answers.labels, client_answers.predicted) == pytest.approx(rows[1]["slm_accuracy/client-1"])
    kept = json.loads((run / "clients" / "client-1" / "synthetic.json").read_text())
    assert sorted(kept) == ["1", "2"], "each round's accepted samples are kept for the next private round"
    assert [len(kept[r]) for r in ("1", "2")] == [rows[1]["synthetic_accepted"], rows[2]["synthetic_accepted"]]
    assert 0 <= rows[2]["synthetic_judge_agreement_accepted"] <= 1
    shown = CliRunner().invoke(app, ["budget", "show", "--run", str(run), "--json"])
    assert shown.exit_code == 0, shown.output
    budgets = json.loads(shown.output)["clients"]
    assert [b["client_id"] for b in budgets] == ["client-1", "client-2", "client-3"]
    assert budgets[0]["epsilon_spent"] == pytest.approx(rows[2]["epsilon/client-1"])


def test_a_crashing_client_is_excluded_and_the_round_goes_on(
    job_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    score = ClientNode._score

    def crash_on_client_2(self, envelope, body):
        if self.client_id == "client-2":
            raise RuntimeError("site lost power")
        return score(self, envelope, body)

    monkeypatch.setattr(ClientNode, "_score", crash_on_client_2)
    config = load_config(write_config(job_files, "dropout", run={"rounds": 1}))
    result = run_job(config, log=lambda _: None)
    assert result.outcome.completed_rounds == 1 and result.outcome.stopped_early is None
    assert "site lost power" in result.outcome.excluded["client-2"]
    events = [e["event"] for e in result.store.events()]
    assert "aggregation_restart" in events and "revealed" in events
    final = result.store.rounds()[-1]
    assert final["active_clients"] == 2 and "slm_accuracy/client-2" not in final


@pytest.mark.parametrize("rejoin", [True, False])
def test_a_crashed_client_rejoins_at_the_next_round_unless_told_not_to(
    job_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, rejoin: bool
) -> None:
    score = ClientNode._score

    def crash_in_round_1(self, envelope, body):
        if self.client_id == "client-2" and envelope.round == 1:
            raise RuntimeError("site lost power")
        return score(self, envelope, body)

    monkeypatch.setattr(ClientNode, "_score", crash_in_round_1)
    config = load_config(write_config(job_files, f"rejoin-{rejoin}", run={"rounds": 2, "rejoin": rejoin}))
    result = run_job(config, log=lambda _: None)
    rows = result.store.rounds()
    assert [r["active_clients"] for r in rows] == [3, 2, 3 if rejoin else 2]
    events = result.store.events()
    rejoined = [e for e in events if e["event"] == "client_rejoined"]
    ceremonies = [e for e in events if e["event"] == "key_ceremony"]
    state = json.loads((result.store.root / "state.json").read_text())
    if not rejoin:
        assert rejoined == [] and len(ceremonies) == 1
        assert "slm_accuracy/client-2" not in rows[2] and state["dropped"] == ["client-2"]
        return
    assert [(e["client"], e["round"]) for e in rejoined] == [("client-2", 2)]
    assert "site lost power" in rejoined[0]["was"]
    assert "`client-2` rejoined at round 2 (it had dropped out:" in (result.store.root / "summary.md").read_text()
    # The ceremony was redone: both contexts are kept, and the protocol audit still passes.
    kept = {p.stem for p in (result.store.root / "server" / "ckks_contexts").glob("*.bin")}
    assert kept == {e["fingerprint"] for e in ceremonies} and len(kept) == 2
    audit = run_protocol_audit(result.store.root, progress=False)
    assert audit.verdict == "pass", audit.findings
    assert len(ceremonies) == 2 and ceremonies[1]["clients"] == ["client-1", "client-2", "client-3"]
    assert "slm_accuracy/client-2" in rows[2] and "client-2" not in result.outcome.excluded
    assert state["dropped"] == [] and state["active"] == ["client-1", "client-2", "client-3"]
    # It trained in round 1 before it crashed, and again after it came back; nothing twice.
    ledger = Ledger(ledger_path(result.store.root, "client-2"), client_id="client-2")
    assert sorted(e.round for e in ledger.entries if e.mechanism == "dp-sgd") == [1, 2]


def test_an_exhausted_budget_ends_the_run_with_the_reason(job_files: dict[str, Path]) -> None:
    config = load_config(
        write_config(
            job_files,
            "budget",
            run={"rounds": 3},
            privacy={"target_epsilon": None, "noise_multiplier": 0.6, "epsilon_max": 6.0},
        )
    )
    result = run_job(config, log=lambda _: None)
    stopped = result.outcome.stopped_early
    assert stopped is not None and "fewer than run.min_clients=2" in stopped
    assert "over its budget epsilon_max=6" in stopped
    assert result.outcome.completed_rounds < 3
    summary = (result.store.root / "summary.md").read_text()
    assert "The run ended early" in summary
    for row in result.store.rounds():
        assert all(v <= 6.0 for k, v in row.items() if k.startswith("epsilon/"))


def test_seeded_noise_repeats_a_private_run_and_os_noise_does_not(job_files: dict[str, Path]) -> None:
    """privacy.noise_source: seeded draws DP-SGD's and the score release's noise from the seed, so a private
    run repeats: the same SLM weights, the same metrics (those computed from the decrypted aggregate up to
    CKKS's own encryption error, about 1e-10 here); os draws fresh noise every run. The ledgers record the
    mode, the summary shows it, and the ledger audit fails the seeded run."""

    def private_run(name: str, source: str) -> tuple[Path, list[dict]]:
        path = write_config(  # two clients, five private steps and RDP keep the accounting cheap
            job_files,
            name,
            run={"rounds": 1, "seed": 3, "min_clients": 2},
            partition={"clients": 2},
            slm={"private_steps": 5},
            privacy={"noise_source": source, "accountant": "rdp"},
            feedback={"ckks_preset": "n4096", "threshold": 0.0, "noise_sigma": 0.05},
        )
        store = run_job(load_config(path), log=lambda _: None).store
        rows = [{k: v for k, v in r.items() if not k.startswith(("seconds_", "peak_"))} for r in store.rounds()]
        return store.root, rows

    def slm_weights(run: Path) -> dict[str, bytes]:
        return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("clients/*/slm/*.safetensors"))}

    (seeded_run, first), (again_run, again), (os_run, other) = (
        private_run("seeded-a", "seeded"),
        private_run("seeded-b", "seeded"),
        private_run("os-a", "os"),
    )
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys() and _differing(a, b) == {}
    assert first[1]["epsilon/client-1"] > 0, "the runs trained with DP"
    assert _differing(first[1], other[1]) != {}
    assert slm_weights(seeded_run) == slm_weights(again_run) != slm_weights(os_run)

    for run, source in ((seeded_run, "seeded"), (os_run, "os")):
        entries = [
            e for client in ("client-1", "client-2") for e in Ledger(ledger_path(run, client), client_id=client).entries
        ]
        assert {e.mechanism for e in entries} == {"dp-sgd", "gaussian-score-release"}
        assert {e.noise_source for e in entries} == {source}
        assert f"- noise source: {source}\n" in (run / "summary.md").read_text()
    audit = run_ledger_audit(seeded_run, progress=False)
    assert audit.verdict == "fail"
    assert audit.findings == [f"the ledgers of client-1, client-2: {SEEDED_WARNING}"]  # its only finding
    assert "research mode: the noise was seeded" in SEEDED_WARNING


def _differing(a: dict, b: dict) -> dict:
    """The metrics of ``a`` that differ from ``b`` (numbers beyond a relative 1e-6)."""
    return {k: (a[k], b[k]) for k in a if a[k] != (pytest.approx(b[k], rel=1e-6) if _number(b[k]) else b[k])}


def _number(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)


@pytest.mark.parametrize("method", ["standalone", "data_free_kd", "llm_zero_shot", "llm_zero_shot_calibrated"])
def test_baselines_run_on_the_same_code_path(job_files: dict[str, Path], method: str) -> None:
    path = write_config(job_files, f"base-{method}", run={"rounds": 1, "method": method})
    result = run_job(load_config(path), log=lambda _: None)
    rows = result.store.rounds()
    events = [e["event"] for e in result.store.events()]
    assert all(r["method"] == method for r in rows)
    if method.startswith("llm_zero_shot"):
        assert [r["round"] for r in rows] == [0] and 0 <= rows[0]["llm_macro_f1"] <= 1
        return
    assert [r["round"] for r in rows] == [0, 1]
    assert "key_ceremony" not in events and "revealed" not in events  # no feedback is aggregated
    assert rows[1]["llm_accuracy"] == rows[0]["llm_accuracy"]  # the LLM stays untuned
    assert not (result.store.root / "llm" / "round-1").exists()
    if method == "data_free_kd":
        assert rows[1]["synthetic_accepted"] == rows[1]["synthetic_generated"] > 0  # unfiltered
    else:
        assert "synthetic_generated" not in rows[1]


@pytest.mark.parametrize(
    ("timing", "samples_first"),
    [("next_round", [False, False]), ("same_round", [True, True]), ("same_round_after_first", [False, True])],
)
def test_same_round_timing_sends_the_samples_before_the_round_trains(
    job_files: dict[str, Path], timing: str, samples_first: list[bool]
) -> None:
    path = write_config(job_files, f"timing-{timing}", run={"rounds": 2, "synthetic_timing": timing})
    result = run_job(load_config(path), log=lambda _: None)
    rows = [json.loads(line) for line in (result.store.root / "transcript.jsonl").read_text().splitlines()]
    first = []
    for round_index in (1, 2):
        sent = [row["type"] for row in rows if row["round"] == round_index and row["status"] == "sent"]
        first.append(sent.index("enhance.request") < sent.index("train.request"))
    assert first == samples_first, timing
    assert [r["round"] for r in result.store.rounds()] == [0, 1, 2]


def test_a_crash_mid_run_resumes_from_the_last_completed_round(
    job_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    round_ = Coordinator._round

    def crash_in_round_2(self, round_index):
        if round_index == 2:
            self.members.exclude("client-3", "answered with a bad signature")  # misbehaved: must never rejoin
            raise KeyboardInterrupt  # the operator stops it, or the machine dies
        return round_(self, round_index)

    monkeypatch.setattr(Coordinator, "_round", crash_in_round_2)
    config = load_config(write_config(job_files, "crash"))
    with pytest.raises(KeyboardInterrupt):
        run_job(config, log=lambda _: None)
    run = only_run(job_files, "crash")
    before = Ledger(ledger_path(run, "client-1"), client_id="client-1")
    assert [r["round"] for r in json_rows(run)] == [0, 1]
    monkeypatch.undo()

    saved = json.loads((run / "state.json").read_text())
    assert saved["completed_round"] == 1 and "client-3" in saved["excluded"] and saved["dropped"] == []

    result = resume_job(run, log=lambda _: None)
    assert result.outcome.completed_rounds == 2
    assert [r["round"] for r in json_rows(run)] == [0, 1, 2]
    assert json_rows(run)[2]["active_clients"] == 2 and "bad signature" in result.outcome.excluded["client-3"]
    assert not any(e["event"] == "client_rejoined" for e in result.store.events())
    after = Ledger(ledger_path(run, "client-1"), client_id="client-1")
    assert after.entries[: len(before)] == before.entries  # nothing rewritten
    keys = [(e.round, e.mechanism, e.details.get("attempt", 0)) for e in after.entries]
    assert len(keys) == len(set(keys))  # nothing charged twice
    assert {e.round for e in after.entries if e.mechanism == "dp-sgd"} == {1, 2}


def test_a_tuned_run_fits_its_label_bias_keeps_it_with_the_adapter_and_answers_with_it(
    job_files: dict[str, Path],
) -> None:
    """tuning.label_bias: fit writes llm/round-N/label_bias.json beside the adapter, and the round's
    recorded answers are the adapter's label logits plus those offsets; none writes no offsets."""
    config = load_config(write_config(job_files, "bias-fit", run={"rounds": 1}))
    store = run_job(config, log=lambda _: None).store
    saved = json.loads((store.root / "llm" / "round-1" / LABEL_BIAS_FILE).read_text())["bias"]
    assert sorted(saved) == sorted(LABELS) and sum(saved.values()) == pytest.approx(0, abs=1e-9)
    bias = read_label_bias(store.root / "llm" / "round-1", LABELS)
    assert bias == [saved[label] for label in LABELS]
    (event,) = [e for e in store.events() if e["event"] == "llm_label_bias"]
    assert event["round"] == 1 and event["bias"] == saved
    assert event["macro_f1"] == store.rounds()[1]["llm_macro_f1"]

    llm = load_llm(config.llm, torch.device("cpu"))
    llm.model = load_lora(llm.model, store.root / "llm" / "round-1")
    test = prepare_job(config, None).split.llm_test[: config.eval.llm_examples]
    logits = text_label_logits(llm, [e.text for e in test], config.task, config.eval)
    answers = read_predictions(store.root / "server" / "predictions" / "round-1.jsonl")
    assert list(answers.predicted) == (logits + torch.tensor(bias)).argmax(dim=1).tolist()
    assert list(answers.predicted) != logits.argmax(dim=1).tolist(), "this seed's offsets change an answer"

    raw_config = write_config(job_files, "bias-none", run={"rounds": 1}, tuning={"label_bias": "none"})
    raw = run_job(load_config(raw_config), log=lambda _: None)
    assert not (raw.store.root / "llm" / "round-1" / LABEL_BIAS_FILE).exists()
    assert not any(e["event"] == "llm_label_bias" for e in raw.store.events())
    assert list(read_predictions(raw.store.root / "server" / "predictions" / "round-1.jsonl").predicted) == (
        logits.argmax(dim=1).tolist()
    ), "the same seed tunes the same adapter; without offsets its raw answers are recorded"


@pytest.mark.parametrize(
    "content", ['{"bias": {"a": 0, "b": 0, "c": 0}}', "{not json", '{"bias": [0, 0, 0]}', '{"bias": {"negative": 0}}']
)
def test_label_offsets_that_do_not_fit_the_task_are_refused_in_one_sentence(tmp_path: Path, content: str) -> None:
    (tmp_path / LABEL_BIAS_FILE).write_text(content)
    with pytest.raises(ModelError, match=r"label_bias\.json is corrupt or was fitted for other labels; resume from"):
        read_label_bias(tmp_path, LABELS)
    assert read_label_bias(tmp_path / "absent", LABELS) is None


def json_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_repeated_cell_reuses_round_zero_llm_results_from_the_cache(
    job_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 0 of the same base LLM on the same evaluator set is computed once; changed settings
    elsewhere (here the SLM learning rate) do not matter; with the cache off the numbers are the same."""

    def round_zero(name: str, lr: float) -> tuple[dict, list[dict]]:
        path = write_config(job_files, name, run={"rounds": 0}, slm={"learning_rate": lr})
        store = run_job(load_config(path), log=lambda _: None).store
        row = store.rounds()[0]
        llm = {k: row[k] for k in ("llm_accuracy", "llm_macro_f1", "llm_perplexity")}
        return llm, [e for e in store.events() if e["event"] == "llm_eval_cache"]

    monkeypatch.setenv("CROSSLM_CACHE_DIR", str(tmp_path / "cache"))
    first, first_events = round_zero("cache-a", 0.01)
    second, second_events = round_zero("cache-b", 0.02)
    assert [(e["hits"], e["misses"]) for e in first_events] == [(0, 2)]
    assert [(e["hits"], e["misses"]) for e in second_events] == [(2, 0)]
    assert second == first
    monkeypatch.setenv("CROSSLM_CACHE_DIR", "off")
    fresh, fresh_events = round_zero("cache-off", 0.02)
    assert fresh_events == []
    assert fresh == pytest.approx(first, abs=1e-9)
