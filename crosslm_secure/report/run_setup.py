"""A run's set-up as (item, value) pairs: what a reader cites. ``summary.md`` and ``report.html`` both show it.

Read from the config, the event log (the records each client held), the client ledgers
(epsilon spent) and the kept answers (how many test records each macro-F1 is over).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from crosslm_secure.config import Config
from crosslm_secure.errors import CrossLMError
from crosslm_secure.report.budgets import run_budgets
from crosslm_secure.report.intervals import LLM_KEY, RunIntervals
from crosslm_secure.runstore import RunStore

DEFAULT_NOISE_SOURCE = "os"
"""What a config without ``privacy.noise_source`` drew its noise from."""


def setup_items(
    store: RunStore,
    config: Config,
    rows: Sequence[dict[str, Any]],
    *,
    llm_source: str | None = None,
    llm_fingerprint: str = "",
    slm_sources: dict[str, str] | None = None,
) -> list[tuple[str, str]]:
    """Method, seed, models, privacy target and spend, noise source, records, evaluation sizes, data."""
    split = next((e for e in reversed(store.events()) if e.get("event") == "data"), {})
    llm = llm_source or config.llm.model
    items = [
        ("method", f"{config.run.method}, {config.run.rounds} rounds"),
        ("seed", str(config.run.seed)),
        ("LLM", llm + (f" (weights sha256 {llm_fingerprint[:16]})" if llm_fingerprint else "")),
        ("SLMs", _slms(slm_sources or {c: config.slm_for(c).model for c in config.client_ids()})),
        ("privacy target", _target(config)),
        *_spent(store),
        ("noise source", str((store.config_dict() or {}).get("privacy", {}).get("noise_source", DEFAULT_NOISE_SOURCE))),
        ("clients", _clients(config)),
    ]
    for client, counts in sorted(split.get("clients", {}).items()):
        items.append((f"records {client} (train)", _records(counts)))
    if not split.get("clients"):
        items.append(("records (train)", "not in this run folder: each site counts its own (party folders)"))
    items.append(("evaluation n (test records)", _evaluation_n(store, config, rows, split)))
    data = config.data.source + (f" ({config.data.embedded})" if config.data.source == "embedded" else "")
    items += [
        ("data", data + (f" ({config.data.path})" if config.data.path else "")),
        ("feedback aggregator", config.feedback.aggregator),
    ]
    return items


def _clients(config: Config) -> str:
    alpha = f", alpha {config.partition.alpha}" if config.partition.scheme == "dirichlet" else ""
    return f"{config.partition.clients} ({config.partition.scheme}{alpha})"


def _slms(sources: dict[str, str]) -> str:
    if len(set(sources.values())) == 1:
        return f"every client: {next(iter(sources.values()))}"
    return "; ".join(f"{name}: {source}" for name, source in sorted(sources.items()))


def _target(config: Config) -> str:
    privacy = config.privacy
    if not privacy.dp:
        return "none: non-private training (epsilon = inf)"
    target = privacy.target_epsilon
    if target is None or math.isinf(target):
        goal = f"noise multiplier {privacy.noise_multiplier:g} (no epsilon target)"
    else:
        goal = f"epsilon {target:g} over the planned rounds"
    delta = "1/records per client" if privacy.delta is None else f"{privacy.delta:.1e}"
    return f"{goal}, delta {delta}, budget epsilon max {privacy.epsilon_max:g}"


def _spent(store: RunStore) -> list[tuple[str, str]]:
    """One item per client (a line each: a long list of clients would read as a vector of numbers)."""
    try:
        budgets = run_budgets(store.root)
    except CrossLMError as exc:
        return [("epsilon spent", f"the client ledgers could not be read: {exc}")]
    items = []
    for b in budgets:
        spent = "inf (no DP)" if not b.private else f"{b.epsilon_spent:.3f}"
        delta = "" if b.delta is None else f" at delta {b.delta:.1e}"
        items.append((f"epsilon spent {b.client_id} (ledger)", spent + delta))
    return items


def _records(counts: dict[str, Any]) -> str:
    per_label = counts.get("train_by_label") or {}
    labels = ", ".join(f"{label} {n}" for label, n in per_label.items())
    train = f"{counts.get('train', '?')}" + (f" ({labels})" if labels else "")
    return f"{train}; held-out test {counts.get('test', '?')}"


def _evaluation_n(store: RunStore, config: Config, rows: Sequence[dict[str, Any]], split: dict[str, Any]) -> str:
    """The test records the last round's macro-F1s are over (the kept answers, else the split)."""
    kept = RunIntervals(store, len(config.task.labels))
    llm = None
    if rows and LLM_KEY in rows[-1]:
        answers = kept.answers(int(rows[-1]["round"]), LLM_KEY)
        llm = len(answers) if answers is not None else None
    if llm is None and "llm_test" in split:
        llm = min(int(split["llm_test"]), config.eval.llm_examples)
    parts = [] if llm is None else [f"LLM {llm} (evaluator's split)"]
    if split.get("clients"):
        parts.append("each SLM on its client's held-out test records (the records lines)")
    return "; ".join(parts) or "not recorded"
