import pytest
import torch

from mmbyol.metrics import collapsed, effective_rank, effective_rank_error, projection_std


def test_collapse_monitor_tells_healthy_from_collapsed():
    healthy = torch.randn(256, 128)
    assert projection_std(healthy) == pytest.approx(1 / 128**0.5, rel=0.1)
    assert effective_rank(healthy) > 100
    constant = torch.ones(256, 128) + 1e-6 * torch.randn(256, 128)
    assert projection_std(constant) < 1e-3 and effective_rank(constant) < 2
    assert collapsed(projection_std(constant), effective_rank(constant), 128)
    assert not collapsed(projection_std(healthy), effective_rank(healthy), 128)


def test_rankmes_bootstrap_error_is_its_spread_over_other_draws_of_the_items():
    scale = torch.exp(-torch.arange(64) / 4.0)  # a decaying spectrum, as trained features have
    generator = torch.Generator().manual_seed(0)
    draws = [torch.randn(140, 64, generator=generator) * scale for _ in range(200)]
    spread = torch.tensor([effective_rank(x) for x in draws]).std()
    state = torch.random.get_rng_state()
    errors = torch.tensor([effective_rank_error(x, seed=i) for i, x in enumerate(draws[:8])])
    assert torch.equal(torch.random.get_rng_state(), state)  # a generator of its own
    assert 0.7 * spread < errors.mean() < 1.3 * spread  # one draw's bootstrap tells the spread over draws
    assert effective_rank_error(draws[0]) == effective_rank_error(draws[0])  # seeded: the same each time
    larger = effective_rank_error(torch.randn(1400, 64, generator=generator) * scale)
    assert 2 < errors.mean() / larger < 5  # ten times the items: about a third of the error (1/√10)
    # identical rows: every resample is the same matrix, whose RankMe does not move
    assert effective_rank_error(torch.ones(50, 8)) == pytest.approx(0, abs=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        effective_rank_error(draws[0], draws=1)
