"""The BYOL-A CNN encoder, at full width and at a quarter of it."""

from __future__ import annotations

import torch
from torch import nn

from ...registry import register_encoder


class ByolaCNN(nn.Module):
    """The BYOL-A encoder (Niizumi et al. 2021, from Koizumi et al.'s DCASE 2020 task 6 model):
    three blocks of conv 3×3 + BN + ReLU + max-pool 2, the frequency and channel axes of each
    frame flattened and mapped by an MLP (FC d, ReLU, dropout 0.3, FC d, ReLU), then mean + max
    pooling over time → ``(B, d)``. Each block pools before its ReLU: the two commute (both are
    monotonic), so outputs and gradients are BYOL-A's bit for bit, and the ReLU touches a quarter
    of the cells (a faster step: docs/performance.md)."""

    def __init__(self, n_mels: int, d: int = 2048, channels: int = 64, dropout: float = 0.3):
        super().__init__()
        layers, c_in = [], 1
        for _ in range(3):
            layers += [nn.Conv2d(c_in, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.MaxPool2d(2),
                       nn.ReLU(inplace=True)]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(channels * (n_mels // 8), d), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                nn.Linear(d, d), nn.ReLU(inplace=True))
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, F', T')
        x = x.permute(0, 3, 2, 1).flatten(2)  # (B, T', F'·C), as BYOL-A orders it
        x = self.fc(x)
        return x.mean(dim=1) + x.amax(dim=1)


@register_encoder("audio", "byola_cnn")
def byola_cnn(info: dict, d: int = 2048, channels: int = 64, dropout: float = 0.3) -> ByolaCNN:
    """The BYOL-A CNN; ``d`` is the feature size (2048 in BYOL-A v2)."""
    if info["n_mels"] < 8:
        raise ValueError(f"the BYOL-A CNN pools the frequency axis 8×; it needs n_mels ≥ 8, got {info['n_mels']}")
    return ByolaCNN(info["n_mels"], d, channels, dropout)


@register_encoder("audio", "byola_cnn_small")
def byola_cnn_small(info: dict, d: int = 512, channels: int = 32, dropout: float = 0.3) -> ByolaCNN:
    """The BYOL-A CNN at a quarter of the width (32 channels, d 512): for fast runs on a CPU."""
    return byola_cnn(info, d, channels, dropout)
