"""Finished tiny runs for the privacy audits: a leaky one and an honest DP one (module-shared)."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import yaml

from crosslm_secure.config import load_config
from crosslm_secure.crypto.keys import ParticipantKeys, PublicIdentity, Registry
from crosslm_secure.protocol.party import in_memory_identities
from crosslm_secure.runner import run_job
from crosslm_secure.runstore import RunStore
from tests.tiny_models import FILLER_WORDS, SENTIMENT_WORDS, tiny_bert_dir, tiny_llm_dir, write_sentiment_csv
from tests.unit.parties.pilot_job import TINY_AUDIT_CONFIDENCE

LABELS = ["negative", "neutral", "positive"]
WORDS = sorted({w for ws in SENTIMENT_WORDS.values() for w in ws} | set(FILLER_WORDS))


def _write_notes(path: Path, rows: int, seed: int) -> None:
    """Short notes whose labels are coin flips: a model can only get members right by memorizing."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["note", "outcome"])
        for _ in range(rows):
            writer.writerow([" ".join(rng.choice(WORDS) for _ in range(6)), rng.choice(LABELS)])


def _config(root: Path, files: dict[str, Path], name: str, **sections: dict) -> Path:
    raw = {
        "run": {"name": name, "rounds": 1, "progress": False, "output_dir": str(root / "runs"), "method": "standalone"},
        "data": {
            "source": "csv",
            "path": str(files["data"]),
            "text_column": "note",
            "label_column": "outcome",
            "test_fraction": 0.5,
        },
        "partition": {"clients": 2},
        "llm": {"model": str(files["llm"]), "lora": {"r": 2, "alpha": 4}},
        "slm": {"model": str(files["slm"]), "max_length": 16, "batch_size": 8, "private_epochs": 1},
        "feedback": {"ckks_preset": "n4096", "aggregator": "plaintext"},
        "eval": {"llm_examples": 4, "perplexity_chunks": 1, "perplexity_chunk_tokens": 16, "llm_max_length": 64},
        "audit": {"reference_models": 2, "population_records": 400, "bootstrap": 100, "llm_records": 40},
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def audit_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    data = root / "notes.csv"
    _write_notes(data, 240, seed=5)
    few = root / "few-notes.csv"
    _write_notes(few, 64, seed=6)
    return {
        "root": root,
        "data": data,
        "few": few,
        # 256 features: room for canaries orthogonal to the data and to each other (DP audit).
        "slm": tiny_bert_dir(root, hidden_size=256, heads=2, layers=1),
        "small_slm": tiny_bert_dir(root, hidden_size=32, heads=2, layers=1, name="small-bert"),
        "llm": tiny_llm_dir(root),
    }


def finished_run(files: dict[str, Path], name: str, *, data: str = "data", **sections: dict) -> Path:
    """Run a whole tiny job on ``files[data]`` and return its run folder."""
    config = load_config(_config(files["root"], {**files, "data": files[data]}, name, **sections))
    return run_job(config, log=lambda _: None).store.root


# -- protocol / ledger / report audits: one finished CKKS CrossLM run per session ---------------


@pytest.fixture(scope="session")
def crosslm_run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny CrossLM run (CKKS feedback, DP-SGD, 2 clients, 1 round); never modify it, copy it."""
    root = tmp_path_factory.mktemp("crosslm-run")
    data = write_sentiment_csv(root / "notes.csv", 60)
    raw = {
        "run": {"name": "audited", "rounds": 1, "progress": False, "output_dir": str(root / "runs")},
        "data": {"source": "csv", "path": str(data), "text_column": "note", "label_column": "outcome"},
        "partition": {"clients": 2},
        "llm": {"model": str(tiny_llm_dir(root)), "lora": {"r": 2, "alpha": 4}},
        "slm": {"model": str(tiny_bert_dir(root)), "max_length": 16, "batch_size": 8, "private_epochs": 1},
        "generation": {"samples_per_label": 2, "max_new_tokens": 8, "min_chars": 2, "batch_size": 6},
        "tuning": {"max_length": 48, "batch_size": 4},
        "feedback": {"ckks_preset": "n4096", "threshold": 0.0},
        "eval": {"llm_examples": 4, "perplexity_chunks": 1, "perplexity_chunk_tokens": 16, "llm_max_length": 64},
    }
    path = root / "audited.yaml"
    path.write_text(yaml.safe_dump(raw))
    keys: dict[str, ParticipantKeys] = {}

    def keep_keys(server: str, clients: list[str]) -> tuple[dict[str, ParticipantKeys], Registry]:
        made, registry = in_memory_identities(server, clients)
        keys.update(made)
        return made, registry

    with mock.patch("crosslm_secure.runner.in_memory_identities", keep_keys):
        run_dir = run_job(load_config(path), log=lambda _: None).store.root
    _RUN_KEYS[run_dir] = keys
    return run_dir


_RUN_KEYS: dict[Path, dict[str, ParticipantKeys]] = {}


@pytest.fixture(scope="session")
def crosslm_run_keys(crosslm_run_template: Path) -> dict[str, ParticipantKeys]:
    """The private keys the finished CrossLM run's parties signed with (in a pilot each party keeps its own)."""
    return _RUN_KEYS[crosslm_run_template]


@pytest.fixture(scope="session")
def reseal(crosslm_run_keys: dict[str, ParticipantKeys]) -> Callable[[Path], None]:
    """Re-seal a copy of the CrossLM run as its coordinator would (its own key), after a legitimate edit."""

    def as_coordinator(run_dir: Path) -> None:
        store = RunStore(run_dir)
        store.sign_with(crosslm_run_keys["server"])
        store.seal_manifest()

    return as_coordinator


@pytest.fixture
def registry_file(crosslm_run_template: Path, tmp_path: Path) -> Path:
    """The registry a reviewer pinned for the CrossLM run: its parties' public keys, kept outside the run folder."""
    enrolled = RunStore(crosslm_run_template).enrolled_keys()
    registry = Registry(PublicIdentity.from_dict(raws[-1]) for raws in enrolled.values())
    path = tmp_path / "reviewer" / "registry.json"
    path.parent.mkdir()
    registry.save(path)
    return path


@pytest.fixture
def crosslm_run(crosslm_run_template: Path, tmp_path: Path) -> Path:
    """A private copy of the finished CrossLM run (same folder name, so its run id still matches)."""
    import shutil

    copy = tmp_path / crosslm_run_template.name
    shutil.copytree(crosslm_run_template, copy)
    return copy


@pytest.fixture(scope="session")
def dp_run(audit_files: dict[str, Path]) -> Path:
    """DP-SGD at epsilon 1 on the default head-only SLM (shared by the MIA and DP audit tests)."""
    return finished_run(
        audit_files,
        "dp1",
        privacy={"target_epsilon": 1.0},
        slm={"private_epochs": 8},
        audit={"canaries": 180, "canary_guess_fraction": 0.4, "confidence": TINY_AUDIT_CONFIDENCE},
    )


@pytest.fixture(scope="session")
def leaky_run(audit_files: dict[str, Path]) -> Path:
    """Non-private, fully fine-tuned SLMs overfit on ~16 coin-flip-labelled records each."""
    return finished_run(
        audit_files,
        "leaky",
        data="few",
        privacy={"dp": False},
        slm={"model": str(audit_files["small_slm"]), "trainable": "full", "learning_rate": 5e-3, "private_epochs": 20},
        audit={"reference_models": 1},
    )
