"""PlainTrainer: learns a separable task, is seeded, reports honestly, leaves eval mode."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from crosslm_secure.client.plain_trainer import PlainTrainer
from crosslm_secure.client.scoring import score_samples
from crosslm_secure.client.trainer import SLMTrainer
from crosslm_secure.config import SLMConfig
from crosslm_secure.data.records import SyntheticSample
from crosslm_secure.eval.slm_eval import evaluate_slm
from crosslm_secure.models.slm import load_slm
from tests.tiny_models import separable_examples, tiny_bert_dir

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_dir(tmp_path_factory.mktemp("trainer"), hidden_size=32)


def _cfg(folder: Path, **changes: object) -> SLMConfig:
    base = dict(model=str(folder), max_length=16, batch_size=8, learning_rate=3e-3, private_epochs=10, trainable="full")
    return SLMConfig(**{**base, **changes})


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_lowers_loss_and_learns_a_separable_task(folder: Path) -> None:
    cfg = _cfg(folder)
    tokenizer, model = load_slm(cfg, 3, CPU, seed=0)
    train, test = separable_examples(16, seed=1), separable_examples(10, seed=2)
    before = evaluate_slm(tokenizer, model, test, num_labels=3, max_length=16, batch_size=32, device=CPU)
    trainer = PlainTrainer(cfg, CPU, seed=0, progress=False)
    report = trainer.train_private(model, tokenizer, train, round_index=1)
    after = evaluate_slm(tokenizer, model, test, num_labels=3, max_length=16, batch_size=32, device=CPU)

    losses = report.details["epoch_losses"]
    assert len(losses) == 10 and losses[-1] < 0.6 * losses[0]
    assert after["accuracy"] >= 0.9 > before["accuracy"]
    assert not model.training
    assert report.steps == 10 * 6 and report.examples_seen == 10 * 48
    assert report.mean_loss == pytest.approx(float(np.mean(losses)), rel=0.05)
    assert report.epsilon == math.inf and report.seconds > 0

    # The trained SLM now scores samples by whether they read like their intended label.
    right = [SyntheticSample(ex.uid, ex.text, ex.label) for ex in test]
    wrong = [SyntheticSample(ex.uid, ex.text, (ex.label + 1) % 3) for ex in test]
    right_scores, wrong_scores = (
        score_samples(tokenizer, model, samples, max_length=16, batch_size=8, device=CPU) for samples in (right, wrong)
    )
    assert right_scores.mean() > 0.5 and right_scores.mean() > 2 * wrong_scores.mean()


def test_same_seed_and_round_give_the_same_model(folder: Path) -> None:
    cfg = _cfg(folder, private_epochs=1)
    train = separable_examples(8, seed=3)

    def trained(seed: int, round_index: int) -> torch.Tensor:
        tokenizer, model = load_slm(cfg, 3, CPU, seed=0)
        PlainTrainer(cfg, CPU, seed=seed, progress=False).train_private(
            model, tokenizer, train, round_index=round_index
        )
        return _weights(model)

    first = trained(0, 1)
    assert torch.equal(first, trained(0, 1))
    assert not torch.equal(first, trained(0, 2))
    assert not torch.equal(first, trained(1, 1))


def test_public_training_uses_synthetic_epochs_and_zero_epochs_is_a_no_op(folder: Path) -> None:
    cfg = _cfg(folder, private_epochs=0, synthetic_epochs=2)
    tokenizer, model = load_slm(cfg, 3, CPU, seed=0)
    trainer = PlainTrainer(cfg, CPU, seed=0, progress=False)
    start = _weights(model)
    nothing = trainer.train_private(model, tokenizer, separable_examples(4), round_index=1)
    assert nothing.steps == 0 and math.isnan(nothing.mean_loss)
    assert torch.equal(start, _weights(model))
    public = trainer.train_public(model, tokenizer, separable_examples(4), round_index=1)
    assert public.steps == 2 * 2 and public.details["phase"] == "public"
    assert not torch.equal(start, _weights(model))
    assert trainer.train_public(model, tokenizer, [], round_index=2).steps == 0


def test_is_a_non_private_slm_trainer(folder: Path) -> None:
    trainer: SLMTrainer = PlainTrainer(_cfg(folder), CPU, seed=0, progress=False)
    assert trainer.private is False
    assert trainer.decline_reason(5) is None


@pytest.mark.e2e
def test_embedded_minilm_trains_a_few_steps() -> None:
    cfg = SLMConfig(max_length=32, batch_size=8, learning_rate=1e-4, private_epochs=1)
    tokenizer, model = load_slm(cfg, 3, CPU, seed=0)
    train = separable_examples(8, seed=4)
    report = PlainTrainer(cfg, CPU, seed=0, progress=False).train_private(model, tokenizer, train, round_index=1)
    assert report.steps == 3 and math.isfinite(report.mean_loss)
    assert not model.training
