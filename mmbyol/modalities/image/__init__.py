"""Images: the BYOL augmentation pair as batched on-device ops, small CNNs and ResNets, and image
data sets. A data set item is a uint8 tensor ``(C, H, W)``; ``prepare`` makes a batch float in
[0, 1] on the device, channels-last, which is what the augmentations take."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import register_modality
from ...views import save_labelled_grid
from ..base import ROW_LABELS, Modality
from . import augment, data, encoders  # noqa: F401  (each registers its parts)
from .data import ImageDataConfig


def collate_images(inputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(inputs)


def prepare_images(batch: torch.Tensor, device: torch.device, info: dict) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float in [0, 1] on the device; the augmentations work in that range."""
    return batch.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=torch.channels_last)


class ImageFrontEnd(nn.Module):
    """``prepare_images`` as a module: uint8 ``(B, C, H, W)`` → float in [0, 1] (the encoder
    standardizes with the training set's statistics itself)."""

    def __init__(self, info: dict):
        super().__init__()
        self.register_buffer("anchor", torch.empty(0), persistent=False)  # its device is the module's

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return prepare_images(images, self.anchor.device, info={})


def save_view_grid(original: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor, path: Path,
                   info: dict | None = None, labels: Sequence[str] = ROW_LABELS) -> None:
    """Rows, labelled: originals, view 1, view 2 (or ``labels``); small images are enlarged so the
    picture is legible."""
    rows = [x.float().cpu().clamp(0, 1) for x in (original, view1, view2)]
    if rows[0].shape[-1] < 96:
        rows = [F.interpolate(x, scale_factor=96 // x.shape[-1], mode="nearest") for x in rows]
    save_labelled_grid(rows, path, labels)


register_modality(Modality(
    name="image",
    data_config=ImageDataConfig,
    collate=collate_images,
    prepare=prepare_images,
    render_views=save_view_grid,
    axes={"channel": 1, "height": 2, "width": 3},
    channels_last=True,
    front_end=ImageFrontEnd,
    description="images (uint8 tensors or image files)",
))
