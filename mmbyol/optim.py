"""LARS and the other optimizers, with biases and normalization parameters excluded from weight
decay and from the LARS adaptation, as in the official BYOL code (``exclude_bias_and_norm``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .errors import ConfigError


def param_groups(model: nn.Module, weight_decay: float, predictor_lr_scale: float = 1.0,
                 encoder_lr_scale: float = 1.0) -> list[dict]:
    """Groups of trainable parameters: weights (decayed, adapted) and biases/norm parameters
    (every parameter with at most one dimension: neither decayed nor adapted). With
    ``predictor_lr_scale`` ≠ 1 the predictor's parameters get their own groups whose learning
    rate is scaled (``lr_scale``; a faster predictor, as in DirectPred/SimSiam); likewise the
    online encoder's with ``encoder_lr_scale`` (a pretrained encoder fine-tuned more slowly than
    the new heads)."""
    scales: dict[int, float] = {}
    for name, scale in (("predictor", predictor_lr_scale), ("online_encoder", encoder_lr_scale)):
        part = getattr(model, name, None)
        if part is not None and scale != 1.0:
            scales.update({id(p): scale for p in part.parameters()})
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}  # (lr scale, excluded) → parameters
    for parameter in model.parameters():
        if parameter.requires_grad:
            groups.setdefault((scales.get(id(parameter), 1.0), parameter.ndim <= 1), []).append(parameter)
    return [{"params": params, "weight_decay": 0.0 if excluded else weight_decay, "lars_exclude": excluded,
             "lr_scale": scale} for (scale, excluded), params in groups.items()]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) as BYOL uses it: the update of each
    weight tensor is scaled by ``trust_coefficient·‖w‖/‖g + wd·w‖``, then heavy-ball momentum.
    Groups with ``lars_exclude=True`` get plain momentum SGD without weight decay.

    ``clip=True`` is solo-learn's ``clip_lr``: the scale is divided by the learning rate and capped
    at 1, so a tensor's step is ``min(trust_coefficient·‖w‖/‖u‖, lr)·u`` (``u = g + wd·w``): the
    adaptive rate, never above the scheduled one."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.2,
        momentum: float = 0.9,
        weight_decay: float = 1.5e-6,
        trust_coefficient: float = 1e-3,
        clip: bool = False,
    ):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, clip=clip, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                update = parameter.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        update = update.add(parameter, alpha=group["weight_decay"])
                    weight_norm = torch.linalg.vector_norm(parameter)
                    update_norm = torch.linalg.vector_norm(update)
                    trust = torch.where(
                        (weight_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * weight_norm / update_norm,
                        torch.ones_like(weight_norm),
                    )
                    if group["clip"] and group["lr"] > 0:
                        trust = torch.clamp(trust / group["lr"], max=1.0)
                    update = update * trust
                state = self.state[parameter]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(update).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(update)
                parameter.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float = 0.9,
                    trust_coefficient: float = 1e-3, predictor_lr_scale: float = 1.0,
                    trust_clip: bool = False, encoder_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """``lars`` (the paper's), ``adamw`` or ``sgd``; all exclude biases and norms from decay."""
    groups = param_groups(model, weight_decay, predictor_lr_scale, encoder_lr_scale)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, trust_coefficient=trust_coefficient, clip=trust_clip)
    for group in groups:
        group.pop("lars_exclude")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ConfigError(f"optim.name must be one of lars, adamw, sgd; got {name!r}.")
