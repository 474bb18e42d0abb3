import math

import pytest

from mmbyol.schedules import lr_schedule, tau_schedule


def test_tau_starts_at_base_and_ends_at_one():
    assert tau_schedule(0, 1000, 0.996) == pytest.approx(0.996)
    assert tau_schedule(1000, 1000, 0.996) == pytest.approx(1.0)
    assert tau_schedule(500, 1000, 0.996) == pytest.approx(1 - 0.004 * 0.5)


def test_tau_follows_the_cosine_formula():
    for k in (1, 137, 640, 999):
        assert tau_schedule(k, 1000, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi * k / 1000) + 1) / 2)
    assert isinstance(tau_schedule(3, 10), float)


def test_lr_warms_up_linearly_then_decays_to_zero():
    assert lr_schedule(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_schedule(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_schedule(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_schedule(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert lr_schedule(100, 100, 1.0, 10) == pytest.approx(0.0)
    values = [lr_schedule(k, 100, 1.0, 10) for k in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
