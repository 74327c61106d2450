"""The judge: a probe on the evaluator's own split that checks synthetic samples' intended labels."""

from __future__ import annotations

import math

import pytest
import torch

from crosslm_secure.config import SLMConfig
from crosslm_secure.eval.judge import Judge
from tests.tiny_models import separable_examples, tiny_bert_dir


@pytest.fixture(scope="module")
def judge(tmp_path_factory) -> Judge:
    folder = tiny_bert_dir(tmp_path_factory.mktemp("tiny"))
    encoder = SLMConfig(model=str(folder), max_length=24)
    return Judge(separable_examples(20), 3, torch.device("cpu"), seed=0, encoder=encoder)


def test_the_judge_agrees_with_right_labels_and_not_with_wrong_ones(judge: Judge) -> None:
    held_out = separable_examples(10, seed=1)
    texts = [ex.text for ex in held_out]
    right = judge.agreement(texts, [ex.label for ex in held_out])
    wrong = judge.agreement(texts, [(ex.label + 1) % 3 for ex in held_out])
    assert right >= 0.8
    assert wrong <= 0.2


def test_no_texts_give_no_agreement(judge: Judge) -> None:
    assert math.isnan(judge.agreement([], []))
    assert judge.predict([]).shape == (0,)
