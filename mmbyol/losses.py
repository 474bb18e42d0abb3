"""Loss functions, pure and separately tested."""

import torch
import torch.nn.functional as F


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalized MSE ``2 − 2·cos(p, z)``, averaged over the batch (BYOL eq. 2).

    Computed in float32 whatever the autocast dtype: the cosine of nearly equal vectors is
    where bf16 loses the signal.
    """
    prediction = F.normalize(prediction.float(), dim=-1)
    target = F.normalize(target.float(), dim=-1)
    return (2 - 2 * (prediction * target).sum(dim=-1)).mean()


def info_nce_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent / InfoNCE with in-batch negatives (SimCLR): each view must pick out its partner
    among the other ``2N − 2`` projections of the batch."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own negative
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, partner)
