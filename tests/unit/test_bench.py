"""``crosslm bench`` pieces that are cheap to run: the README history row and the CKKS ratio row."""

from __future__ import annotations

from pathlib import Path

from crosslm_secure.bench import TABLE_START, append_row, ckks_round


def _result(date: str, ratio: float) -> dict:
    return {
        "date": date,
        "load_average": [3.25, 4.0],
        "rows": [{"name": "llm_eval", "ratio": ratio}, {"name": "dp_step", "ratio": 1.9}],
    }


def test_rows_are_appended_under_one_table_and_keep_the_readme(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nSome text that must stay.\n")
    append_row(readme, _result("2026-12-01 04:00 UTC", 0.512))
    append_row(readme, _result("2026-12-02 04:00 UTC", 0.498))
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nSome text that must stay.\n")
    assert text.count(TABLE_START) == 1
    lines = [line for line in text.splitlines() if line.startswith("| 2026-12-0")]
    assert lines == [
        "| 2026-12-01 04:00 UTC | 3.2 | 1.900 |  | 0.512 |  |  |  |  |",
        "| 2026-12-02 04:00 UTC | 3.2 | 1.900 |  | 0.498 |  |  |  |  |",
    ]
    header = next(line for line in text.splitlines() if line.startswith("| date"))
    assert header.count("|") == lines[0].count("|"), "every row has a cell per column"


def test_ckks_row_compares_a_protected_round_with_a_plaintext_one() -> None:
    row = ckks_round(k=2, count=64, preset="n4096")
    assert row["name"] == "ckks_round"
    assert row["measured_s"] > 0 and row["baseline_s"] > 0
    assert row["plaintext_bytes_per_score"] >= 8  # float64 per score, plus framing
    assert row["bytes_per_score"] > 10 * row["plaintext_bytes_per_score"]
