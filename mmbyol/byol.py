"""The BYOL engine (Grill et al. 2020): online f_θ → g_θ → q_θ, target f_ξ → g_ξ by EMA.

No modality code lives here: an encoder is any module mapping a prepared batch to ``(B, D)``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .heads import MLP
from .losses import byol_loss, info_nce_loss


class BYOL(nn.Module):
    """``loss = model(view1, view2)``: the symmetric loss, its two terms summed (BYOL §3.2,
    eq. 2) and each averaged over the batch; ``model.update_target(tau)`` after each step.

    ``model(view1, view2, local_views=[v, ...])`` adds multi-crop (Caron et al. 2020, as
    solo-learn's BYOL has it): each local view is seen by the online network only, and its
    prediction is compared with both global views' targets, two more terms per local view."""

    def __init__(self, encoder: nn.Module, feature_dim: int, hidden_dim: int = 4096, projection_dim: int = 256):
        super().__init__()
        self.online_encoder = encoder
        self.online_projector = MLP(feature_dim, hidden_dim, projection_dim)
        self.predictor = MLP(projection_dim, hidden_dim, projection_dim)
        self.target_encoder = copy.deepcopy(self.online_encoder)
        self.target_projector = copy.deepcopy(self.online_projector)
        for parameter in self.target_parameters():
            parameter.requires_grad_(False)

    def online_parameters(self) -> list[nn.Parameter]:
        return [*self.online_encoder.parameters(), *self.online_projector.parameters()]

    def target_parameters(self) -> list[nn.Parameter]:
        return [*self.target_encoder.parameters(), *self.target_projector.parameters()]

    def forward(self, view1, view2, labels=None, return_outputs: bool = False, local_views=()):
        """``labels`` is accepted for a common interface and unused: BYOL is self-supervised."""
        h1, h2 = self.online_encoder(view1), self.online_encoder(view2)
        z1, z2 = self.online_projector(h1), self.online_projector(h2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            # The target runs in training mode: its BN uses batch statistics and keeps its own
            # running averages, as in the official code.
            t1 = self.target_projector(self.target_encoder(view1))
            t2 = self.target_projector(self.target_encoder(view2))
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        for local in local_views:
            p = self.predictor(self.online_projector(self.online_encoder(local)))
            loss = loss + byol_loss(p, t1) + byol_loss(p, t2)
        if return_outputs:
            return loss, {"h": h1.detach(), "z": z1.detach()}
        return loss

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """ξ ← τ·ξ + (1 − τ)·θ over all parameters in one fused call (buffers are the target's own)."""
        torch._foreach_lerp_(self.target_parameters(), self.online_parameters(), 1.0 - tau)


class SimCLR(nn.Module):
    """The InfoNCE objective with in-batch negatives (Chen et al. 2020), the family of methods
    the BYOL paper compares against; same interface as :class:`BYOL`, no target network."""

    def __init__(self, encoder: nn.Module, feature_dim: int, hidden_dim: int = 4096,
                 projection_dim: int = 256, temperature: float = 0.1):
        super().__init__()
        self.online_encoder = encoder
        self.online_projector = MLP(feature_dim, hidden_dim, projection_dim)
        self.temperature = temperature

    def forward(self, view1, view2, labels=None, return_outputs: bool = False):
        h1 = self.online_encoder(view1)
        z1 = self.online_projector(h1)
        z2 = self.online_projector(self.online_encoder(view2))
        loss = info_nce_loss(z1, z2, self.temperature)
        if return_outputs:
            return loss, {"h": h1.detach(), "z": z1.detach()}
        return loss

    def update_target(self, tau: float) -> None:
        """No target network: nothing to do."""


class Supervised(nn.Module):
    """The upper bound of the comparisons: the same encoder trained with labels, a linear
    classifier on h, cross-entropy averaged over both augmented views (so it sees the same
    inputs and encoder passes per step as the self-supervised objectives)."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.online_encoder = encoder
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, view1, view2, labels=None, return_outputs: bool = False):
        if labels is None:
            raise ValueError("the supervised objective needs the batch labels")
        h1, h2 = self.online_encoder(view1), self.online_encoder(view2)
        loss = (F.cross_entropy(self.classifier(h1).float(), labels) +
                F.cross_entropy(self.classifier(h2).float(), labels)) / 2
        if return_outputs:
            return loss, {"h": h1.detach(), "z": h1.detach()}
        return loss

    def update_target(self, tau: float) -> None:
        """No target network: nothing to do."""
