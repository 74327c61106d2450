"""Scoring: s_i = softmax(logits)[intended_label], in order, clipped, validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslm_secure.client.scoring import fit_temperature, score_samples, tempered
from crosslm_secure.config import FeedbackConfig, SLMConfig
from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.errors import DataError
from crosslm_secure.models.slm import load_slm
from crosslm_secure.server.acceptance import accept_samples
from tests.tiny_models import tiny_bert_dir

CPU = torch.device("cpu")
TEXTS = ["the drug was great", "awful pain and nausea all day long", "okay", "it helped"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, torch.nn.Module]:
    folder = tiny_bert_dir(tmp_path_factory.mktemp("scoring"), seed=3)
    return load_slm(SLMConfig(model=str(folder)), 3, CPU, seed=0)


def _softmax_by_hand(tokenizer: object, model: torch.nn.Module, text: str) -> np.ndarray:
    with torch.no_grad():
        logits = model(**tokenizer([text], return_tensors="pt")).logits[0]
    return torch.softmax(logits.double(), dim=-1).numpy()


def test_scores_match_softmax_of_the_intended_label(tiny: tuple) -> None:
    tokenizer, model = tiny
    labels = [2, 0, 1, 2]
    samples = [SyntheticSample(f"s{i}", t, y) for i, (t, y) in enumerate(zip(TEXTS, labels, strict=True))]
    scores = score_samples(tokenizer, model, samples, max_length=32, batch_size=3, device=CPU)
    assert scores.dtype == np.float64 and scores.shape == (4,)
    expected = [_softmax_by_hand(tokenizer, model, t)[y] for t, y in zip(TEXTS, labels, strict=True)]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert ((scores >= 0) & (scores <= 1)).all()


def test_scores_respond_to_the_intended_label(tiny: tuple) -> None:
    tokenizer, model = tiny
    per_label = np.stack(
        [
            score_samples(
                tokenizer,
                model,
                [SyntheticSample(f"s{i}", t, label) for i, t in enumerate(TEXTS)],
                max_length=32,
                batch_size=8,
                device=CPU,
            )
            for label in range(3)
        ],
        axis=1,
    )
    np.testing.assert_allclose(per_label.sum(axis=1), 1.0, atol=1e-6)
    assert not np.allclose(per_label[:, 0], per_label[:, 1])


def test_empty_batch_gives_an_empty_vector(tiny: tuple) -> None:
    tokenizer, model = tiny
    scores = score_samples(tokenizer, model, [], max_length=32, batch_size=8, device=CPU)
    assert scores.dtype == np.float64 and scores.shape == (0,)


def test_unknown_intended_label_is_refused(tiny: tuple) -> None:
    tokenizer, model = tiny
    samples = [SyntheticSample("ok", "fine", 1), SyntheticSample("bad-7", "fine", 3)]
    with pytest.raises(DataError, match="bad-7 has intended label 3.*0..2"):
        score_samples(tokenizer, model, samples, max_length=32, batch_size=8, device=CPU)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 3
    true_probs = np.exp(logits / 2.0)
    true_probs /= true_probs.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in true_probs])
    overconfident = np.exp(logits)
    overconfident /= overconfident.sum(axis=1, keepdims=True)
    assert fit_temperature(overconfident, labels) == pytest.approx(2.0, rel=0.1)


def test_tempering_keeps_each_samples_label_order_and_sums_to_one() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    flat = tempered(probs, 4.0)
    np.testing.assert_allclose(flat.sum(axis=1), 1.0)
    assert (np.argsort(flat, axis=1) == np.argsort(probs, axis=1)).all()
    assert flat[0, 0] < probs[0, 0]


def _softmax(logits: list[list[float]]) -> np.ndarray:
    raw = np.exp(np.asarray(logits, dtype=np.float64))
    return raw / raw.sum(axis=1, keepdims=True)


def test_with_three_labels_the_temperature_reorders_samples_and_what_acceptance_keeps() -> None:
    # Both samples intend label 0: "wide" leads two rivals by 2, "close" one rival by 0.3 and
    # the other by 12. At T = 1 wide scores higher (0.79 vs 0.57); at T = 8 close does (0.46 vs
    # 0.39), so acceptance's per-label top half keeps the other sample.
    probs = _softmax([[2.0, 0.0, 0.0], [2.2, 1.9, -10.0]])
    labels = np.array([0, 0])
    cold, hot = probs[:, 0], tempered(probs, 8.0)[:, 0]
    assert cold[0] > cold[1] and hot[0] < hot[1]
    cfg = FeedbackConfig(accept_margin=0.0, accept_fraction=0.5, balance=False)
    assert accept_samples(cold, labels, 3, cfg).tolist() == [True, False]
    assert accept_samples(hot, labels, 3, cfg).tolist() == [False, True]


def test_with_two_labels_no_temperature_reorders_samples() -> None:
    rng = np.random.default_rng(1)
    probs = _softmax((rng.normal(size=(200, 2)) * 3).tolist())
    order = np.argsort(probs[:, 0], kind="stable")
    for temperature in (0.25, 2.0, 8.0):
        np.testing.assert_array_equal(np.argsort(tempered(probs, temperature)[:, 0], kind="stable"), order)
