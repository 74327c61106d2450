"""The audit report's words: the MIA matrix from any attack's rows, the resolvable-FPR rule,
the DP epsilons explained, and a fallback sentence for a check the report does not know."""

from __future__ import annotations

from crosslm_secure.audit.base import CheckResult, Table
from crosslm_secure.audit.report_sections import (
    dp_sentences,
    explanations,
    merged,
    mia_matrix_html,
    mia_tables,
    summary_sentence,
)
from crosslm_secure.config import AuditConfig

COLUMNS = ["target", "attack", "n (each side)", "AUC", "TPR@1%FPR", "TPR@0.1%FPR"]


def test_an_attack_saved_as_its_own_table_joins_the_matrix_and_low_fprs_need_enough_non_members() -> None:
    loss = Table("LOSS", COLUMNS, [["client-1 SLM", "LOSS", "1000", "0.51 [0.5, 0.52]", "0.011 [a]", "0.002 [b]"]])
    lira = Table("LiRA", COLUMNS, [["client-1 SLM", "LiRA", "1000", "0.55 [0.5, 0.6]", "0.02 [c]", "0.004 [d]"]])
    other = Table("Timing", ["attack", "seconds"], [["LiRA", "12"]])
    result = CheckResult("mia", "MIA", "pass", "ok", tables=[loss, other, lira])
    assert mia_tables(result) == [loss, lira]
    html = mia_matrix_html(merged(mia_tables(result)))
    assert '<th colspan="3">LOSS</th><th colspan="3">LiRA</th>' in html
    assert "0.002 [b]" in html and "0.004 [d]" in html  # 1000 x 0.1% = 1 false positive: resolvable
    small = Table("LOSS", COLUMNS, [["client-2 SLM", "LOSS", "999", "0.5", "0.01 [e]", "0.001 [f]"]])
    html = mia_matrix_html(small)
    assert "0.01 [e]" in html and "0.001 [f]" not in html and "not resolvable with n=999" in html


def test_each_epsilon_of_the_dp_check_gets_its_sentence() -> None:
    numbers = {"empirical_epsilon_lower_bound": 0.5, "correct": 130, "guesses": 200, "claimed_epsilon": 8.0}
    sentences = dp_sentences(numbers | {"ledger_epsilon": 8.0})
    assert [s.split(" ", 2)[:2] for s in sentences] == [
        ["Empirical", "lower"],
        ["Claimed", "8.00:"],
        ["Ledger", "8.00:"],
    ]
    assert sentences[2].endswith("here they agree (relative difference 0.00%).")
    assert dp_sentences({"claimed_epsilon": float("inf")})[0].startswith("Claimed inf:")
    assert dp_sentences({"seconds": 3.0}) == []


def test_the_summary_names_the_run_threshold_and_falls_back_for_an_unknown_check() -> None:
    explain = explanations(AuditConfig(mia_max_auc=0.7))
    sentence = summary_sentence("pass", "AUC 0.51.", explain["mia"])
    assert "AUC lower 95% bound exceeds 0.7" in sentence and "Result: AUC 0.51. PASS means" in sentence
    assert "it does not mean that no attack could" in sentence
    assert summary_sentence("fail", "bad.", explain["ledger"]).endswith("the findings in its section say where.")
    assert summary_sentence("pass", "Signatures verify.", explain.get("signatures")) == "Signatures verify."


def test_the_matrix_reads_the_non_member_count_of_a_members_slash_non_members_cell() -> None:
    """The MIA audit's table gives both counts (``600 / 2000``); the non-members resolve the FPR."""
    columns = ["target", "attack", "members / non-members", "AUC", "TPR@1%FPR", "TPR@0.1%FPR"]
    rows = [
        ["client-1 SLM", "LiRA", "600 / 2000", "0.59 [0.56, 0.62]", "0.016 [g]", "0.002 [h]"],
        ["server LLM", "LOSS (LoRA round-2)", "100 / 100", "0.49 [0.38, 0.6]", "0.01 [i]", "0.0 [j]"],
    ]
    html = mia_matrix_html(Table("MIA", columns, rows))
    assert '<td class="num">600 / 2000</td>' in html and "0.002 [h]" in html  # 2000 x 0.1% = 2: resolvable
    assert "0.01 [i]" in html and "0.0 [j]" not in html and "not resolvable with n=100" in html
    assert "n=?" not in html
