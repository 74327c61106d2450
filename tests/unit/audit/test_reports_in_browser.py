"""Both HTML reports of a real tiny run, opened in headless Chromium at 1280 px and at 390 px (a phone).

The run is a finished CKKS CrossLM run (conftest); the protocol and ledger checks are real,
the expensive MIA and DP checks are stood in for by results shaped like theirs (a client x
attack table with 80 and 400 non-members, ROC and canary figures), so the report's MIA and DP
sections render from real-looking JSON in seconds. Each test also saves a PNG screenshot under
pytest's temporary folder for a reviewer to look at.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from crosslm_secure.audit import registry
from crosslm_secure.audit.base import CheckResult, Table, audit_dir, save_result
from crosslm_secure.audit.protocol_audit import run_protocol_audit
from crosslm_secure.audit.report_html import AUDIT_SECTIONS
from crosslm_secure.audit.roc import plot_roc
from crosslm_secure.cli import app
from crosslm_secure.report.run_page import SECTIONS
from tests.browser import PHONE, WIDTH, inspect_page, screenshot

HERE = "tests.unit.audit.test_reports_in_browser"
SYNTHETIC_FIELDS = {"index", "text", "label", "score", "accepted"}


def shaped_mia(run_dir: Path, settings=None, *, progress: bool = True) -> CheckResult:
    """An MIA result with the real check's table columns, n=400 on one client and n=80 on another."""
    rng = np.random.default_rng(0)
    plot_roc(
        {"LOSS": (rng.normal(0.1, 1, 400), rng.normal(0, 1, 400))},
        "MIA on client-1 SLM",
        audit_dir(run_dir) / "mia_roc_client-1.png",
    )
    columns = ["target", "attack", "n (each side)", "AUC", "TPR@1%FPR", "TPR@0.1%FPR", "bal. acc.", "claimed eps"]
    rows = [
        ["client-1 SLM", "LOSS", "400", "0.531 [0.50, 0.56]", "0.013 [0.005, 0.03]", "0.003 [0.000, 0.01]", "-", "8"],
        ["client-1 SLM", "LiRA", "400", "0.540 [0.51, 0.57]", "0.020 [0.008, 0.04]", "0.005 [0.000, 0.01]", "-", "8"],
        ["client-2 SLM", "LOSS", "80", "0.522 [0.44, 0.61]", "0.025 [0.000, 0.08]", "0.013 [0.000, 0.05]", "-", "8"],
        [
            "server LLM",
            "LOSS (LoRA round-1)",
            "80",
            "0.50 [0.41, 0.59]",
            "0.0 [0.0, 0.05]",
            "0.0 [0.0, 0.05]",
            "-",
            "-",
        ],
    ]
    result = CheckResult(
        "mia",
        "Membership inference (LOSS, LiRA)",
        "pass",
        "Best SLM attack LiRA: AUC 0.540; no rule fired.",
        {"client-1/slm_loss_auc": 0.531, "slm_auc_mean": 0.53},
        [Table("Membership inference (95% bootstrap intervals)", columns, rows)],
        ["mia_roc_client-1.png"],
    )
    save_result(run_dir, result)
    return result


def shaped_dp(run_dir: Path, settings=None, *, progress: bool = True) -> CheckResult:
    """A DP result with the real check's numbers: claimed and ledger epsilon differ by 7%."""
    from crosslm_secure.report.plots import plt, save_figure

    fig, ax = plt.subplots()
    ax.hist(np.random.default_rng(1).normal(size=200), bins=20)
    save_figure(fig, audit_dir(run_dir) / "dp_canary_scores.png")
    numbers = {
        "client": "client-1",
        "canaries": 1000,
        "canaries_included": 497,
        "guesses": 200,
        "correct": 112,
        "empirical_epsilon_lower_bound": 0.21,
        "claimed_epsilon": 7.43,
        "ledger_epsilon": 8.0,
        "confidence": 0.95,
        "noise_multiplier": 1.1,
        "sample_rate": 0.05,
        "delta": 1e-5,
        "rounds": 2,
    }
    table = Table(
        "One-run DP audit",
        ["client", "eps lower bound", "claimed eps", "ledger eps"],
        [["client-1", "0.21", "7.43", "8.00"]],
    )
    result = CheckResult(
        "dp",
        "DP audit in one training run",
        "pass",
        "eps >= 0.21 vs claimed 7.43 (ledger 8.00).",
        numbers,
        [table],
        ["dp_canary_scores.png"],
    )
    save_result(run_dir, result)
    return result


@pytest.fixture
def shaped_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.CHECKS, "mia", (HERE, "shaped_mia"))
    monkeypatch.setitem(registry.CHECKS, "dp", (HERE, "shaped_dp"))


