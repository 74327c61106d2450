"""DPTrainer: DP-SGD rounds, ledger entries, resume, crash safety, preflight refusals."""

from __future__ import annotations

import math

import pytest
import torch
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from crosslm_secure.client import dp_trainer
from crosslm_secure.client.dp_preflight import check_weights_moved, preflight
from crosslm_secure.client.trainers import slm_trainer
from crosslm_secure.config import SLMConfig
from crosslm_secure.data.public_text import public_texts
from crosslm_secure.data.records import Example
from crosslm_secure.errors import PrivacyError
from crosslm_secure.models.batches import sentence_embeddings
from crosslm_secure.models.slm import load_slm
from crosslm_secure.privacy.ledger import Ledger, ledger_path
from crosslm_secure.privacy.settings import PrivacyConfig
from tests.tiny_models import separable_examples, tiny_bert_dir

N_PER_LABEL = 8  # 24 records; batch 8 -> q = 1/3, 3 Poisson draws per epoch
PRIVACY = PrivacyConfig(target_epsilon=None, noise_multiplier=1.0, accountant="rdp")


def fixed_clock() -> str:
    return "2026-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_bert_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def examples():
    return separable_examples(N_PER_LABEL)


def slm_config(model_dir) -> SLMConfig:
    return SLMConfig(
        model=str(model_dir), batch_size=8, private_epochs=1, max_length=24, learning_rate=1e-2, trainable="full"
    )


def load(model_dir):
    return load_slm(slm_config(model_dir), 3, torch.device("cpu"), seed=0)


