"""The main job end to end on the real embedded defaults (SmolLM2, MiniLM, drug reviews), at minimal size."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from crosslm_secure.config import config_from_dict
from crosslm_secure.crypto.ckks import ScoreContext
from crosslm_secure.runner import resume_job, run_job

pytestmark = pytest.mark.e2e

MINIMAL = {
    "run": {"name": "e2e", "rounds": 1, "progress": False},
    "data": {"max_train_records": 90, "max_text_chars": 300},
    "generation": {"samples_per_label": 3, "max_new_tokens": 24, "batch_size": 9},
    "slm": {"max_length": 48, "private_epochs": 1, "batch_size": 16},
    "tuning": {"max_length": 64},
    "eval": {"llm_examples": 12, "perplexity_chunks": 2, "perplexity_chunk_tokens": 64, "llm_max_length": 96},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    raw = {**MINIMAL, "run": {**MINIMAL["run"], "output_dir": str(tmp_path_factory.mktemp("runs"))}}
    return run_job(config_from_dict(raw), log=lambda _: None)


def test_the_round_ran_and_every_metric_was_recorded(finished_run) -> None:
    store, outcome = finished_run.store, finished_run.outcome
    assert outcome.completed_rounds == 1 and outcome.stopped_early is None
    rows = list(csv.DictReader((store.root / "metrics.csv").open()))
    assert [row["round"] for row in rows] == ["0", "1"]
    final = rows[-1]
    for column in (
        "slm_accuracy_mean",
        "slm_macro_f1_mean",
        "slm_accuracy/client-1",
        "llm_accuracy",
        "llm_perplexity",
        "synthetic_generated",
        "synthetic_accepted",
        "synthetic_mean_score",
        "synthetic_label_agreement",
        "seconds_generate",
        "seconds_score",
        "seconds_aggregate",
        "seconds_reveal",
        "seconds_tune_llm",
        "seconds_train_private",
        "seconds_evaluate_llm",
        "peak_rss_mb",
        "epsilon/client-1",
    ):
        assert final.get(column) not in (None, ""), column
    assert 0 < float(final["synthetic_generated"]) <= 9
    assert 0 <= float(final["synthetic_mean_score"]) <= 1
    assert float(final["llm_perplexity"]) > 1


def test_artefacts_and_summary(finished_run) -> None:
    root = finished_run.store.root
    for name in ("config.yaml", "events.jsonl", "transcript.jsonl", "metrics.jsonl", "summary.md", "state.json"):
        assert (root / name).is_file(), name
    assert (root / "plots" / "metrics.png").stat().st_size > 10_000
    assert (root / "llm" / "round-1" / "adapter_model.safetensors").is_file()
    for client in ("client-1", "client-2", "client-3"):
        assert (root / "clients" / client / "slm" / "config.json").is_file()
    summary = (root / "summary.md").read_text()
    for needle in (
        "## Protections",
        "`ckks`",
        "epsilon",
        "LLM general perplexity",
        "Mean client SLM accuracy",
        "UCI Drug Review dataset",
        "## Wall time per phase",
    ):
        assert needle in summary, needle


def test_the_server_holds_only_public_key_material(finished_run) -> None:
    root = finished_run.store.root
    context = ScoreContext.from_bytes((root / "server" / "ckks_public_context.bin").read_bytes())
    assert context.is_public and not context.has_secret_key and not context.has_galois_keys
    transcript = (root / "transcript.jsonl").read_text()
    assert '"type": "score.reply"' in transcript and '"type": "keys.dealt"' in transcript
    assert "text" not in transcript  # types, sizes and hashes only


def test_resume_after_the_last_round_changes_nothing(finished_run) -> None:
    """A resumed run picks up after its last completed round; here nothing is left to do."""
    before = (finished_run.store.root / "metrics.jsonl").read_text()
    result = resume_job(finished_run.store.root, log=lambda _: None)
    assert result.outcome.completed_rounds == 1
    assert (finished_run.store.root / "metrics.jsonl").read_text() == before


def test_bad_model_folder_is_one_sentence(tmp_path: Path) -> None:
    from crosslm_secure.errors import ModelError

    raw = {**MINIMAL, "run": {**MINIMAL["run"], "output_dir": str(tmp_path)}, "llm": {"model": str(tmp_path / "nope")}}
    with pytest.raises(ModelError, match="not found; set llm.model"):
        run_job(config_from_dict(raw), log=lambda _: None)
