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
    """SLM accuracy (mean and per client), LLM task accuracy and LLM perplexity per round."""
    rounds = [r["round"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    clients = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith("slm_accuracy/")})
    for name in clients:
        points = [(r["round"], r[f"slm_accuracy/{name}"]) for r in rows if f"slm_accuracy/{name}" in r]
        ax.plot(*zip(*points, strict=True), marker=".", alpha=0.5, label=name)
    mean_points = [(r["round"], r["slm_accuracy_mean"]) for r in rows if "slm_accuracy_mean" in r]
    if mean_points:
        ax.plot(*zip(*mean_points, strict=True), marker="o", color="black", linewidth=2, label="mean")
    ax.set(title="Client SLM accuracy", xlabel="round", ylabel="accuracy")
    ax.legend(fontsize=7)
    for ax, key, title in (
        (axes[1], "llm_accuracy", "LLM zero-shot task accuracy"),
        (axes[2], "llm_perplexity", "LLM perplexity (general text)"),
    ):
        points = [(r["round"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o")
        ax.set(title=title, xlabel="round")
    for ax in axes:
        ax.set_xticks(rounds)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out)


def save_figure(fig: Any, out: Path) -> Path:
    """Render a figure to PNG and replace ``out`` atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(out), buffer.getvalue())  # creates the folder
    return Path(out)
