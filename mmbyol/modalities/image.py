"""Images: encoders, the BYOL augmentation pair as batched on-device ops, image data sets."""

from __future__ import annotations

import gzip
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

from ..augment import Augmentation, bernoulli, interpolation_matrix, uniform
from ..config import DataConfig
from ..errors import DataError
from ..registry import register_augmentation, register_dataset, register_encoder, register_modality
from .base import Modality

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- data


@dataclass
class ImageDataConfig(DataConfig):
    name: str = "fashion-mnist"
    image_size: int = 64  # image-folder: short side resized, then centre-cropped to this size


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor ``(N, C, H, W)``: decoding costs nothing."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str]):
        self.images, self.labels, self.classes = images, labels, classes
        pixels = images[:10_000].float() / 255  # normalization statistics of the split
        self.info = {
            "channels": images.shape[1],
            "size": images.shape[-1],
            "mean": pixels.mean(dim=(0, 2, 3)).tolist(),
            "std": pixels.std(dim=(0, 2, 3)).tolist(),
        }

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not, as a numpy array."""
    with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as file:
        data = file.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes; is the file corrupted?")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "FashionMNIST" / "raw"):
        for name in (f"{stem}.gz", stem):
            if (folder / name).exists():
                return folder / name
    return None


@register_dataset("image", "fashion-mnist")
def fashion_mnist(cfg: ImageDataConfig, split: str) -> TensorImages:
    """Fashion-MNIST from its IDX files: the Debian package ``dataset-fashion-mnist``, or any
    folder (``data.root``) holding them, directly or in torchvision's ``FashionMNIST/raw``."""
    root = Path(cfg.root or FASHION_MNIST_ROOT)
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    if images_path is None or labels_path is None:
        raise DataError(
            f"Fashion-MNIST was not found in {root}. Install it with `apt-get install dataset-fashion-mnist` "
            f"(it lands in {FASHION_MNIST_ROOT}), or set data.root=DIR to a folder holding "
            f"{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz."
        )
    images = torch.from_numpy(read_idx(images_path).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(labels_path).astype(np.int64))
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels.")
    return TensorImages(images, labels, FASHION_MNIST_CLASSES)


@register_dataset("image", "cifar10")
def cifar10(cfg: ImageDataConfig, split: str) -> TensorImages:
    """CIFAR-10 through torchvision from ``data.root`` (the python version); never downloaded."""
    if cfg.root is None:
        raise DataError("CIFAR-10 needs data.root=DIR: the folder holding cifar-10-batches-py/ "
                        "(torchvision's layout). mmbyol never downloads data.")
    try:
        data = torchvision.datasets.CIFAR10(cfg.root, train=split == "train", download=False)
    except RuntimeError as error:
        raise DataError(f"CIFAR-10 was not found in {cfg.root} ({error}). Put the python version "
                        f"(cifar-10-batches-py/) there, as torchvision expects.") from error
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    return TensorImages(images, torch.as_tensor(data.targets), list(data.classes))


