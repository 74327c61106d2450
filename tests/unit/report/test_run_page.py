"""report.html of a run: every section, macro-F1 first with its interval, the judge, the set-up a reader cites,
LLM text escaped, nothing fetched from outside."""

from __future__ import annotations

from pathlib import Path

from crosslm_secure.config import config_from_dict
from crosslm_secure.privacy.ledger import Ledger, ledger_path
from crosslm_secure.report.run_page import SECTIONS, write_run_page
from crosslm_secure.report.run_setup import setup_items
from crosslm_secure.runstore import RunStore
from tests.unit.report.kept_runs import INTERVAL, answers, kept_run, two_kept_rounds

ROW0 = {"round": 0, "slm_macro_f1_mean": 0.4, "slm_macro_f1/client-1": 0.4, "llm_macro_f1": 0.3, "seconds_round": 5.0}
ROW1 = ROW0 | {"round": 1, "slm_macro_f1_mean": 0.6, "slm_macro_f1/client-1": 0.6, "seconds_generate": 2.0}


def run_with(tmp_path: Path, synthetic: bool) -> RunStore:
    store = RunStore.create(tmp_path, "t", 0, {})
    store.record_round(ROW0)
    store.record_round(ROW1)
    if synthetic:
        texts = ["</td><script>alert(1)</script>", "fine & dandy", "meh", "great"]
        store.write_synthetic_round(
            1, texts, ["negative", "positive", "negative", "positive"], [0.9, 0.8, 0.1, 0.2], [True, True, False, False]
        )
    return store


def test_every_section_in_order_and_llm_text_is_escaped(tmp_path: Path) -> None:
    store = run_with(tmp_path, synthetic=True)
    text = write_run_page(store, config_from_dict({})).read_text()
    positions = [text.index(f'<section id="{name}">') for name in SECTIONS]
    assert positions == sorted(positions)
    assert "<script" not in text and "&lt;/td&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "fine &amp; dandy" in text
    assert "http://" not in text and "https://" not in text and 'src="data:image/png;base64,' in text
    metrics = text[text.index('<section id="metrics">') :]
    assert metrics.index("SLM macro-F1 (mean)") < metrics.index("SLM acc (mean)")
    synthetic = text[text.index('<section id="synthetic">') :].split("</section>", 1)[0]
    negative_round_1 = '<td class="num">1</td><td>negative</td><td class="num">2</td><td class="num">1</td><td>50%</td>'
    assert negative_round_1 in synthetic


def test_a_run_without_kept_batches_says_so(tmp_path: Path) -> None:
    text = write_run_page(run_with(tmp_path, synthetic=False), config_from_dict({})).read_text()
    assert "This run kept no synthetic batch (server/synthetic/ is empty)" in text
    assert "The client ledgers could not be read: run" in text


def test_every_macro_f1_on_the_page_carries_an_interval_that_brackets_it(tmp_path: Path) -> None:
    store = kept_run(tmp_path, "kept", two_kept_rounds())
    text = write_run_page(store, config_from_dict({})).read_text()
    metrics = text[text.index('<section id="metrics">') :].split("</section>", 1)[0]
    found = INTERVAL.findall(metrics)
    assert len(found) == 2 * 4  # per round: the SLM mean, the LLM and each of two clients
    for point, low, high in found:
        assert float(low) <= float(point) <= float(high) and float(low) < float(high)
    rows = store.rounds()
    shown = {float(point) for point, _, _ in found}
    for key in ("llm_macro_f1", "slm_macro_f1_mean", "slm_macro_f1/client-1", "slm_macro_f1/client-2"):
        assert {round(r[key], 3) for r in rows} <= shown
    headline = text[text.index('<section id="headline">') :].split("</section>", 1)[0]
    assert len(INTERVAL.findall(headline)) == 4  # SLM mean and LLM, round 0 and the last round


def test_the_judges_agreement_is_on_the_page(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "t", 0, {})
    store.record_round(ROW0)
    store.record_round(
        ROW1 | {"synthetic_judge_agreement_accepted": 0.8125, "synthetic_judge_agreement_rejected": 0.25}
    )
    text = write_run_page(store, config_from_dict({})).read_text()
    metrics = text[text.index('<section id="metrics">') :].split("</section>", 1)[0]
    assert "<th>judge agrees (kept)</th><th>judge agrees (dropped)</th>" in metrics
    assert '<td class="num">0.812</td><td class="num">0.250</td>' in metrics


def test_the_setup_names_models_privacy_records_evaluation_sizes_seed_and_noise_source(tmp_path: Path) -> None:
    raw = {
        "run": {"seed": 7},
        "llm": {"model": "models/llm-x"},
        "slm": {"model": "models/slm-y"},
        "partition": {"clients": 2},
        "privacy": {"target_epsilon": 3.0, "delta": 1e-5, "epsilon_max": 9.0},
    }
    store = kept_run(tmp_path, "setup", [{"llm": answers(45, 3), "client-1": answers(30, 3, prefix="a")}], raw)
    per_label = {"negative": 12, "neutral": 10, "positive": 8}
    clients = {"client-1": {"train": 30, "test": 30, "train_by_label": per_label}}
    store.event("data", train=30, test=30, llm_test=80, clients=clients)
    ledger = Ledger(ledger_path(store.root, "client-1"), client_id="client-1")
    ledger.record_dp_sgd(
        run_id=store.run_id,
        round_index=1,
        sample_rate=0.05,
        noise_multiplier=1.0,
        steps=40,
        max_grad_norm=1.0,
        delta=1e-5,
        accountant="rdp",
        epsilon_max=9.0,
    )
    spent = ledger.epsilon("rdp")
    plain = Ledger(ledger_path(store.root, "client-2"), client_id="client-2")
    plain.record_non_private(run_id=store.run_id, round_index=1, steps=10, accountant="rdp", epsilon_max=9.0)
    setup = dict(setup_items(store, config_from_dict(raw), store.rounds()))
    assert setup["seed"] == "7" and setup["LLM"] == "models/llm-x" and setup["SLMs"] == "every client: models/slm-y"
    assert setup["privacy target"] == "epsilon 3 over the planned rounds, delta 1.0e-05, budget epsilon max 9"
    assert setup["epsilon spent client-1 (ledger)"] == f"{spent:.3f} at delta 1.0e-05"
    assert setup["epsilon spent client-2 (ledger)"] == "inf (no DP)"
    assert setup["records client-1 (train)"] == "30 (negative 12, neutral 10, positive 8); held-out test 30"
    held_out = "each SLM on its client's held-out test records (the records lines)"
    assert setup["evaluation n (test records)"] == f"LLM 45 (evaluator's split); {held_out}"
    assert setup["noise source"] == "os"  # the default of a config without privacy.noise_source
    page = write_run_page(store, config_from_dict(raw)).read_text()
    shown = page[page.index('<section id="setup">') :]
    assert (
        "<td>records client-1 (train)</td><td>30 (negative 12, neutral 10, positive 8); held-out test 30</td>" in shown
    )
    assert "<td>noise source</td><td>os</td>" in shown


def test_the_setup_reads_the_noise_source_from_the_run_config(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "t", 0, {"privacy": {"noise_source": "hardware"}})
    assert dict(setup_items(store, config_from_dict({}), []))["noise source"] == "hardware"
