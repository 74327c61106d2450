"""The golden shape masks numbers, so an audit's saved JSON keeps one shape whatever the noise drew."""

from __future__ import annotations

from pathlib import Path

from tests.unit.audit.golden import shape


def test_a_number_keeps_its_shape_whichever_sign_the_noise_gave_it() -> None:
    run = Path("/runs/r1")
    negative = shape("Measured canary shift -0.12x the claimed mechanism's; CI [-0.3, 1e-3].", run)
    positive = shape("Measured canary shift 1.58x the claimed mechanism's; CI [0.4, 2.5e+1].", run)
    assert negative == positive == "Measured canary shift #x the claimed mechanism's; CI [#, #]."
    assert shape("client-1 (white-box): 19/27 guesses right", run) == "client-# (white-box): #/# guesses right"
