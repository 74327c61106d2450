"""The synthetic-data section of the run report: what the LLM wrote and what the clients kept.

Reads only ``server/synthetic/round-<N>.jsonl`` (text, intended label, released aggregate
score, accepted): public server-side artefacts. No client's data and no per-client score
appears here. Sample texts are LLM output and are escaped like any other text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crosslm_secure.report.html import esc, figure_mpl, para, section, table

SHOWN_PER_KIND = 3
"""Accepted and rejected samples shown per label and round (highest and lowest scores)."""
TEXT_CHARS = 400
"""A shown sample is cut here; the whole text is in the JSONL file."""


def synthetic_section(batches: dict[int, list[dict[str, Any]]], labels: Sequence[str]) -> str:
    """The section: acceptance per label and round, the score histogram, and example samples."""
    if not batches:
        return section(
            "synthetic",
            "Synthetic data",
            para(
                "This run kept no synthetic batch (server/synthetic/ is empty): it ran before batches were kept, "
                "used no score feedback (data-free KD), or stopped before the first synthetic round.",
                "note",
            ),
        )
    order = list(labels) + sorted({r["label"] for rows in batches.values() for r in rows} - set(labels))
    parts = [
        para(
            "Each round the LLM writes samples for every label; the clients score them under DP and the server learns "
            "only the aggregate (mean) score of each sample. Samples whose aggregate score passes the acceptance rule "
            "are kept for LLM tuning and sent to the clients. Scores below are those released aggregates.",
            "note",
        ),
        "<h3>Acceptance rate per label and round</h3>",
        table(["round", "label", "generated", "accepted", "rate", "mean score"], _rate_rows(batches, order)),
        '<div class="side"><div>',
        figure_mpl(_histogram(batches), "score histogram", "Aggregate score of every sample, accepted vs rejected."),
        "</div></div>",
        "<h3>Samples</h3>",
        para(
            f"Per round and label: up to {SHOWN_PER_KIND} accepted samples with the highest score and "
            f"{SHOWN_PER_KIND} rejected with the lowest. Full batches: server/synthetic/round-N.jsonl.",
            "note",
        ),
    ]
    for round_index, rows in batches.items():
        body = [_sample_table(rows, label) for label in order if any(r["label"] == label for r in rows)]
        opened = " open" if round_index == max(batches) else ""
        parts.append(f"<details{opened}><summary>Round {round_index}</summary>" + "".join(body) + "</details>")
    return section("synthetic", "Synthetic data", *parts)


def _rate_rows(batches: dict[int, list[dict[str, Any]]], order: Sequence[str]) -> list[list[Any]]:
    out = []
    for round_index, rows in batches.items():
        for label in order:
            mine = [r for r in rows if r["label"] == label]
            if not mine:
                continue
            kept = sum(bool(r["accepted"]) for r in mine)
            mean = float(np.mean([r["score"] for r in mine]))
            out.append([round_index, label, len(mine), kept, f"{kept / len(mine):.0%}", mean])
    return out


def _sample_table(rows: list[dict[str, Any]], label: str) -> str:
    mine = [r for r in rows if r["label"] == label]
    accepted = sorted((r for r in mine if r["accepted"]), key=lambda r: -r["score"])[:SHOWN_PER_KIND]
    rejected = sorted((r for r in mine if not r["accepted"]), key=lambda r: r["score"])[:SHOWN_PER_KIND]
    cells = [
        [
            '<span class="pass">accepted</span>' if r["accepted"] else '<span class="fail">rejected</span>',
            f"{float(r['score']):.3f}",
            f'<div class="sample">{esc(_cut(str(r["text"])))}</div>',
        ]
        for r in accepted + rejected
    ]
    return f"<h4>label: {esc(label)}</h4>" + table(["kept", "score", "text"], cells, raw=True)


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS].rstrip() + " ..."


def _histogram(batches: dict[int, list[dict[str, Any]]]) -> Any:
    from crosslm_secure.report.plots import plt

    scores = np.array([float(r["score"]) for rows in batches.values() for r in rows])
    accepted = np.array([bool(r["accepted"]) for rows in batches.values() for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.histogram_bin_edges(scores, bins=20) if scores.size else 10
    ax.hist(scores[accepted], bins=bins, alpha=0.7, label=f"accepted ({int(accepted.sum())})", color="C2")
    ax.hist(scores[~accepted], bins=bins, alpha=0.7, label=f"rejected ({int((~accepted).sum())})", color="C3")
    ax.set(xlabel="released aggregate score", ylabel="samples", title="Synthetic samples by aggregate score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
