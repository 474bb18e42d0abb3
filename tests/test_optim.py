import torch
from torch import nn

from mmbyol.optim import LARS, build_optimizer, param_groups


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_param_groups_exclude_biases_and_norm_parameters():
    m = model()
    decayed, excluded = param_groups(m, 0.1)
    assert [p.shape for p in decayed["params"]] == [torch.Size([3, 4])]
    assert len(excluded["params"]) == 3  # linear bias, BN weight, BN bias
    assert excluded["weight_decay"] == 0.0 and excluded["lars_exclude"]


def test_lars_adapts_weights_and_leaves_bias_and_norm_plain():
    m = model()
    optimizer = LARS(param_groups(m, weight_decay=0.5), lr=0.1, momentum=0.9, trust_coefficient=0.001)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    for name, p in m.named_parameters():
        w0, g = before[name], torch.ones_like(p)
        if p.ndim > 1:  # weight decay, then the trust ratio
            update = g + 0.5 * w0
            update = update * 0.001 * w0.norm() / update.norm()
        else:  # no decay, no adaptation
            update = g
        assert torch.allclose(p, w0 - 0.1 * update, atol=1e-7), name


def test_clipped_lars_steps_by_the_adaptive_rate_capped_at_lr():
    for lr, capped in ((1.0, False), (1e-4, True)):
        w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ‖w‖ = 5
        optimizer = LARS([{"params": [w], "weight_decay": 0.0}], lr=lr, momentum=0.9, trust_coefficient=0.02,
                         clip=True)
        w.grad = torch.tensor([[0.0, 0.5]])  # ‖g‖ = 0.5: the adaptive rate is 0.02·5/0.5 = 0.2
        optimizer.step()
        rate = lr if capped else 0.2
        assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0 - rate * 0.5]]), atol=1e-7), lr


def test_lars_momentum_accumulates():
    p = nn.Parameter(torch.zeros(3))
    optimizer = LARS([{"params": [p], "lars_exclude": True, "weight_decay": 0.0}], lr=1.0, momentum=0.9)
    for _ in range(2):
        p.grad = torch.ones(3)
        optimizer.step()
    assert torch.allclose(p, torch.full((3,), -(1 + 1.9)))


def test_adamw_and_sgd_also_exclude_biases_from_decay():
    for name in ("adamw", "sgd"):
        optimizer = build_optimizer(name, model(), lr=0.1, weight_decay=0.3)
        assert [g["weight_decay"] for g in optimizer.param_groups] == [0.3, 0.0]


def test_the_encoder_and_the_predictor_get_their_own_learning_rate_scales():
    from mmbyol import BYOL

    encoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
    model = BYOL(encoder, feature_dim=8, hidden_dim=16, projection_dim=4)
    groups = param_groups(model, 0.1, predictor_lr_scale=10.0, encoder_lr_scale=0.1)
    owner = {id(p): scale for g in groups for p in g["params"] for scale in [g["lr_scale"]]}
    assert {owner[id(p)] for p in model.online_encoder.parameters()} == {0.1}
    assert {owner[id(p)] for p in model.predictor.parameters()} == {10.0}
    assert {owner[id(p)] for p in model.online_projector.parameters()} == {1.0}
    assert not any(id(p) in owner for p in model.target_encoder.parameters())  # the target is not optimized
    assert len(param_groups(model, 0.1)) == 2  # no scales: decayed and excluded only
