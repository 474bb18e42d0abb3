"""Image data sets: Fashion-MNIST from its IDX files, CIFAR-10 through torchvision, folders of
image files, and random pixels for speed and smoke runs. Items are uint8 tensors ``(C, H, W)``."""

from __future__ import annotations

import gzip
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ...config import DataConfig
from ...errors import DataError
from ...registry import register_dataset
from ..base import files_under, no_files_error, split_folder

log = logging.getLogger(__name__)


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


def _torchvision_cifar(cfg: ImageDataConfig, split: str, name: str, folder: str, dataset: str) -> TensorImages:
    """``torchvision.datasets.DATASET`` read from ``data.root``. torchvision is imported here and in
    the functions below, not at the top: a second's import that runs of other modalities skip."""
    import torchvision

    if cfg.root is None:
        raise DataError(f"{name} needs data.root=DIR: the folder holding {folder}/ (torchvision's layout). "
                        "mmbyol never downloads data.")
    try:
        data = getattr(torchvision.datasets, dataset)(str(Path(cfg.root).expanduser()), train=split == "train",
                                                      download=False)
    except RuntimeError as error:
        raise DataError(f"{name} was not found in {cfg.root} ({error}). Put the python version ({folder}/) "
                        "there, as torchvision expects.") from error
    images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
    return TensorImages(images, torch.as_tensor(data.targets), list(data.classes))


@register_dataset("image", "cifar10")
def cifar10(cfg: ImageDataConfig, split: str) -> TensorImages:
    """CIFAR-10 through torchvision from ``data.root`` (the python version); never downloaded."""
    return _torchvision_cifar(cfg, split, "CIFAR-10", "cifar-10-batches-py", "CIFAR10")


@register_dataset("image", "cifar100")
def cifar100(cfg: ImageDataConfig, split: str) -> TensorImages:
    """CIFAR-100 through torchvision from ``data.root`` (the python version), its 100 fine labels;
    never downloaded."""
    return _torchvision_cifar(cfg, split, "CIFAR-100", "cifar-100-python", "CIFAR100")


@register_dataset("image", "stl10")
def stl10(cfg: ImageDataConfig, split: str) -> TensorImages:
    """STL-10 through torchvision from ``data.root`` (the binary version, ``stl10_binary/``); never
    downloaded. BYOL trains on the 5,000 labelled training images and the 100,000 unlabelled ones
    (label -1) together; the probe and the monitor use the labelled ones."""
    import torchvision

    if cfg.root is None:
        raise DataError("STL-10 needs data.root=DIR: the folder holding stl10_binary/ (torchvision's layout). "
                        "mmbyol never downloads data.")
    try:
        data = torchvision.datasets.STL10(str(Path(cfg.root).expanduser()),
                                          split="train+unlabeled" if split == "train" else "test", download=False)
    except RuntimeError as error:
        raise DataError(f"STL-10 was not found in {cfg.root} ({error}). Put the binary version (stl10_binary/) "
                        "there, as torchvision expects.") from error
    return TensorImages(torch.from_numpy(data.data), torch.as_tensor(data.labels, dtype=torch.long),
                        list(data.classes))


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
        self.reported: set[int] = set()  # the unreadable files named in the log so far
        self.info = {"channels": 3, "size": image_size, "mean": NATURAL_MEAN, "std": NATURAL_STD}
        from torchvision.transforms import v2

        self.resize = v2.Compose([
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
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
            if index not in self.reported:  # each epoch reads it again; it is counted each time
                self.reported.add(index)
                log.warning("skipping unreadable image %s: %s", self.files[index], error)
            return None
        return self.resize(tensor), self.labels[index]


@register_dataset("image", "image-folder")
def image_folder(cfg: ImageDataConfig, split: str) -> ImageFolder:
    if cfg.root is None:
        raise DataError("data.name=image-folder needs data.root=DIR holding train/CLASS/* and test/CLASS/* "
                        "(or val/CLASS/*) images.")
    root = Path(cfg.root)
    split_dir = split_folder(root, split)
    layout = f"{root}/train/CLASS/* and {root}/test/CLASS/* (labels from the folder names)"
    if split_dir.is_dir():
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
        files, labels = [], []
        for label, name in enumerate(classes):
            found = files_under(split_dir / name, IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        if not files:
            raise no_files_error(split_dir, IMAGE_SUFFIXES, "image", layout)
        return ImageFolder(files, labels, classes, cfg.image_size)
    if split == "train" and root.is_dir():
        files = files_under(root, IMAGE_SUFFIXES)
        if not files:
            raise no_files_error(root, IMAGE_SUFFIXES, "image", layout + ", or a folder of images to train on")
        return ImageFolder(files, [-1] * len(files), [], cfg.image_size)
    raise DataError(f"No {split} images: expected {split_dir}/CLASS/*.jpg|png (labels from the folder names)"
                    + (", or val/CLASS/* in its place." if split == "test" else "."))
