"""Image encoders: a small CNN for small images and torchvision's ResNets (a CIFAR stem for
images of 64 px or less). Each standardizes its input with the training set's statistics, so an
exported encoder takes images in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

from ...registry import register_encoder


class Normalize(nn.Module):
    """Per-channel standardization with the training set's statistics, part of the encoder so an
    exported encoder takes images in [0, 1]."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageEncoder(nn.Sequential):
    def __init__(self, info: dict, body: nn.Module, out_dim: int):
        super().__init__(Normalize(info["mean"], info["std"]), body)
        self.out_dim = out_dim


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


@register_encoder("image", "small_cnn")
def small_cnn(info: dict) -> ImageEncoder:
    """Three 3×3 conv blocks (32/64/128 channels, BN, ReLU), max-pool after the first two,
    global average pool → 128-d. The reference encoder for comparisons on small images."""
    body = nn.Sequential(
        *_conv_block(info["channels"], 32), nn.MaxPool2d(2),
        *_conv_block(32, 64), nn.MaxPool2d(2),
        *_conv_block(64, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return ImageEncoder(info, body, 128)


def _resnet(arch: str, info: dict, cifar_stem: bool | None) -> ImageEncoder:
    import torchvision  # here, not at the top: a second's import that runs of other modalities skip

    net = getattr(torchvision.models, arch)(weights=None)
    if cifar_stem is None:
        cifar_stem = info["size"] <= 64
    if cifar_stem:  # 3×3 stride-1 stem, no max-pool: the usual ResNet for 32×32 images
        net.conv1 = nn.Conv2d(info["channels"], 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif info["channels"] != 3:
        net.conv1 = nn.Conv2d(info["channels"], 64, 7, stride=2, padding=3, bias=False)
    out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return ImageEncoder(info, net, out_dim)


@register_encoder("image", "resnet18")
def resnet18(info: dict, cifar_stem: bool | None = None) -> ImageEncoder:
    """torchvision ResNet-18 (512-d); ``cifar_stem`` defaults to on for images of 64 px or less."""
    return _resnet("resnet18", info, cifar_stem)


@register_encoder("image", "resnet50")
def resnet50(info: dict, cifar_stem: bool | None = None) -> ImageEncoder:
    """torchvision ResNet-50 (2048-d); ``cifar_stem`` defaults to on for images of 64 px or less."""
    return _resnet("resnet50", info, cifar_stem)