def make_trainer(model_dir, root, privacy=PRIVACY, *, num_records=3 * N_PER_LABEL, run_id="run"):
    ledger = Ledger(ledger_path(root, "client-1"), client_id="client-1", clock=fixed_clock)
    return slm_trainer(
        slm_config(model_dir),
        privacy,
        ledger=ledger,
        run_id=run_id,
        client_id="client-1",
        planned_rounds=2,
        num_records=num_records,
        device="cpu",
        seed=0,
        progress=False,
    )


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_unwrapped(model):
    assert not model.training
    assert not any(hasattr(p, "grad_sample") or hasattr(p, "_norm_sample") for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_rounds_train_and_record(model_dir, examples, tmp_path, mode):
    tokenizer, model = load(model_dir)
    trainer = make_trainer(model_dir, tmp_path, PRIVACY.model_copy(update={"grad_sample_mode": mode}))
    before = weights(model)
    reports = [trainer.train_private(model, tokenizer, examples, round_index=r) for r in (0, 1)]
    assert [r.steps for r in reports] == [3, 3]
    entries = trainer.ledger.entries
    assert [(e.round, e.mechanism, e.steps, e.sample_rate, e.noise_multiplier) for e in entries] == [
        (0, "dp-sgd", 3, 8 / 24, 1.0),
        (1, "dp-sgd", 3, 8 / 24, 1.0),
    ]
    assert reports[1].epsilon == entries[1].epsilon["rdp"] > reports[0].epsilon > 0
    assert reports[1].details["epsilon_by_accountant"] == entries[1].epsilon
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert_unwrapped(model)


def test_lora_trains_only_adapters_and_head(model_dir, examples, tmp_path):
    tokenizer, model = load(model_dir)
    trainer = make_trainer(model_dir, tmp_path, PRIVACY.model_copy(update={"lora_rank": 4}))
    trainer.prepare_model(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    before = weights(model)
    report = trainer.train_private(model, tokenizer, examples, round_index=0)
    assert report.steps == 3
    moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert moved == trainable
    assert_unwrapped(model)


def test_recorded_round_is_not_trained_again(model_dir, examples, tmp_path):
    tokenizer, model = load(model_dir)
    trainer = make_trainer(model_dir, tmp_path)
    first = trainer.train_private(model, tokenizer, examples, round_index=0)
    after_first = weights(model)
    again = trainer.train_private(model, tokenizer, examples, round_index=0)
    assert "already in the ledger" in again.details["skipped"]
    assert again.steps == 0 and again.epsilon == first.epsilon
    assert len(trainer.ledger) == 1
    assert all(torch.equal(after_first[n], p) for n, p in model.named_parameters())


def test_crash_before_ledger_write_then_resume_gives_the_same_ledger(model_dir, examples, tmp_path, monkeypatch):
    tokenizer, model = load(model_dir)
    uninterrupted = make_trainer(model_dir, tmp_path / "a")
    for r in (0, 1):
        uninterrupted.train_private(model, tokenizer, examples, round_index=r)

    tokenizer, model = load(model_dir)
    crashing = make_trainer(model_dir, tmp_path / "b")
    crashing.train_private(model, tokenizer, examples, round_index=0)

    def crash(**_):
        raise KeyboardInterrupt("killed between training and the ledger write")

    monkeypatch.setattr(crashing.ledger, "record_dp_sgd", crash)
    with pytest.raises(KeyboardInterrupt):
        crashing.train_private(model, tokenizer, examples, round_index=1)
    monkeypatch.undo()

    # A new process: reopen the ledger from disk and run the unfinished round again.
    tokenizer, model = load(model_dir)
    resumed = make_trainer(model_dir, tmp_path / "b")
    assert [e.round for e in resumed.ledger.entries] == [0]
    resumed.train_private(model, tokenizer, examples, round_index=0)  # skipped: recorded
    resumed.train_private(model, tokenizer, examples, round_index=1)
    assert resumed.ledger.path.read_bytes() == uninterrupted.ledger.path.read_bytes()


def test_failure_midway_restores_weights_and_records_nothing(model_dir, examples, tmp_path, monkeypatch):
    tokenizer, model = load(model_dir)
    trainer = make_trainer(model_dir, tmp_path)
    before = weights(model)
    calls = {"n": 0}
    real_forward = dp_trainer.forward_logits

    def flaky_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("device lost")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(dp_trainer, "forward_logits", flaky_forward)
    with pytest.raises(RuntimeError, match="device lost"):
        trainer.train_private(model, tokenizer, examples, round_index=0)
    assert calls["n"] == 2
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())
    assert len(trainer.ledger) == 0
    assert_unwrapped(model)


def test_weights_that_do_not_move_are_refused(model_dir, examples, tmp_path, monkeypatch):
    tokenizer, model = load(model_dir)
    trainer = make_trainer(model_dir, tmp_path)
    monkeypatch.setattr(dp_trainer.torch.optim, "AdamW", lambda params, lr: torch.optim.SGD(params, lr=0.0))
    with pytest.raises(PrivacyError, match="did not change after the first DP step"):
        trainer.train_private(model, tokenizer, examples, round_index=0)
    assert len(trainer.ledger) == 0


def test_wrong_record_count_is_refused(model_dir, examples, tmp_path):
    tokenizer, model = load(model_dir)
    trainer = make_trainer(model_dir, tmp_path, num_records=30)
    with pytest.raises(PrivacyError, match="set up for 30 records but got 24"):
        trainer.train_private(model, tokenizer, examples, round_index=0)


def test_delta_at_or_above_one_over_n_is_refused(model_dir, tmp_path):
    with pytest.raises(PrivacyError, match="must be below 1/n"):
        make_trainer(model_dir, tmp_path, PRIVACY.model_copy(update={"delta": 0.05}))


def test_non_private_is_recorded_as_infinite_epsilon(model_dir, examples, tmp_path):
    tokenizer, model = load(model_dir)
    trainer = make_trainer(model_dir, tmp_path, PrivacyConfig(dp=False))
    report = trainer.train_private(model, tokenizer, examples, round_index=0)
    assert math.isinf(report.epsilon) and report.details["privacy"] == "non-private: epsilon = inf"
    (entry,) = trainer.ledger.entries
    assert entry.mechanism == "non-private" and math.isinf(entry.spent())


def test_public_training_costs_nothing(model_dir, examples, tmp_path):
    tokenizer, model = load(model_dir)
    trainer = make_trainer(model_dir, tmp_path)
    report = trainer.train_public(model, tokenizer, examples[:8], round_index=0)
    assert report.steps == 1 and report.epsilon == 0.0
    assert len(trainer.ledger) == 0


# ---- preflight refusals (one sentence each) -------------------------------------------


def tiny_dataset(n: int = 12) -> TensorDataset:
    return TensorDataset(torch.randn(n, 4), torch.randint(0, 2, (n,)))


def linear_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 2)).train()


def test_preflight_accepts_poisson_at_the_accounted_rate():
    preflight(linear_model(), DPDataLoader(tiny_dataset(), sample_rate=0.25), sample_rate=0.25)


def test_preflight_refuses_weighted_sampling():
    data = tiny_dataset()
    loader = DataLoader(data, batch_size=4, sampler=WeightedRandomSampler([1.0] * len(data), len(data)))
    with pytest.raises(PrivacyError, match="weighted sampling"):
        preflight(linear_model(), loader, sample_rate=0.25)


def test_preflight_refuses_non_poisson_sampling():
    with pytest.raises(PrivacyError, match="needs Poisson sampling.*BatchSampler"):
        preflight(linear_model(), DataLoader(tiny_dataset(), batch_size=4, shuffle=True), sample_rate=0.25)


def test_preflight_refuses_another_sample_rate():
    with pytest.raises(PrivacyError, match="samples at rate 0.5 but 0.25 is accounted"):
        preflight(linear_model(), DPDataLoader(tiny_dataset(), sample_rate=0.5), sample_rate=0.25)


