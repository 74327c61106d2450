"""The sweep's figures: macro-F1 first, per round as well as against the x grid field."""

from __future__ import annotations

from pathlib import Path

import pytest

from crosslm_secure.sweep import plots
from crosslm_secure.sweep.aggregate import SweepResults
from crosslm_secure.sweep.plots import write_plots


def results() -> SweepResults:
    rows, histories = [], {}
    for seed in (0, 1):
        for method in ("crosslm", "standalone"):
            for epsilon in (8.0, float("inf")):
                name = f"{method}-{epsilon}-{seed}"
                final = {
                    "slm_macro_f1_mean": 0.3 + 0.01 * seed,
                    "slm_accuracy_mean": 0.6,
                    "llm_macro_f1": 0.4,
                    "llm_accuracy": 0.7,
                }
                rows.append(
                    {
                        "cell": name,
                        "status": "done",
                        "run.seed": seed,
                        "run.method": method,
                        "privacy.target_epsilon": epsilon,
                        "method": method,
                        "seed": seed,
                        **final,
                    }
                )
                histories[name] = [{"round": 0, **{k: v / 2 for k, v in final.items()}}, {"round": 1, **final}]
    grid = ["run.seed", "run.method", "privacy.target_epsilon"]
    return SweepResults("t", grid, "privacy.target_epsilon", ["standalone"], rows, histories)


def test_macro_f1_figures_come_first_and_accuracy_ones_follow(tmp_path: Path) -> None:
    written = [p.name for p in write_plots(tmp_path, results())]
    assert written == [
        "epsilon_vs_slm_macro_f1_mean.png",
        "epsilon_vs_llm_macro_f1.png",
        "epsilon_vs_slm_accuracy_mean.png",
        "epsilon_vs_llm_accuracy.png",
        "rounds_vs_macro_f1.png",
        "rounds_vs_accuracy.png",
    ]
    for name in written:
        assert (tmp_path / "plots" / name).stat().st_size > 1000


def test_the_rounds_figure_draws_macro_f1_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = {}

    def keep(fig, out: Path) -> Path:
        drawn[Path(out).name] = fig
        return Path(out)

    monkeypatch.setattr(plots, "save_figure", keep)
    plots.plot_rounds(results(), tmp_path / "rounds.png")
    slm, llm = drawn["rounds.png"].axes
    assert drawn["rounds.png"].get_suptitle() == "Macro-F1 per round (t)"
    assert (slm.get_title(), llm.get_title(), slm.get_ylabel()) == (
        "mean client SLM macro-F1",
        "LLM task macro-F1",
        "macro-F1",
    )
    # crosslm at epsilon 8: SLM macro-F1 0.30 and 0.31 over the seeds, half that at round 0
    series = [list(line.get_ydata()) for line in slm.get_lines() if len(line.get_ydata()) == 2]
    assert any(ys == pytest.approx([0.1525, 0.305]) for ys in series)
    assert not any(ys == pytest.approx([0.3, 0.6]) for ys in series)  # not accuracy
