"""A tiny DP job for pilot tests (tiny random models, a data file with room for three sites and an evaluator)."""

from __future__ import annotations

from pathlib import Path

import yaml

from crosslm_secure.config import Config, load_config
from tests.tiny_models import tiny_bert_dir, tiny_llm_dir, write_sentiment_csv

TINY_AUDIT_CONFIDENCE = 0.99
"""Confidence of the audits of tiny epsilon-1 runs, not the default 0.95: a white-box audit of this
honest mechanism (noise multiplier 37.8, rate 1, 100 steps) gets 24 or more of its 27 guesses right,
a bound above the claim, in 0.2% of draws (tests/unit/audit/test_whitebox.py simulates it), and a
suite audits several such runs; at 0.99 it takes 26 (0.005%)."""

AUDITABLE = {
    "privacy": {"target_epsilon": 1.0},
    "audit": {"canaries": 180, "canary_guess_fraction": 0.4, "mia_max_auc": 0.85, "confidence": TINY_AUDIT_CONFIDENCE},
}
"""Settings under which a site's audit of a tiny model can decide: a claim the canaries can test,
and an MIA limit that a site of ~200 records (40% held out, half of that as non-members) resolves,
at :data:`TINY_AUDIT_CONFIDENCE`."""


def tiny_job(root: Path, name: str = "pilot", rounds: int = 1, *, rows: int = 120, auditable: bool = False) -> Config:
    """A DP job on tiny random models whose data file has room for three sites and an evaluator set.

    ``auditable``: a wider SLM (room for gradient canaries orthogonal to the data) and :data:`AUDITABLE`.
    """
    data = root / "notes.csv"
    if not data.exists():
        write_sentiment_csv(data, rows)
        tiny_bert_dir(root)
        tiny_llm_dir(root)
    slm = root / "tiny-bert"
    if auditable and not (root / "wide-bert").exists():
        tiny_bert_dir(root, hidden_size=256, heads=2, layers=1, name="wide-bert")
    raw = {
        "run": {"name": name, "rounds": rounds, "progress": False, "output_dir": str(root / "runs"), "threads": 1},
        "data": {"source": "csv", "path": str(data), "text_column": "note", "label_column": "outcome"},
        "llm": {"model": str(root / "tiny-llm"), "lora": {"r": 2, "alpha": 4}},
        "slm": {"model": str(slm), "max_length": 16, "batch_size": 8, "private_epochs": 1},
        "generation": {"samples_per_label": 2, "max_new_tokens": 12, "min_chars": 2, "batch_size": 6},
        "tuning": {"max_length": 48, "batch_size": 4},
        "feedback": {"ckks_preset": "n4096", "threshold": 0.0},
        "eval": {"llm_examples": 6, "perplexity_chunks": 1, "perplexity_chunk_tokens": 16, "llm_max_length": 64},
    }
    if auditable:
        raw["slm"]["model"] = str(root / "wide-bert")
        raw["data"]["test_fraction"] = 0.4
        raw.update(AUDITABLE)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)