def test_preflight_refuses_no_trainable_parameters():
    model = linear_model().requires_grad_(False)
    with pytest.raises(PrivacyError, match="no trainable parameters"):
        preflight(model, DPDataLoader(tiny_dataset(), sample_rate=0.25), sample_rate=0.25)


def test_preflight_refuses_eval_mode():
    with pytest.raises(PrivacyError, match="not in train mode"):
        preflight(linear_model().eval(), DPDataLoader(tiny_dataset(), sample_rate=0.25), sample_rate=0.25)


def test_preflight_refuses_unsupported_layers():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).train()
    with pytest.raises(PrivacyError, match="Opacus cannot train this model privately.*BatchNorm"):
        preflight(model, DPDataLoader(tiny_dataset(), sample_rate=0.25), sample_rate=0.25)


def test_check_weights_moved_names_the_frozen_tensor():
    model = linear_model()
    trainable = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in trainable.items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    with pytest.raises(PrivacyError, match=r"1 trainable tensor\(s\) did not change.*0.bias"):
        check_weights_moved(before, trainable)


# --- head-only SLM: cached features, public centre, synthetic samples as public steps ---------


HEAD_PRIVACY = PrivacyConfig(target_epsilon=None, noise_multiplier=20.0, accountant="rdp")


def head_trainer(model_dir, root, privacy=HEAD_PRIVACY, **slm):
    cfg = SLMConfig(model=str(model_dir), max_length=24, trainable="head", private_steps=30, **slm)
    ledger = Ledger(ledger_path(root, "client-1"), client_id="client-1", clock=fixed_clock)
    trainer = slm_trainer(
        cfg,
        privacy,
        ledger=ledger,
        run_id="run",
        client_id="client-1",
        planned_rounds=2,
        num_records=3 * N_PER_LABEL,
        device="cpu",
        seed=0,
        progress=False,
    )
    tokenizer, model = load_slm(cfg, 3, torch.device("cpu"), seed=0)
    return trainer, tokenizer, model


def test_a_head_trains_at_full_batch_on_features_centred_on_public_text(model_dir, examples, tmp_path):
    trainer, tokenizer, model = head_trainer(model_dir, tmp_path)
    encoder_before = {n: p.detach().clone() for n, p in model.encoder.named_parameters()}
    head_before = model.classifier.weight.detach().clone()
    report = trainer.train_private(model, tokenizer, examples, round_index=1)
    entry = trainer.ledger.find("run", 1, "dp-sgd")
    assert (entry.sample_rate, entry.steps, report.steps) == (1.0, 30, 30)
    assert not torch.equal(model.classifier.weight, head_before)
    assert all(torch.equal(p, encoder_before[n]) for n, p in model.encoder.named_parameters())
    encode = {"max_length": 24, "batch_size": 64}
    public = sentence_embeddings(tokenizer, model, public_texts(), **encode).mean(dim=0)
    private = sentence_embeddings(tokenizer, model, [ex.text for ex in examples], **encode).mean(dim=0)
    torch.testing.assert_close(model.feature_mean, public)
    assert not torch.allclose(model.feature_mean, private, atol=1e-3), "the centre must not be a private mean"
    assert_unwrapped(model)


def test_synthetic_samples_join_the_next_private_round_without_changing_its_accounting(model_dir, examples, tmp_path):
    synthetic = [Example(uid=f"syn:{i}", text=ex.text, label=ex.label) for i, ex in enumerate(examples[::3])]
    trainer, tokenizer, model = head_trainer(model_dir, tmp_path / "a")
    stored = trainer.train_public(model, tokenizer, synthetic, round_index=1)
    assert stored.steps == 0 and len(trainer.synthetic.before(2)) == len(synthetic)
    trainer.train_public(model, tokenizer, synthetic + synthetic[:1], round_index=1)
    assert len(trainer.synthetic.before(2)) == len(synthetic), "a sample sent twice is kept once"
    assert trainer.synthetic.before(1) == [], "a round trains only on samples of earlier rounds"
    report = trainer.train_private(model, tokenizer, examples, round_index=2)
    assert report.details["synthetic_in_training"] == len(synthetic)
    alone, tokenizer_b, model_b = head_trainer(model_dir, tmp_path / "b")
    alone.train_private(model_b, tokenizer_b, examples, round_index=2)
    entries = [t.ledger.find("run", 2, "dp-sgd") for t in (trainer, alone)]
    assert [(e.sample_rate, e.steps, e.noise_multiplier) for e in entries[:1]] == [
        (e.sample_rate, e.steps, e.noise_multiplier) for e in entries[1:]
    ]


