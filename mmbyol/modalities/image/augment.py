"""The BYOL image augmentations as batched ops on the device (official BYOL's pair: random
resized crop, flip, colour jitter, grayscale, blur, solarize). All act on float images in
[0, 1], shape ``(B, C, H, W)``, C = 1 or 3, and draw their random parameters per sample; their
defaults are the official BYOL values."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...augment import Augmentation, Float, Interval, bernoulli, interpolation_matrix, uniform
from ...registry import register_augmentation


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601, as torchvision), shape (B, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB images ``(B, 3, H, W)`` with their hue turned by ``shift[b]`` (a fraction of the circle)
    each, saturation and value kept: what torchvision's ``adjust_hue`` does to one image, for a
    whole batch with a shift per image (torchvision's public function takes one shift per call).
    Hue in sixths of the circle from the RGB hexcone; back to RGB by the closed form
    ``v − v·s·clamp(min(k, 4 − k), 0, 1)``, ``k = (n + 6h) mod 6`` with n = 5, 3, 1 for R, G, B."""
    value, _ = x.max(dim=1, keepdim=True)
    chroma = value - x.min(dim=1, keepdim=True).values
    grey = chroma == 0
    safe = torch.where(grey, torch.ones_like(chroma), chroma)
    r, g, b = x.unbind(dim=1)
    r, g, b = r.unsqueeze(1), g.unsqueeze(1), b.unsqueeze(1)
    sextant = torch.where(value == r, ((g - b) / safe) % 6,
                          torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = (sextant.masked_fill(grey, 0.0) / 6 + _per_sample(shift)) % 1.0
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)), 0.0)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (n + 6 * hue) % 6
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)


@register_augmentation("image", "random_resized_crop")
class RandomResizedCrop(Augmentation):
    """A crop of random area (fraction ``scale`` of the image) and aspect ratio (``ratio``),
    resized back to the input size (or ``size``), as torchvision's: ten tries per sample, the
    whole image when none fits. Bilinear resampling of the whole batch at once."""

    search_space = {"scale": Interval(0.08, 1.0)}

    def __init__(self, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 size: int | None = None, p: float = 1.0):
        super().__init__(p)
        self.scale, self.ratio, self.size = tuple(scale), tuple(ratio), size

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = x.shape
        tries = 10
        area = uniform(n * tries, *self.scale, generator, x.device).view(n, tries)
        log_ratio = uniform(n * tries, math.log(self.ratio[0]), math.log(self.ratio[1]), generator, x.device)
        ratio = log_ratio.exp().view(n, tries)
        crop_w = torch.sqrt(area * ratio * height / width)  # as fractions of the width / height
        crop_h = torch.sqrt(area / ratio * width / height)
        fits = (crop_w <= 1) & (crop_h <= 1)
        first = fits.float().argmax(dim=1, keepdim=True)
        any_fit = fits.any(dim=1)
        crop_w = torch.where(any_fit, crop_w.gather(1, first).squeeze(1), torch.ones(n, device=x.device))
        crop_h = torch.where(any_fit, crop_h.gather(1, first).squeeze(1), torch.ones(n, device=x.device))
        left = torch.rand(n, generator=generator, device=x.device) * (1 - crop_w)
        top = torch.rand(n, generator=generator, device=x.device) * (1 - crop_h)
        out_height, out_width = self.size or height, self.size or width
        rows = interpolation_matrix(top, crop_h, height, out_height)
        cols = interpolation_matrix(left, crop_w, width, out_width)
        return rows.unsqueeze(1).to(x.dtype) @ (x @ cols.transpose(1, 2).unsqueeze(1).to(x.dtype))


@register_augmentation("image", "horizontal_flip")
class HorizontalFlip(Augmentation):
    """Mirror left-right."""

    search_space = {"p": Float(0.0, 1.0)}

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x.flip(-1)


