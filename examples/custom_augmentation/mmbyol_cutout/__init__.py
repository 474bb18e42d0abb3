"""Cutout (DeVries & Taylor 2017) as an mmbyol image augmentation.

Installed, it is usable by name without touching mmbyol::

    mmbyol train 'augment.view2=[{name: random_resized_crop}, {name: cutout, p: 0.5, size: 0.3}]'
"""

import torch

from mmbyol import Augmentation, Float, register_augmentation


@register_augmentation("image", "cutout")
class Cutout(Augmentation):
    """Fill one square of side ``size`` (a fraction of the image side), at a random place per
    sample, with ``value``."""

    search_space = {"size": Float(0.1, 0.6), "p": Float(0.0, 1.0)}  # what `mmbyol search` may vary

    def __init__(self, size: float = 0.25, value: float = 0.0, p: float = 0.5):
        super().__init__(p)
        if not 0 < size <= 1:
            raise ValueError(f"size must lie in (0, 1], got {size}")
        self.size, self.value = size, value

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = x.shape
        side_h, side_w = max(1, round(self.size * height)), max(1, round(self.size * width))
        # One centre per sample: the square may hang over the border, as in the paper.
        cy = torch.randint(0, height, (n, 1, 1), generator=generator, device=x.device)
        cx = torch.randint(0, width, (n, 1, 1), generator=generator, device=x.device)
        rows = torch.arange(height, device=x.device).view(1, -1, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, -1)
        inside = ((rows - cy).abs() <= side_h // 2) & ((cols - cx).abs() <= side_w // 2)
        return x.masked_fill(inside.unsqueeze(1), self.value)
