"""The Modality contract: an object that supplies parts, looked up by name (no subclass tree)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from ..augment import check_kwargs
from ..errors import ConfigError, DataError
from ..registry import DATASETS, ENCODERS, MODALITIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Modality:
    """What a modality supplies besides its registered encoders, augmentations and data sets.

    - ``data_config``: dataclass schema of the ``data`` config section (extends ``DataConfig``);
    - ``collate(inputs)``: a list of dataset inputs → one batch input of fixed shape;
    - ``prepare(batch, device, info)``: deterministic preprocessing on the device (uint8 → float,
      waveform → normalized log-mel …), before the augmentations; ``info`` is the training data
      set's (saved with the run and in the exported encoder's ``metadata["info"]``). It may return
      a tuple ``(x1, x2)``, one input per view, when the data set gives each view its own copy;
    - ``render_views(original, view1, view2, path, info)``: a picture (or text) of view pairs, the
      prepared batch and its two views, written to ``path`` (``mmbyol views``; default file name
      ``views_file``);
    - ``channels_last``: use the channels-last memory format (image-like batches; faster
      convolutions on CUDA and on CPU).

    Data sets built from the registry are torch ``Dataset`` s of ``(input, label)`` items (label
    ``-1`` when unlabelled; ``None`` for an unreadable item, which is skipped and counted), with
    ``classes`` (label names) and ``info`` (a JSON-able dict the encoder builder receives, e.g.
    channels and normalization statistics; saved with the run).
    """

    name: str
    data_config: type
    collate: Callable[[list[Any]], Any]
    prepare: Callable[[Any, torch.device, dict[str, Any]], Any]
    render_views: Callable[[Any, Any, Any, Path, dict[str, Any]], None]
    views_file: str = "views.png"
    channels_last: bool = False
    config_file: Path | None = None
    description: str = ""


def get_modality(name: str) -> Modality:
    return MODALITIES.get("", name)


def build_dataset(cfg: DictConfig, split: str) -> Dataset:
    """The ``split`` ("train" or "test") of the configured data set, with ``data.limit`` (that
    many training items, evenly spaced) applied to the training split."""
    builder = DATASETS.get(cfg.modality, cfg.data.name)
    dataset = builder(cfg.data, split)
    if len(dataset) == 0:
        where = {k: v for k, v in cfg.data.items() if k in ("root", "train", "test") and v is not None}
        where = ", ".join(f"data.{k}={v}" for k, v in where.items()) or "no data.root"
        raise DataError(f"The {split} split of data set {cfg.data.name!r} is empty ({where}): nothing readable was "
                        f"found (warnings above name what was skipped). Point the data set at files that hold data.")
    if split == "train" and cfg.data.limit is not None:
        dataset = evenly_spaced(dataset, cfg.data.limit)
    return dataset


def evenly_spaced(dataset: Dataset, limit: int) -> Dataset:
    """``limit`` items spread evenly through ``dataset`` (all of it if it is smaller): not the
    first ``limit``, so a set stored class by class (or accent by accent) keeps every class."""
    if limit >= len(dataset):
        return dataset
    return Subset(dataset, (torch.arange(limit) * len(dataset) // limit).tolist())


class Subset(torch.utils.data.Subset):
    """A subset that keeps the parent's ``classes``, ``info`` (read when asked for: it may be
    computed lazily) and ``set_epoch``."""

    def __init__(self, dataset: Dataset, indices):
        super().__init__(dataset, list(indices))
        if hasattr(dataset, "set_epoch"):
            self.set_epoch = dataset.set_epoch

    @property
    def classes(self) -> list[str]:
        return getattr(self.dataset, "classes", [])

    @property
    def info(self) -> dict[str, Any]:
        return getattr(self.dataset, "info", {})


def build_encoder(modality: str, encoder_cfg: dict[str, Any] | DictConfig, info: dict[str, Any]) -> nn.Module:
    """An encoder from its config section (``name`` plus keyword options) and the data set info."""
    options = OmegaConf.to_container(encoder_cfg) if isinstance(encoder_cfg, DictConfig) else dict(encoder_cfg)
    name = options.pop("name")
    builder = ENCODERS.get(modality, name)
    check_kwargs(builder, {"info": info, **options}, f"encoder {name!r}")
    try:
        encoder = builder(info, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"encoder {name!r}: {error}") from error
    if not isinstance(getattr(encoder, "out_dim", None), int):
        raise ConfigError(f"encoder {name!r} must expose an integer `out_dim` (its feature size).")
    return encoder


def collate_items(items: list[Any], collate: Callable[[list[Any]], Any]):
    """``(batch input, labels, number of unreadable items skipped)`` from dataset items."""
    good = [item for item in items if item is not None]
    if not good:
        return None, None, len(items)
    inputs, labels = zip(*good)
    return collate(list(inputs)), torch.as_tensor(labels, dtype=torch.long), len(items) - len(good)
