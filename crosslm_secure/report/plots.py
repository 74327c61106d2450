"""Figures of a run's per-round metrics, on axes that do not exaggerate.

Scores (macro-F1, accuracy) are drawn on their whole range, 0 to 1. Perplexity is drawn as the
% change from round 0 on an axis of at least +-1%: autoscaled, a 0.1% wobble fills the panel
and reads like a swing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from crosslm_secure.storage import atomic_write_bytes  # noqa: E402


def plot_rounds(rows: Sequence[dict[str, Any]], out: Path) -> Path:
    """Write ``draw_rounds`` to ``out`` (PNG)."""
    return save_figure(draw_rounds(rows), out)


MIN_PERCENT_SPAN = 1.0
"""A %-change axis shows at least -1% to +1%."""


def draw_rounds(rows: Sequence[dict[str, Any]]) -> Any:
    """Per round: client SLM and LLM task macro-F1 (solid, primary) with accuracy beside it
    (dashed, lighter), and the % change of LLM perplexity on general text from round 0."""
    rounds = [r["round"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    clients = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("slm_macro_f1/")})
    for name in clients:
        _line(ax, rows, f"slm_macro_f1/{name}", marker=".", alpha=0.5, label=name)
    _line(ax, rows, "slm_macro_f1_mean", marker="o", color="black", linewidth=2, label="mean macro-F1")
    _line(ax, rows, "slm_accuracy_mean", **_SECONDARY, label="mean accuracy")
    ax.set(title="Client SLM macro-F1 (accuracy dashed)", xlabel="round", ylabel="score")
    ax = axes[1]
    _line(ax, rows, "llm_macro_f1", marker="o", color="C0", label="macro-F1")
    _line(ax, rows, "llm_accuracy", **_SECONDARY, label="accuracy")
    ax.set(title="LLM zero-shot task macro-F1 (accuracy dashed)", xlabel="round", ylabel="score")
    for ax in axes[:2]:
        ax.set_ylim(0, 1)
        if ax.get_lines():
            ax.legend(fontsize=7)
    ax = axes[2]
    points = [(r["round"], r["llm_perplexity"]) for r in rows if "llm_perplexity" in r]
    if points:
        base = points[0][1]
        changes = percent_change([value for _, value in points])
        ax.plot([r for r, _ in points], changes, marker="o")
        ax.set(title=f"LLM perplexity, % change (round {points[0][0]}: {base:.2f})", ylabel="% change")
        hold_percent_axis(ax, changes)
    else:
        ax.set(title="LLM perplexity (general text)")
    ax.set(xlabel="round")
    for ax in axes:
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


_SECONDARY = {"marker": "s", "markersize": 3, "linestyle": "--", "color": "grey", "alpha": 0.7}
"""How accuracy is drawn beside macro-F1: the same axes, a secondary line."""


def percent_change(values: Sequence[float]) -> list[float]:
    """Each value as the % change from the first (all 0 when the first is 0)."""
    first = values[0]
    return [0.0 if not first else (v / first - 1) * 100 for v in values]


def hold_percent_axis(ax: Any, changes: Sequence[float]) -> None:
    """Show 0 and at least +-``MIN_PERCENT_SPAN``, more when the data reach further."""
    finite = [c for c in changes if math.isfinite(c)] or [0.0]
    low, high = min(min(finite), -MIN_PERCENT_SPAN), max(max(finite), MIN_PERCENT_SPAN)
    pad = (high - low) * 0.05
    ax.set_ylim(low - pad, high + pad)
    ax.axhline(0, color="grey", linewidth=0.8)


def _line(ax: Any, rows: Sequence[dict[str, Any]], key: str, **style: Any) -> None:
    """Plot ``key`` against the round wherever a row holds it (nothing when none does)."""
    points = [(r["round"], r[key]) for r in rows if key in r]
    if points:
        ax.plot(*zip(*points, strict=True), **style)


def save_figure(fig: Any, out: Path) -> Path:
    """Render a figure to PNG and replace ``out`` atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(out), buffer.getvalue())  # creates the folder
    return Path(out)
