"""The data path from a registered data set to the two prepared inputs of the views: building a
split, the batches of an epoch (the same on resume, sliced per rank), collation with unreadable
items skipped and counted, and ``prepare`` on the device."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler

from .distributed import ONE_PROCESS, Ranks
from .errors import DataError
from .modalities.base import DataSet, Modality, TwoViews
from .registry import DATASETS

log = logging.getLogger("mmbyol")


def build_dataset(cfg: DictConfig, split: str) -> DataSet:
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


def labelled(dataset: Dataset) -> Dataset:
    """The items of ``dataset`` that have a label (not -1), where it lists its ``labels`` and mixes
    both (STL-10's train and unlabelled splits, which BYOL trains on together); else ``dataset``."""
    parent, indices = (dataset.dataset, dataset.indices) if isinstance(dataset, Subset) else (dataset, None)
    labels = getattr(parent, "labels", None)
    if labels is None:
        return dataset
    labels = torch.as_tensor(labels if indices is None else [int(labels[i]) for i in indices])
    keep = (labels >= 0).nonzero().squeeze(1).tolist()
    if len(keep) in (0, len(labels)):
        return dataset
    return Subset(parent, keep if indices is None else [indices[i] for i in keep])


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

    @property
    def groups(self) -> list[Any] | None:
        groups = getattr(self.dataset, "groups", None)
        return None if groups is None else [groups[i] for i in self.indices]

    @property
    def origins(self) -> list[Any] | None:
        origins = getattr(self.dataset, "origins", None)
        return None if origins is None else [origins[i] for i in self.indices]


def collate_items(items: list[Any], collate: Callable[[list[Any]], Any]):
    """``(batch input, labels, number of unreadable items skipped)`` from data set items; the
    batch input is ``None`` when no item was readable, a :class:`TwoViews` of batches when the
    items give an input per view."""
    good = [item for item in items if item is not None]
    if not good:
        return None, None, len(items)
    inputs, labels = zip(*good)
    if isinstance(inputs[0], TwoViews):
        batch = TwoViews(collate([i.view1 for i in inputs]), collate([i.view2 for i in inputs]))
    else:
        batch = collate(list(inputs))
    return batch, torch.as_tensor(labels, dtype=torch.long), len(items) - len(good)


def prepare_views(modality: Modality, batch: Any, device: torch.device, info: dict[str, Any]) -> tuple[Any, Any]:
    """The prepared input of each view: the one prepared batch for both, or, for a
    :class:`TwoViews` batch, each view's own."""
    if isinstance(batch, TwoViews):
        return modality.prepare(batch.view1, device, info), modality.prepare(batch.view2, device, info)
    prepared = modality.prepare(batch, device, info)
    return prepared, prepared


class EpochBatches(Sampler):
    """Batches of one epoch: a permutation fixed by (seed, epoch), so a resumed run sees the
    same batches; ``start`` skips the batches already trained on. The last partial batch is
    dropped (BatchNorm needs full batches). Under ``torchrun`` rank r of w takes the r-th of w
    equal slices of every global batch of ``batch_size``: the global batches, and so a run's
    course, do not depend on the number of processes, and a run resumes on any number."""

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, start: int = 0, ranks: Ranks = ONE_PROCESS):
        self.size, self.batch_size, self.seed, self.epoch, self.start = size, batch_size, seed, epoch, start
        self.batches = size // batch_size
        self.local = batch_size // ranks.world
        self.offset = ranks.rank * self.local

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[: self.batches * self.batch_size]
        batches = order.view(self.batches, self.batch_size)[self.start :, self.offset : self.offset + self.local]
        yield from batches.tolist()

    def __len__(self) -> int:
        return self.batches - self.start


def loader_workers(cfg: DictConfig, device: torch.device, ranks: Ranks = ONE_PROCESS) -> int:
    """``data.num_workers``, or by default: none on CPU (workers would take the cores the step
    needs), and on CUDA up to 8 per process, so decoding and collation never starve the GPU."""
    if cfg.data.num_workers is not None:
        return cfg.data.num_workers
    if device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // ranks.local_world - 1))


def make_loader(dataset: DataSet, modality: Modality, cfg: DictConfig, epoch: int, start: int, device: torch.device,
                ranks: Ranks = ONE_PROCESS) -> DataLoader:
    """The batches of ``epoch`` from batch ``start`` on (this rank's slices of them), after
    ``set_epoch(epoch)`` for a data set with random per-item choices."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    workers = loader_workers(cfg, device, ranks)
    return DataLoader(
        dataset,
        batch_sampler=EpochBatches(len(dataset), cfg.data.batch_size, cfg.seed, epoch, start, ranks),
        collate_fn=partial(collate_items, collate=modality.collate),
        num_workers=workers,
        # its own generator: making a loader must not draw from the global RNG (dropout uses it),
        # or a run resumed mid-epoch would drift from the straight one
        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch),
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


class SkipCount:
    """Unreadable training items, skipped and counted: a warning at each batch that had some, and
    an error once more than half of the items read so far were unreadable."""

    def __init__(self):
        self.total, self.read = 0, 0

    def add(self, skipped: int, batch_size: int, step: int) -> None:
        self.read += batch_size
        if not skipped:
            return
        self.total += skipped
        log.warning("skipped %d unreadable item(s) at step %d (%d so far)", skipped, step, self.total)
        if self.total > self.read / 2:
            raise DataError(f"{self.total} of the {self.read} training items read so far were unreadable (the "
                            f"warnings above name them): this is not the data set it should be. Check data.root, "
                            f"or remove the broken files.")
