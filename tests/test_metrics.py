import pytest
import torch

from mmbyol.metrics import collapsed, effective_rank, projection_std


def test_collapse_monitor_tells_healthy_from_collapsed():
    healthy = torch.randn(256, 128)
    assert projection_std(healthy) == pytest.approx(1 / 128**0.5, rel=0.1)
    assert effective_rank(healthy) > 100
    constant = torch.ones(256, 128) + 1e-6 * torch.randn(256, 128)
    assert projection_std(constant) < 1e-3 and effective_rank(constant) < 2
    assert collapsed(projection_std(constant), effective_rank(constant), 128)
    assert not collapsed(projection_std(healthy), effective_rank(healthy), 128)
