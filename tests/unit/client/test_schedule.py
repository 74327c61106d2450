"""The private-training schedule: full batches and many steps for a head, minibatch epochs for full."""

from __future__ import annotations

import pytest

from crosslm_secure.client.schedule import PrivateSchedule, private_schedule
from crosslm_secure.config import SLMConfig


def test_head_defaults_to_full_batch_gradient_descent_counted_in_steps() -> None:
    assert private_schedule(SLMConfig(trainable="head"), 200) == PrivateSchedule(1.0, 100, "sgd", 2.0)


def test_full_fine_tuning_keeps_minibatch_epochs_with_adamw() -> None:
    cfg = SLMConfig(trainable="full", batch_size=20, private_epochs=2, learning_rate=5e-5)
    # q = 20/200 = 0.1 -> 10 draws per epoch, 2 epochs
    assert private_schedule(cfg, 200) == PrivateSchedule(0.1, 20, "adamw", 5e-5)


def test_every_field_can_be_set() -> None:
    cfg = SLMConfig(private_steps=7, private_sample_rate=0.5, private_optimizer="adamw", private_learning_rate=0.3)
    assert private_schedule(cfg, 1000) == PrivateSchedule(0.5, 7, "adamw", 0.3)


def test_a_head_with_adamw_uses_the_adamw_learning_rate() -> None:
    schedule = private_schedule(SLMConfig(private_optimizer="adamw", learning_rate=1e-2), 100)
    assert (schedule.optimizer, schedule.learning_rate) == ("adamw", 1e-2)


@pytest.mark.parametrize("rate", [0.0, 1.5])
def test_a_sample_rate_outside_0_1_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="private_sample_rate"):
        SLMConfig(private_sample_rate=rate)


def test_an_optimizer_name_outside_the_schedule_s_two_is_refused_not_replaced() -> None:
    import torch

    from crosslm_secure.client.scheduled import _optimizer
    from crosslm_secure.errors import ConfigError

    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(_optimizer("sgd", params, 0.1), torch.optim.SGD)
    assert isinstance(_optimizer("adamw", params, 0.1), torch.optim.AdamW)
    with pytest.raises(ConfigError, match=r"private_optimizer 'adam' is not one of sgd, adamw"):
        _optimizer("adam", params, 0.1)