def readable(report, page: Path, width: int = WIDTH) -> None:
    """No console message, every image decoded, nothing wider than the window."""
    assert report.console == [], f"{page.name}: console messages {report.console}"
    assert report.broken_images == [], f"{page.name}: images that did not load: {report.broken_images}"
    assert report.scroll_width <= width, f"{page.name} is {report.scroll_width} px wide at a {width} px window"


def readable_on_a_phone(page: Path, out: Path) -> None:
    """The same at a phone's 390 px: wide tables scroll inside their own box, not the page."""
    phone = inspect_page(page, PHONE)
    readable(phone, page, PHONE)
    shot = screenshot(page, out, width=PHONE, height=phone.scroll_height)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_run_keeps_each_synthetic_batch_as_aggregates_only(crosslm_run: Path) -> None:
    rows = [json.loads(line) for line in (crosslm_run / "metrics.jsonl").read_text().splitlines()]
    batch = [
        json.loads(line) for line in (crosslm_run / "server" / "synthetic" / "round-1.jsonl").read_text().splitlines()
    ]
    assert batch and all(set(sample) == SYNTHETIC_FIELDS for sample in batch)
    assert [s["index"] for s in batch] == list(range(len(batch))) == list(range(rows[1]["synthetic_generated"]))
    assert sum(s["accepted"] for s in batch) == rows[1]["synthetic_accepted"]
    assert {s["label"] for s in batch} <= {"negative", "neutral", "positive"}
    assert np.mean([s["score"] for s in batch]) == pytest.approx(rows[1]["synthetic_mean_score"])
    assert run_protocol_audit(crosslm_run, progress=False).verdict == "pass"


def test_the_run_report_reads_in_a_browser(crosslm_run: Path, tmp_path: Path) -> None:
    (crosslm_run / "report.html").unlink(missing_ok=True)
    batch_file = crosslm_run / "server" / "synthetic" / "round-1.jsonl"
    batch = [json.loads(line) for line in batch_file.read_text().splitlines()]
    batch[0]["text"] = '<img src="x" onerror="alert(1)"> a review & more'
    batch_file.write_text("".join(json.dumps(s) + "\n" for s in batch))
    result = CliRunner().invoke(app, ["report", str(crosslm_run)])
    assert result.exit_code == 0, result.output
    page = crosslm_run / "report.html"
    text = page.read_text()
    assert "&lt;img src=&quot;x&quot; onerror=&quot;alert(1)&quot;&gt; a review &amp; more" in text
    assert "http://" not in text and "https://" not in text and "<script" not in text and "<link" not in text
    report = inspect_page(page)
    readable(report, page)
    assert report.sections == list(SECTIONS)
    assert report.images == 3  # metrics per round, privacy spend, score histogram
    shot = screenshot(page, tmp_path / "run-report.png", height=report.scroll_height)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readable_on_a_phone(page, tmp_path / "run-report-phone.png")


def test_the_audit_report_reads_in_a_browser(
    crosslm_run: Path, registry_file: Path, tmp_path: Path, shaped_checks: None
) -> None:
    args = ["audit", "all", "--run", str(crosslm_run), "--no-progress", "--registry", str(registry_file)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    page = crosslm_run / "audit" / "report.html"
    report = inspect_page(page)
    readable(report, page)
    checks = [f"check-{name}" for name in registry.CHECKS]
    assert report.sections == [*AUDIT_SECTIONS[:-1], *checks, AUDIT_SECTIONS[-1]]
    assert report.images == 3  # the ROC, the canary histogram, the ledger's epsilon plot
    text = page.read_text()
    mia = text[text.index('<section id="check-mia">') :].split("</section>", 1)[0]
    assert "not resolvable with n=80" in mia  # 80 x 1% < 1 false positive
    assert "0.013 [0.005, 0.03]" in mia  # 400 x 1% = 4: resolvable
    assert "0.003 [0.000, 0.01]" not in mia and "not resolvable with n=400" in mia  # 400 x 0.1% < 1
    assert "0.003 [0.000, 0.01]" in text.split('<section id="appendix">', 1)[1]  # the raw table stays
    assert mia.count('colspan="3">LOSS<') == 1 and mia.count('colspan="3">LiRA<') == 1
    assert "Claimed 7.43: the epsilon the accountant gives for the audit&#x27;s own re-training" in text
    assert "here they differ (relative difference 7.13%)" in text
    shot = screenshot(page, tmp_path / "audit-report.png", height=report.scroll_height)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readable_on_a_phone(page, tmp_path / "audit-report-phone.png")
