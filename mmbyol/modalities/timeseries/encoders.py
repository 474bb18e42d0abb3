"""Encoders for ``(B, channels, length)`` series: the two 1-D baselines of time-series
classification (Wang et al. 2017, "Time series classification from scratch with deep neural
networks"), FCN and ResNet, a CNN of dilated kernels as ROCKET draws them (Dempster et al. 2020),
and a small Transformer over patches (PatchTST's input, Nie et al. 2023). Each ends in a pooling
over time, so any length works."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import register_encoder


class TimePool(nn.Module):
    """``(B, C, T)`` → ``(B, C * width)``: the mean over time, the max (a local pattern's presence
    anywhere, which a mean dilutes), or both side by side (``meanmax``, width 2)."""

    KINDS = ("mean", "max", "meanmax")

    def __init__(self, kind: str = "mean"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"pool must be one of {', '.join(self.KINDS)}; got {kind!r}")
        self.kind = kind
        self.width = 2 if kind == "meanmax" else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean":
            return x.mean(dim=-1)
        if self.kind == "max":
            return x.amax(dim=-1)
        return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)


def conv_block(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    """A length-keeping convolution (zero padding, one more step after than before for an even
    span, as ``padding="same"`` pads, without its copy) and BatchNorm."""
    span = dilation * (kernel - 1)
    pad = [nn.ConstantPad1d((span // 2, span - span // 2), 0.0)] if span else []
    return [*pad, nn.Conv1d(c_in, c_out, kernel, dilation=dilation, bias=False), nn.BatchNorm1d(c_out)]


class FCN(nn.Module):
    """Wang et al.'s fully convolutional network: three conv + BN + ReLU blocks (kernels 8, 5, 3),
    then a pooling over time (:class:`TimePool`) → ``(B, channels[-1])``, twice that for ``meanmax``."""

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (128, 256, 128),
                 kernels: tuple[int, ...] = (8, 5, 3), pool: str = "mean"):
        super().__init__()
        self.pool = TimePool(pool)
        if len(channels) != len(kernels):
            raise ValueError(f"channels and kernels must have one entry per block, got {channels} and {kernels}")
        layers, c_in = [], in_channels
        for c_out, kernel in zip(channels, kernels):
            layers += [*conv_block(c_in, c_out, kernel), nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_dim = c_in * self.pool.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, ...]):
        super().__init__()
        layers, c = [], c_in
        for i, kernel in enumerate(kernels):
            layers += conv_block(c, c_out, kernel)
            if i < len(kernels) - 1:
                layers.append(nn.ReLU(inplace=True))
            c = c_out
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(*conv_block(c_in, c_out, 1)) if c_in != c_out else nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNet1D(nn.Module):
    """Wang et al.'s ResNet: three residual blocks of three convolutions each (kernels 8, 5, 3),
    shortcuts by a 1×1 convolution where the width changes, then a pooling over time as FCN's."""

    def __init__(self, in_channels: int, channels: tuple[int, ...] = (64, 128, 128),
                 kernels: tuple[int, ...] = (8, 5, 3), pool: str = "mean"):
        super().__init__()
        self.pool = TimePool(pool)
        blocks, c_in = [], in_channels
        for c_out in channels:
            blocks.append(ResidualBlock(c_in, c_out, tuple(kernels)))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = c_in * self.pool.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x))


class DilatedCNN(nn.Module):
    """ROCKET's kernels, learned: one branch per dilation (1, 2, 4 … 32), each ``depth``
    convolutions of ``kernel`` steps at that dilation with BatchNorm (ReLU between and after),
    ``width`` channels; each branch pooled over time (:class:`TimePool`), side by side →
    ``(B, width · dilations)``, twice that for ``meanmax``. A kernel of 9 at dilation 32 spans 257
    steps, where FCN's three layers see 14."""

    def __init__(self, in_channels: int, width: int = 16, kernel: int = 9,
                 dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32), depth: int = 2, pool: str = "meanmax"):
        super().__init__()
        if width < 1 or kernel < 1 or depth < 1 or not dilations or min(dilations) < 1:
            raise ValueError(f"width, kernel, depth and every dilation must be positive; got {width}, {kernel}, "
                             f"{depth}, {list(dilations)}")
        self.pool = TimePool(pool)
        self.branches = nn.ModuleList()
        for dilation in dilations:
            layers, c_in = [], in_channels
            for _ in range(depth):
                layers += [*conv_block(c_in, width, kernel, dilation), nn.ReLU(inplace=True)]
                c_in = width
            self.branches.append(nn.Sequential(*layers))
        self.out_dim = width * len(dilations) * self.pool.width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.pool(branch(x)) for branch in self.branches], dim=1)


class PatchTransformer(nn.Module):
    """A Transformer encoder over patches: the series cut into ``patch`` steps (the end padded with
    zeros, the mean of normalized data), each patch of every channel flattened and embedded,
    sinusoidal positions added, ``layers`` pre-norm blocks (``torch.nn.TransformerEncoder``), the
    mean over patches → ``(B, d)``."""

    def __init__(self, in_channels: int, patch: int = 8, d: int = 64, layers: int = 2, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        if patch < 1 or d % heads:
            raise ValueError(f"patch must be positive and d divisible by heads; got {patch}, {d}, {heads}")
        self.patch = patch
        self.embed = nn.Linear(in_channels * patch, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out_dim = d

    def positions(self, count: int, device: torch.device) -> torch.Tensor:
        d = self.out_dim
        frequency = torch.exp(torch.arange(0, d, 2, device=device) * (-math.log(10_000.0) / d))
        angle = torch.arange(count, device=device)[:, None] * frequency
        return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)[:, :d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, length = x.shape
        x = F.pad(x, (0, -length % self.patch))
        patches = x.unfold(-1, self.patch, self.patch).permute(0, 2, 1, 3).reshape(n, -1, c * self.patch)
        tokens = self.embed(patches)
        tokens = tokens + self.positions(tokens.shape[1], x.device).to(tokens.dtype)
        return self.norm(self.blocks(tokens).mean(dim=1))


@register_encoder("timeseries", "fcn")
def fcn(info: dict, channels: list[int] = (128, 256, 128), kernels: list[int] = (8, 5, 3),
        pool: str = "mean") -> FCN:
    return FCN(info["channels"], tuple(channels), tuple(kernels), pool)


@register_encoder("timeseries", "resnet1d")
def resnet1d(info: dict, channels: list[int] = (64, 128, 128), kernels: list[int] = (8, 5, 3),
             pool: str = "mean") -> ResNet1D:
    return ResNet1D(info["channels"], tuple(channels), tuple(kernels), pool)


@register_encoder("timeseries", "dilated_cnn")
def dilated_cnn(info: dict, width: int = 16, kernel: int = 9, dilations: list[int] = (1, 2, 4, 8, 16, 32),
                depth: int = 2, pool: str = "meanmax") -> DilatedCNN:
    return DilatedCNN(info["channels"], width, kernel, tuple(dilations), depth, pool)


@register_encoder("timeseries", "patch_transformer")
def patch_transformer(info: dict, patch: int = 8, d: int = 64, layers: int = 2, heads: int = 4,
                      dropout: float = 0.0) -> PatchTransformer:
    return PatchTransformer(info["channels"], patch, d, layers, heads, dropout)
