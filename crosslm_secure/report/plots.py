"""Figures of a run's per-round metrics."""

from __future__ import annotations

import io
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


def draw_rounds(rows: Sequence[dict[str, Any]]) -> Any:
    """Per round: client SLM and LLM task macro-F1 (solid, primary) with accuracy beside it
    (dashed, lighter), and LLM perplexity on general text."""
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
        if ax.get_lines():
            ax.legend(fontsize=7)
    ax = axes[2]
    _line(ax, rows, "llm_perplexity", marker="o")
    ax.set(title="LLM perplexity (general text)", xlabel="round")
    for ax in axes:
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


_SECONDARY = {"marker": "s", "markersize": 3, "linestyle": "--", "color": "grey", "alpha": 0.7}
"""How accuracy is drawn beside macro-F1: the same axes, a secondary line."""


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
