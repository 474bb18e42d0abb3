import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmbyol.byol import BYOL, SimCLR, Supervised


class Tiny(nn.Module):
    out_dim = 6

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())

    def forward(self, x):
        return self.net(x)


def make():
    return BYOL(Tiny(), feature_dim=6, hidden_dim=16, projection_dim=5)


def test_submodules_are_named_as_in_the_paper():
    model = make()
    for name in ("online_encoder", "online_projector", "predictor", "target_encoder", "target_projector"):
        assert isinstance(getattr(model, name), nn.Module)
    assert not hasattr(model, "target_predictor")


def test_loss_is_symmetric_in_the_two_views():
    model = make()
    v1, v2 = torch.randn(8, 4), torch.randn(8, 4)
    assert torch.allclose(model(v1, v2), model(v2, v1), atol=1e-6)


def test_loss_sums_the_two_terms():
    model = make()
    v1, v2 = torch.randn(8, 4), torch.randn(8, 4)
    from mmbyol.losses import byol_loss

    p1 = model.predictor(model.online_projector(model.online_encoder(v1)))
    p2 = model.predictor(model.online_projector(model.online_encoder(v2)))
    t1 = model.target_projector(model.target_encoder(v1))
    t2 = model.target_projector(model.target_encoder(v2))
    assert torch.allclose(model(v1, v2), byol_loss(p1, t2) + byol_loss(p2, t1), atol=1e-6)


def test_each_local_view_adds_its_predictions_against_both_targets():
    from mmbyol.losses import byol_loss

    model = make()
    v1, v2, locals_ = torch.randn(8, 4), torch.randn(8, 4), [torch.randn(8, 4), torch.randn(8, 4)]
    t1 = model.target_projector(model.target_encoder(v1))
    t2 = model.target_projector(model.target_encoder(v2))
    expected = model(v1, v2)
    for local in locals_:
        p = model.predictor(model.online_projector(model.online_encoder(local)))
        expected = expected + byol_loss(p, t1) + byol_loss(p, t2)
    assert torch.allclose(model(v1, v2, local_views=locals_), expected, atol=1e-6)
    assert torch.equal(model(v1, v2, local_views=[]), model(v1, v2))
    # the local views pass through the online network only: the target's statistics never see them
    before = copy.deepcopy(model.target_encoder.state_dict())
    model(v1, v2, local_views=[torch.randn(8, 4) * 100])
    after = model.target_encoder.state_dict()
    model.target_encoder.load_state_dict(before)
    model(v1, v2)
    assert all(torch.equal(after[k], model.target_encoder.state_dict()[k]) for k in after)


def test_target_never_receives_a_gradient():
    model = make()
    model(torch.randn(8, 4), torch.randn(8, 4)).backward()
    for parameter in model.target_parameters():
        assert not parameter.requires_grad and parameter.grad is None
    assert all(p.grad is not None for p in model.online_parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())


def test_update_target_matches_the_ema_formula():
    model = make()
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in model.target_parameters()]
    online = [p.clone() for p in model.online_parameters()]
    buffers = copy.deepcopy(dict(model.target_encoder.named_buffers()))
    model.update_target(0.9)
    for xi, xi0, theta in zip(model.target_parameters(), before, online):
        assert torch.allclose(xi, 0.9 * xi0 + 0.1 * theta, atol=1e-6)
    for name, value in model.target_encoder.named_buffers():
        assert torch.equal(value, buffers[name])  # BN statistics are the target's own


def test_tau_one_freezes_the_target_and_tau_zero_copies_the_online_network():
    model = make()
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_parameters()]
    model.update_target(1.0)
    assert all(torch.equal(a, b) for a, b in zip(model.target_parameters(), before))
    model.update_target(0.0)
    assert all(torch.equal(a, b) for a, b in zip(model.target_parameters(), model.online_parameters()))


def test_simclr_has_the_same_interface_and_no_target():
    model = SimCLR(Tiny(), feature_dim=6, hidden_dim=16, projection_dim=5)
    loss, outputs = model(torch.randn(8, 4), torch.randn(8, 4), return_outputs=True)
    loss.backward()
    assert loss.ndim == 0 and outputs["z"].shape == (8, 5) and outputs["h"].shape == (8, 6)
    model.update_target(0.99)
    assert not any("target" in name for name, _ in model.named_parameters())


def test_supervised_loss_is_the_mean_cross_entropy_of_both_views():
    torch.manual_seed(0)
    model = Supervised(Tiny(), feature_dim=6, num_classes=3)
    view1, view2, labels = torch.randn(8, 4), torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss, outputs = model(view1, view2, labels=labels, return_outputs=True)
    expected = (F.cross_entropy(model.classifier(model.online_encoder(view1)), labels) +
                F.cross_entropy(model.classifier(model.online_encoder(view2)), labels)) / 2
    assert torch.allclose(loss, expected)
    assert outputs["h"].shape == (8, 6)
    with pytest.raises(ValueError, match="labels"):
        model(view1, view2)
