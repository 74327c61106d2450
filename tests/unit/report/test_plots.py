"""plots/metrics.png: macro-F1 is the solid primary line of each task panel, accuracy a dashed second;
axes do not make a small change look large."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from crosslm_secure.report.plots import draw_rounds, plot_rounds

ROWS = [
    {
        "round": r,
        "slm_macro_f1_mean": 0.2 + 0.1 * r,
        "slm_accuracy_mean": 0.6,
        "slm_macro_f1/client-1": 0.25 + 0.1 * r,
        "slm_accuracy/client-1": 0.61,
        "llm_macro_f1": 0.3 + 0.05 * r,
        "llm_accuracy": 0.5,
        "llm_perplexity": 20.0 - r,
    }
    for r in range(3)
]


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def test_each_task_panel_draws_macro_f1_solid_and_accuracy_dashed() -> None:
    fig = draw_rounds(ROWS)
    slm, llm, perplexity = fig.axes
    try:
        for ax, primary, secondary, f1, accuracy in (
            (slm, "mean macro-F1", "mean accuracy", [0.2, 0.3, 0.4], [0.6] * 3),
            (llm, "macro-F1", "accuracy", [0.3, 0.35, 0.4], [0.5] * 3),
        ):
            assert "macro-F1" in ax.get_title() and "accuracy dashed" in ax.get_title()
            lines = lines_by_label(ax)
            assert lines[primary].get_linestyle() == "-" and list(lines[primary].get_ydata()) == pytest.approx(f1)
            assert lines[secondary].get_linestyle() == "--"
            assert list(lines[secondary].get_ydata()) == pytest.approx(accuracy)
        assert list(lines_by_label(slm)["client-1"].get_ydata()) == pytest.approx([0.25, 0.35, 0.45])
        assert list(perplexity.get_lines()[0].get_ydata()) == pytest.approx([0.0, -5.0, -10.0])  # % of round 0
    finally:
        plt.close(fig)


def test_axes_do_not_exaggerate_a_small_change() -> None:
    """Scores span 0-1; a 0.1% perplexity change stays a near-flat line on an axis of at least +-1%."""
    rows = [row | {"llm_perplexity": value} for row, value in zip(ROWS, [23.12, 23.16, 23.14], strict=True)]
    fig = draw_rounds(rows)
    slm, llm, perplexity = fig.axes
    try:
        assert slm.get_ylim() == (0, 1) and llm.get_ylim() == (0, 1)
        low, high = perplexity.get_ylim()
        assert low <= -1.0 and high >= 1.0
        changes = list(perplexity.get_lines()[0].get_ydata())
        assert changes == pytest.approx([0.0, 0.173, 0.0865], abs=1e-3)
        assert (max(changes) - min(changes)) / (high - low) < 0.1  # under a tenth of the panel's height
    finally:
        plt.close(fig)


def test_a_large_perplexity_change_still_fits_its_axis() -> None:
    fig = draw_rounds([row | {"llm_perplexity": value} for row, value in zip(ROWS, [20.0, 26.0, 30.0], strict=True)])
    try:
        low, high = fig.axes[2].get_ylim()
        assert low <= -1.0 and high >= 50.0
    finally:
        plt.close(fig)


def test_a_panel_without_its_metrics_stays_empty() -> None:
    fig = draw_rounds([{k: v for k, v in row.items() if not k.startswith("llm_")} for row in ROWS])
    try:
        assert fig.axes[1].get_lines() == [] and fig.axes[2].get_lines() == []
        assert len(fig.axes[0].get_lines()) == 3
    finally:
        plt.close(fig)


def test_the_figure_is_written_as_a_png(tmp_path: Path) -> None:
    out = plot_rounds(ROWS, tmp_path / "plots" / "metrics.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
