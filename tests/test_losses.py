import math

import torch
import torch.nn.functional as F

from mmbyol.losses import byol_loss, info_nce_loss


def test_byol_loss_is_two_minus_two_cosine():
    p, z = torch.randn(16, 8), torch.randn(16, 8)
    expected = (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()
    assert torch.allclose(byol_loss(p, z), expected, atol=1e-6)


def test_byol_loss_range_and_scale_invariance():
    z = torch.randn(4, 8)
    assert float(byol_loss(z, 3 * z)) < 1e-6  # aligned: 0, whatever the norms
    assert abs(float(byol_loss(z, -z)) - 4.0) < 1e-6  # opposite: 4


def test_info_nce_matches_cross_entropy_by_hand():
    z1, z2, t = torch.randn(5, 4), torch.randn(5, 4), 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / t
    total = 0.0
    for i in range(10):
        partner = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        total += -(logits[i, partner] - torch.logsumexp(logits[i, others], dim=0))
    assert math.isclose(float(info_nce_loss(z1, z2, t)), float(total / 10), rel_tol=1e-5)


def test_info_nce_is_small_for_matched_distinct_pairs():
    z = torch.eye(8) * 10
    assert float(info_nce_loss(z, z, temperature=0.05)) < 1e-3