class CycledImages(TensorImages):
    """``length`` items that cycle through a small pool of in-memory images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], length: int):
        super().__init__(images, labels, classes)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return super().__getitem__(index % len(self.images))


@register_dataset("image", "synthetic")
def synthetic(cfg: ImageDataConfig, split: str) -> CycledImages:
    """Random RGB images of ``data.image_size`` px with random labels of 10 classes: no files.
    For throughput benchmarks and smoke runs on machines without the data sets (what it learns
    means nothing). 256 distinct images, cycled through 50,000 training and 10,000 test items."""
    generator = torch.Generator().manual_seed(0 if split == "train" else 1)
    size = cfg.image_size
    images = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (256,), generator=generator)
    return CycledImages(images, labels, [str(c) for c in range(10)], 50_000 if split == "train" else 10_000)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Statistics of natural photographs (ImageNet), for folders whose own we do not compute.
NATURAL_MEAN, NATURAL_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class ImageFolder(Dataset):
    """``ROOT/SPLIT/CLASS/*`` (labels from folder names) or, for training, a flat folder of
    unlabelled images. Decoded with PIL, converted to RGB, resized and centre-cropped to
    ``image_size``. An unreadable file is logged and skipped (its item is ``None``)."""

    def __init__(self, files: list[Path], labels: list[int], classes: list[str], image_size: int):
        self.files, self.labels, self.classes, self.image_size = files, labels, classes, image_size
        self.info = {"channels": 3, "size": image_size, "mean": NATURAL_MEAN, "std": NATURAL_STD}
        self.resize = torchvision.transforms.v2.Compose([
            torchvision.transforms.v2.Resize(image_size, antialias=True),
            torchvision.transforms.v2.CenterCrop(image_size),
        ])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.files[index]) as image:
                image = image.convert("RGB")
                tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        except (OSError, UnidentifiedImageError, ValueError) as error:
            log.warning("skipping unreadable image %s: %s", self.files[index], error)
            return None
        return self.resize(tensor), self.labels[index]


@register_dataset("image", "image-folder")
def image_folder(cfg: ImageDataConfig, split: str) -> ImageFolder:
    if cfg.root is None:
        raise DataError("data.name=image-folder needs data.root=DIR holding train/CLASS/* and test/CLASS/* images.")
    root = Path(cfg.root)
    split_dir = root / split
    if split_dir.is_dir():
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
        files, labels = [], []
        for label, name in enumerate(classes):
            for file in sorted((split_dir / name).rglob("*")):
                if file.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(file)
                    labels.append(label)
        return ImageFolder(files, labels, classes, cfg.image_size)
    if split == "train" and root.is_dir():
        files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        return ImageFolder(files, [-1] * len(files), [], cfg.image_size)
    raise DataError(f"No {split} images: expected {split_dir}/CLASS/*.jpg|png (labels from the folder names).")


def collate_images(inputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(inputs)


def prepare_images(batch: torch.Tensor, device: torch.device, info: dict) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float in [0, 1] on the device; the augmentations work in that range."""
    return batch.to(device, non_blocking=True).float().div_(255).contiguous(memory_format=torch.channels_last)


def save_view_grid(original: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor, path: Path,
                   info: dict | None = None) -> None:
    """Rows: originals, view 1, view 2; small images are enlarged so the picture is legible."""
    grid = torch.cat([original, view1, view2]).float().cpu().clamp(0, 1)
    if grid.shape[-1] < 96:
        grid = F.interpolate(grid, scale_factor=96 // grid.shape[-1], mode="nearest")
    torchvision.utils.save_image(grid, str(path), nrow=len(original), padding=4, pad_value=1.0)


register_modality(Modality(
    name="image",
    data_config=ImageDataConfig,
    collate=collate_images,
    prepare=prepare_images,
    render_views=save_view_grid,
    channels_last=True,
    description="images (uint8 tensors or image files)",
))


# ------------------------------------------------------------------------------- encoders


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


# -------------------------------------------------------------------------- augmentations
# All act on float images in [0, 1], shape (B, C, H, W), C = 1 or 3, and draw their random
# parameters per sample. Defaults are the official BYOL values (DESIGN §1).


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (ITU-R 601, as torchvision), shape (B, 1, H, W)."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


@register_augmentation("image", "random_resized_crop")
class RandomResizedCrop(Augmentation):
    """A crop of random area (fraction ``scale`` of the image) and aspect ratio (``ratio``),
    resized back to the input size (or ``size``), as torchvision's: ten tries per sample, the
    whole image when none fits. Bilinear resampling of the whole batch at once."""

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

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x.flip(-1)


@register_augmentation("image", "color_jitter")
class ColorJitter(Augmentation):
    """Brightness, contrast, saturation and hue, each with a per-sample factor, in a per-sample
    random order (torchvision's ``ColorJitter``). On one-channel images saturation and hue have
    nothing to act on and are skipped."""

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
        hsv = _rgb_to_hsv(x)
        hue = (hsv[:, 0:1] + _per_sample(shift)) % 1.0
        return _hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1))


@register_augmentation("image", "grayscale")
class Grayscale(Augmentation):
    """RGB → luma, kept as three channels; one-channel images are already gray (identity)."""

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

    def __init__(self, threshold: float = 0.5, p: float = 0.2):
        super().__init__(p)
        self.threshold = threshold

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.where(x >= self.threshold, 1 - x, x)
