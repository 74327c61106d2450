"""report.html of a run: every section, macro-F1 first, LLM text escaped, nothing fetched from outside."""

from __future__ import annotations

from pathlib import Path

from crosslm_secure.config import config_from_dict
from crosslm_secure.report.run_page import SECTIONS, write_run_page
from crosslm_secure.runstore import RunStore

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