@register_augmentation("image", "color_jitter")
class ColorJitter(Augmentation):
    """Brightness, contrast, saturation and hue, each with a per-sample factor, in a per-sample
    random order (torchvision's ``ColorJitter``). On one-channel images saturation and hue have
    nothing to act on and are skipped."""

    search_space = {"brightness": Float(0.0, 0.8), "contrast": Float(0.0, 0.8),
                    "saturation": Float(0.0, 0.8), "hue": Float(0.0, 0.5), "p": Float(0.0, 1.0)}

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2,
                 hue: float = 0.1, p: float = 0.8):
        super().__init__(p)
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, device = x.shape[0], x.device
        factors = torch.stack([
            uniform(n, max(0.0, 1 - self.brightness), 1 + self.brightness, generator, device),
            uniform(n, max(0.0, 1 - self.contrast), 1 + self.contrast, generator, device),
            uniform(n, max(0.0, 1 - self.saturation), 1 + self.saturation, generator, device),
            uniform(n, -self.hue, self.hue, generator, device),
        ], dim=1)
        order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
        if x.shape[1] == 1:  # two operations, two orders: both for every row, then pick (no row gathers)
            brightness_first = (order == 0).float().argmax(dim=1) < (order == 1).float().argmax(dim=1)
            b, c = factors[:, 0], factors[:, 1]
            return torch.where(_per_sample(brightness_first), self._contrast(self._brightness(x, b), c),
                               self._brightness(self._contrast(x, c), b))
        operations = [self._brightness, self._contrast, self._saturation, self._hue]
        x = x.clone()
        for position in range(4):
            for op_index, operation in enumerate(operations):
                rows = (order[:, position] == op_index).nonzero().squeeze(1)
                if len(rows):
                    x[rows] = operation(x[rows], factors[rows, op_index])
        return x

    @staticmethod
    def _brightness(x, factor):
        return (x * _per_sample(factor)).clamp_(0, 1)

    @staticmethod
    def _contrast(x, factor):
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        return torch.lerp(mean, x, _per_sample(factor)).clamp_(0, 1)

    @staticmethod
    def _saturation(x, factor):
        return torch.lerp(_gray(x), x, _per_sample(factor)).clamp_(0, 1)

    @staticmethod
    def _hue(x, shift):
        return shift_hue(x, shift)


@register_augmentation("image", "grayscale")
class Grayscale(Augmentation):
    """RGB → luma, kept as three channels; one-channel images are already gray (identity)."""

    search_space = {"p": Float(0.0, 1.0)}

    def __init__(self, p: float = 0.2):
        super().__init__(p)

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.shape[1] == 1:  # already gray: the same draws as otherwise (the random stream stays), no work
            if self.p < 1.0:
                bernoulli(x.shape[0], self.p, generator, x.device)
            return x
        return super().forward(x, generator)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _gray(x).expand_as(x).contiguous()


@register_augmentation("image", "gaussian_blur")
class GaussianBlur(Augmentation):
    """Gaussian blur with a per-sample σ ∈ ``sigma`` and a kernel of about ``kernel_fraction``
    of the image side (official BYOL: 23 px at 224), as one grouped separable convolution."""

    search_space = {"sigma": Interval(0.1, 3.0), "p": Float(0.0, 1.0)}

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0), kernel_fraction: float = 0.1, p: float = 1.0):
        super().__init__(p)
        self.sigma, self.kernel_fraction = tuple(sigma), kernel_fraction

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, channels, height, width = x.shape
        size = max(3, 2 * math.floor(min(height, width) * self.kernel_fraction / 2) + 1)
        sigma = uniform(n, *self.sigma, generator, x.device)
        offsets = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
        kernel = torch.exp(-offsets.view(1, -1) ** 2 / (2 * sigma.view(-1, 1).to(x.dtype) ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
        pad = size // 2
        y = x.reshape(1, n * channels, height, width)
        y = F.conv2d(F.pad(y, (pad, pad, 0, 0), mode="reflect"), kernel.view(-1, 1, 1, size), groups=n * channels)
        y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect"), kernel.view(-1, 1, size, 1), groups=n * channels)
        return y.view(n, channels, height, width)


@register_augmentation("image", "solarize")
class Solarize(Augmentation):
    """Invert every pixel at or above ``threshold``."""

    search_space = {"threshold": Float(0.2, 0.9), "p": Float(0.0, 1.0)}

    def __init__(self, threshold: float = 0.5, p: float = 0.2):
        super().__init__(p)
        self.threshold = threshold

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.where(x >= self.threshold, 1 - x, x)
