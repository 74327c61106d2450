"""SLM evaluation: argmax predictions scored by accuracy and macro-F1."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from crosslm_secure.data.records import Example
from crosslm_secure.eval.slm_eval import evaluate_slm
from tests.tiny_models import tiny_bert_dir

CPU = torch.device("cpu")


class KeywordModel(torch.nn.Module):
    """Predicts class c when the text contains the token of ``keywords[c]`` (else class 0)."""

    def __init__(self, keyword_ids: list[int]) -> None:
        super().__init__()
        self.keyword_ids = keyword_ids
        self.config = SimpleNamespace(model_type="bert")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        logits = torch.zeros(input_ids.shape[0], len(self.keyword_ids))
        logits[:, 0] = 0.5
        for label, token in enumerate(self.keyword_ids):
            logits[:, label] += 2.0 * (input_ids == token).any(dim=1).float()
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert_dir(tmp_path_factory.mktemp("eval")))


def test_metrics_match_hand_computed_values(tokenizer: object) -> None:
    model = KeywordModel(tokenizer.convert_tokens_to_ids(["bad", "okay", "good"]))
    examples = [
        Example("1", "bad drug", 0),  # -> 0 correct
        Example("2", "the drug", 1),  # -> 0 wrong
        Example("3", "okay drug", 1),  # -> 1 correct
        Example("4", "good drug", 2),  # -> 2 correct
        Example("5", "okay i guess", 2),  # -> 1 wrong
    ]
    result = evaluate_slm(tokenizer, model, examples, num_labels=3, max_length=16, batch_size=2, device=CPU)
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: tp1 fp1 fn1 -> 1/2; class 2: tp1 fp0 fn1 -> 2/3
    assert result["n"] == 5
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert result["predicted"] == [0, 0, 1, 2, 1]  # kept per record, in order, for the report's intervals


def test_no_examples_scores_zero(tokenizer: object) -> None:
    model = KeywordModel([1, 2, 3])
    result = evaluate_slm(tokenizer, model, [], num_labels=3, max_length=16, batch_size=2, device=CPU)
    assert result == {"accuracy": 0.0, "macro_f1": 0.0, "n": 0, "predicted": []}
