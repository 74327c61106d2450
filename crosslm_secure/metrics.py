"""Every metric a run or a sweep reports: its key, its labels, its unit and its format.

The coordinator writes one row per round with these keys (``metrics.jsonl``); the summary,
plots, sweep tables and the deployment's progress lines read their labels here, so a metric
is named the same everywhere. Per-client metrics are ``<prefix>/<client id>``.
Macro-F1 comes before accuracy everywhere: with a majority class, accuracy rewards a
constant answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    key: str
    short: str
    """Column title in sweep tables (one row per cell)."""
    long: str
    """In sentences and axis labels (lower case)."""
    unit: str = ""
    fmt: str = "{:.3f}"
    round_column: str | None = None
    """Column title in a run's per-round table, where it differs from ``short``."""

    @property
    def column(self) -> str:
        return self.round_column or self.short


_ALL = (
    Metric("round", "round", "round", fmt="{}"),
    Metric("active_clients", "clients", "active clients", fmt="{}"),
    Metric("slm_macro_f1_mean", "SLM macro-F1", "mean client SLM macro-F1", round_column="SLM macro-F1 (mean)"),
    Metric("slm_accuracy_mean", "SLM acc", "mean client SLM accuracy", round_column="SLM acc (mean)"),
    Metric("llm_macro_f1", "LLM macro-F1", "LLM task macro-F1"),
    Metric("llm_accuracy", "LLM acc", "LLM task accuracy"),
    Metric("llm_perplexity", "LLM perplexity", "LLM perplexity (general text)", fmt="{:.2f}", round_column="LLM ppl"),
    Metric(
        "synthetic_accepted",
        "synthetic accepted (last round)",
        "synthetic samples accepted",
        fmt="{}",
        round_column="synthetic kept",
    ),
    Metric("synthetic_generated", "generated", "synthetic samples generated", fmt="{}"),
    Metric("synthetic_accept_threshold", "accept threshold", "lowest accepted mean score", round_column="threshold"),
    Metric("synthetic_mean_score", "mean score", "mean released score"),
    Metric("synthetic_label_agreement", "score > 0.5", "share of samples whose mean score exceeds 0.5"),
    Metric("synthetic_judge_agreement_accepted", "judge agrees (kept)", "judge agreement with kept samples"),
    Metric("synthetic_judge_agreement_rejected", "judge agrees (dropped)", "judge agreement with dropped samples"),
    Metric("llm_tune_steps", "tune steps", "LLM tuning steps", fmt="{}"),
    Metric("llm_tune_loss", "tune loss", "LLM tuning loss"),
    Metric("seconds_round", "seconds", "wall time of the round", unit="s", fmt="{:.0f}"),
    Metric("peak_rss_mb", "peak MB", "peak resident memory", unit="MB", fmt="{:.0f}"),
    # Per cell of a sweep (sweep/aggregate.py adds them to each cell's row).
    Metric("epsilon_spent_max", "eps spent (max client)", "largest client epsilon spent"),
    Metric("mia_slm_auc_mean", "MIA AUC (SLM)", "membership-inference AUC (SLM)"),
    Metric("seconds", "cell s", "wall time of the cell", unit="s", fmt="{:.0f}"),
)
METRICS: dict[str, Metric] = {m.key: m for m in _ALL}

TASK_METRICS = ("slm_macro_f1_mean", "llm_macro_f1", "slm_accuracy_mean", "llm_accuracy")
"""The task metrics: macro-F1 first."""


def long(key: str) -> str:
    """A key's label in sentences and axes (unknown keys as-is)."""
    metric = METRICS.get(key)
    return metric.long if metric else key


def round_line(row: dict[str, Any]) -> str:
    """The one-line progress message of a finished round."""
    parts = [f"round {row['round']} done in {row.get('seconds_round', 0):.0f}s"]
    if "slm_macro_f1_mean" in row and "slm_accuracy_mean" in row:
        parts.append(f"SLM macro-F1 {row['slm_macro_f1_mean']:.3f} (acc {row['slm_accuracy_mean']:.3f})")
    if "llm_macro_f1" in row:
        parts.append(
            f"LLM macro-F1 {row['llm_macro_f1']:.3f} (acc {row['llm_accuracy']:.3f}) ppl {row['llm_perplexity']:.2f}"
        )
    if "synthetic_accepted" in row:
        parts.append(f"synthetic {row['synthetic_accepted']}/{row['synthetic_generated']} accepted")
    if "active_clients" in row:
        parts.append(f"{row['active_clients']} clients active")
    return "  " + ", ".join(parts)