def test_same_round_timing_joins_the_samples_kept_in_the_round_being_trained(model_dir, examples, tmp_path):
    """run.synthetic_timing: same_round sends a round's samples before its private training, which asks
    for them with ``through``; without it the round trains only on earlier rounds' samples."""
    synthetic = [Example(uid=f"syn:{i}", text=ex.text, label=ex.label) for i, ex in enumerate(examples[::3])]
    later, tokenizer, model = head_trainer(model_dir, tmp_path / "next")
    later.train_public(model, tokenizer, synthetic, round_index=1)
    report = later.train_private(model, tokenizer, examples, round_index=1)
    assert report.details["synthetic_in_training"] == 0
    same, tokenizer_b, model_b = head_trainer(model_dir, tmp_path / "same")
    same.train_public(model_b, tokenizer_b, synthetic, round_index=1)
    report = same.train_private(model_b, tokenizer_b, examples, round_index=1, through=1)
    assert report.details["synthetic_in_training"] == len(synthetic)
    assert not torch.equal(model.classifier.weight, model_b.classifier.weight)
    entries = [t.ledger.find("run", 1, "dp-sgd") for t in (later, same)]
    assert len({(e.sample_rate, e.steps, e.noise_multiplier) for e in entries}) == 1, "the accounting is unchanged"


def test_a_ratio_weight_is_the_synthetic_samples_over_the_private_records(model_dir, examples, tmp_path):
    plain = PrivacyConfig(dp=False)  # deterministic, so the two weightings can be compared exactly
    synthetic = [Example(uid=f"syn:{i}", text=ex.text, label=ex.label) for i, ex in enumerate(examples[::4])]
    ratio = len(synthetic) / len(examples)
    trained = {}
    for name, weight in (("ratio", "ratio"), ("number", ratio), ("default", 0.5)):
        trainer, tokenizer, model = head_trainer(model_dir, tmp_path / name, plain, synthetic_weight=weight)
        trainer.train_public(model, tokenizer, synthetic, round_index=1)
        report = trainer.train_private(model, tokenizer, examples, round_index=2)
        trained[name] = (model.classifier.weight.detach().clone(), report.details["synthetic_weight"])
    assert trained["ratio"][1] == pytest.approx(ratio) and 0 < ratio != 0.5
    torch.testing.assert_close(trained["ratio"][0], trained["number"][0])
    assert not torch.allclose(trained["ratio"][0], trained["default"][0])
    first = head_trainer(model_dir, tmp_path / "first", plain, synthetic_weight="ratio")
    assert first[0].train_private(first[2], first[1], examples, round_index=1).details["synthetic_weight"] == 0


def test_non_private_head_runs_the_same_schedule_and_synthetic_steps_move_it(model_dir, examples, tmp_path):
    plain = PrivacyConfig(dp=False)
    with_synthetic, tokenizer, model = head_trainer(model_dir, tmp_path / "a", plain)
    with_synthetic.train_public(model, tokenizer, [Example("syn:0", "good good good", 2)], round_index=1)
    report = with_synthetic.train_private(model, tokenizer, examples, round_index=2)
    assert report.steps == 30 and math.isinf(report.epsilon)
    alone, tokenizer_b, model_b = head_trainer(model_dir, tmp_path / "b", plain)
    alone.train_private(model_b, tokenizer_b, examples, round_index=2)
    assert not torch.equal(model.classifier.weight, model_b.classifier.weight)
    again, tokenizer_c, model_c = head_trainer(model_dir, tmp_path / "c", plain)
    again.train_private(model_c, tokenizer_c, examples, round_index=2)
    torch.testing.assert_close(model_b.classifier.weight, model_c.classifier.weight)


# --- where the noise comes from: privacy.noise_source ---------------------------------------


def test_seeded_noise_repeats_a_round_exactly_and_os_noise_never_does(model_dir, examples, tmp_path):
    """seeded: same seed, same Poisson draws, noise and dropout, so the same weights; os: fresh every time."""

    def trained(name: str, source: str, seed: int = 0) -> dict[str, torch.Tensor]:
        ledger = Ledger(ledger_path(tmp_path / name, "client-1"), client_id="client-1", clock=fixed_clock)
        trainer = slm_trainer(
            slm_config(model_dir),
            PRIVACY.model_copy(update={"noise_source": source}),
            ledger=ledger,
            run_id=name,  # a run id of its own: the streams must not depend on it
            client_id="client-1",
            planned_rounds=2,
            num_records=3 * N_PER_LABEL,
            device="cpu",
            seed=seed,
            progress=False,
        )
        tokenizer, model = load(model_dir)
        trainer.train_private(model, tokenizer, examples, round_index=1)
        assert ledger.find(name, 1, "dp-sgd").noise_source == source
        return weights(model)

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(a[n], b[n]) for n in a)

    seeded, again = trained("seeded-a", "seeded"), trained("seeded-b", "seeded")
    assert same(seeded, again)
    assert not same(seeded, trained("seeded-other-seed", "seeded", seed=1))
    assert not same(trained("os-a", "os"), trained("os-b", "os"))
