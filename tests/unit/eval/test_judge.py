"""The judge: a probe on the evaluator's own split that checks synthetic samples' intended labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crosslm_secure.config import SLMConfig
from crosslm_secure.eval.judge import Judge
from tests.tiny_models import separable_examples, tiny_bert_dir


def agreement(judge: Judge, texts: list[str], intended: list[int]) -> float:
    """Share of ``texts`` whose judged label is the intended one (nan for none), as the coordinator counts it."""
    if not texts:
        return float("nan")
    return float(np.mean(judge.predict(texts) == np.asarray(intended)))


@pytest.fixture(scope="module")
def judge(tmp_path_factory) -> Judge:
    folder = tiny_bert_dir(tmp_path_factory.mktemp("tiny"))
    encoder = SLMConfig(model=str(folder), max_length=24)
    return Judge(separable_examples(20), 3, torch.device("cpu"), seed=0, encoder=encoder)


def test_the_judge_agrees_with_right_labels_and_not_with_wrong_ones(judge: Judge) -> None:
    held_out = separable_examples(10, seed=1)
    texts = [ex.text for ex in held_out]
    right = agreement(judge, texts, [ex.label for ex in held_out])
    wrong = agreement(judge, texts, [(ex.label + 1) % 3 for ex in held_out])
    assert right >= 0.8
    assert wrong <= 0.2


def test_no_texts_give_no_agreement(judge: Judge) -> None:
    assert math.isnan(agreement(judge, [], []))
    assert judge.predict([]).shape == (0,)
