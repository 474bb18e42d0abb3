"""A fourth modality as a plugin package: rows of numbers (tabular data, sensor features) read
from CSV files, an MLP encoder, and two augmentations. Nothing in mmbyol is edited; installed,
``mmbyol train modality=vectors data.train=train.csv data.test=test.csv`` trains it.

What a modality supplies (mmbyol's docs/design.md, "Adding a modality"): a data config, data sets,
``collate`` and ``prepare``, encoders, augmentations, a picture of the views, default settings.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from mmbyol import (
    Augmentation,
    DataConfig,
    DataError,
    Float,
    Modality,
    register_augmentation,
    register_dataset,
    register_encoder,
    register_modality,
)


@dataclass
class VectorDataConfig(DataConfig):
    """The ``data`` keys of this modality, on top of mmbyol's own (name, root, batch_size, limit …)."""

    name: str = "csv"
    train: str | None = None  # a CSV file with a header: numeric columns, and optionally a label column
    test: str | None = None
    label_column: str = "label"


class Rows(Dataset):
    """Rows of a float tensor ``(N, F)`` with labels (-1 when unlabelled). ``info`` holds the
    number of features and the training rows' mean and std, which ``prepare`` standardizes with."""

    def __init__(self, rows: torch.Tensor, labels: list[int], classes: list[str]):
        self.rows, self.labels, self.classes = rows, labels, classes
        self.info = {"features": rows.shape[1], "mean": rows.mean(dim=0).tolist(),
                     "std": rows.std(dim=0).clamp_min(1e-6).tolist()}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        return self.rows[index], self.labels[index]


def read_csv(path: Path, label_column: str) -> tuple[torch.Tensor, list[str | None]]:
    if not path.is_file():
        raise DataError(f"{path} does not exist: give data.train=FILE.csv (and data.test=FILE.csv to evaluate).")
    with open(path, newline="") as file:
        records = list(csv.DictReader(file))
    if not records:
        raise DataError(f"{path} holds no rows under its header.")
    columns = [c for c in records[0] if c != label_column]
    try:
        rows = torch.tensor([[float(r[c]) for c in columns] for r in records])
    except ValueError as error:
        raise DataError(f"{path}: every column but {label_column!r} must be numeric ({error}).") from None
    return rows, [r.get(label_column) for r in records]


@register_dataset("vectors", "csv")
def csv_rows(cfg: VectorDataConfig, split: str) -> Rows:
    """``data.train`` / ``data.test``; classes are the training file's labels, sorted."""
    if cfg.train is None or (split == "test" and cfg.test is None):
        raise DataError("The csv data set needs data.train=FILE.csv, and data.test=FILE.csv to evaluate.")
    rows, names = read_csv(Path(cfg.train if split == "train" else cfg.test), cfg.label_column)
    train_names = names if split == "train" else read_csv(Path(cfg.train), cfg.label_column)[1]
    classes = sorted({n for n in train_names if n})
    index = {name: i for i, name in enumerate(classes)}
    return Rows(rows, [index.get(n, -1) if n else -1 for n in names], classes)


def prepare_rows(batch: torch.Tensor, device: torch.device, info: dict[str, Any]) -> torch.Tensor:
    """Standardize with the training rows' statistics, on the device."""
    mean = torch.tensor(info["mean"], device=device)
    std = torch.tensor(info["std"], device=device)
    return (batch.to(device) - mean) / std


def write_rows(original, view1, view2, path: Path, info: dict[str, Any]) -> None:
    """Each row's first features: original / view 1 / view 2, as text."""
    lines = []
    for i, rows in enumerate(zip(original, view1, view2)):
        for name, row in zip(("original", "view 1", "view 2"), rows):
            lines.append(f"[{i}] {name:>8}: " + " ".join(f"{v:6.2f}" for v in row[:8].tolist()))
    text = "\n".join(lines) + "\n"
    print(text, end="")
    Path(path).write_text(text)


@register_encoder("vectors", "mlp")
def mlp(info: dict[str, Any], hidden: int = 256, out: int = 64) -> nn.Module:
    """Two linear layers with BatchNorm and ReLU → ``(B, out)``."""
    encoder = nn.Sequential(nn.Linear(info["features"], hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                            nn.Linear(hidden, out), nn.BatchNorm1d(out), nn.ReLU())
    encoder.out_dim = out  # mmbyol reads the feature size from here
    return encoder


@register_augmentation("vectors", "feature_mask")
class FeatureMask(Augmentation):
    """Each feature set to 0 (the training mean, after ``prepare``) with probability ``rate``."""

    search_space = {"rate": Float(0.05, 0.6), "p": Float(0.0, 1.0)}  # what `mmbyol search` may vary

    def __init__(self, rate: float = 0.3, p: float = 1.0):
        super().__init__(p)
        self.rate = rate

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x.masked_fill(torch.rand(x.shape, generator=generator, device=x.device) < self.rate, 0.0)


@register_augmentation("vectors", "gaussian_noise")
class GaussianNoise(Augmentation):
    """Gaussian noise of standard deviation ``std`` (in units of each feature's std) added."""

    search_space = {"std": Float(0.01, 1.0, log=True), "p": Float(0.0, 1.0)}

    def __init__(self, std: float = 0.1, p: float = 1.0):
        super().__init__(p)
        self.std = std

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + self.std * torch.randn(x.shape, generator=generator, device=x.device)


register_modality(Modality(
    name="vectors",
    data_config=VectorDataConfig,
    collate=torch.stack,
    prepare=prepare_rows,
    render_views=write_rows,
    views_file="views.txt",
    config_file=Path(__file__).with_name("vectors.yaml"),
    description="rows of numbers from CSV files (an example plugin)",
))
