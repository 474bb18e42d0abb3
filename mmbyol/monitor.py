"""Does BYOL pay on this data? The monitor measures the online encoder while it trains.

Every ``trainer.monitor_every`` steps, the encoder's features h of a fixed validation slice of
the *training* split (``trainer.monitor_items`` items, evenly spaced; the test split is for
``mmbyol eval`` alone) give a weighted kNN accuracy, when the slice is labelled, and RankMe.
The same numbers for the encoder at step 0 are the reference: augmentations that remove what
the labels depend on make the features worse than the untrained encoder's, and the monitor
says so while the run trains (docs/monitor.md).

The kNN's memory and queries are split class by class. A data set that names each item's
group (``groups``: the speaker, recording or word a test split holds out) has each class's first
half of groups in the memory and the rest in the queries, so the slice asks what the test asks:
are unseen groups told apart? Otherwise each class's first half of items, in data set order, is the
memory: data stored by recording or speaker so keeps those apart instead of matching
near-duplicates.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from .data import evenly_spaced, labelled
from .evaluate import extract_features, knn_accuracy
from .metrics import effective_rank
from .modalities.base import DataSet, Modality, TwoViews

log = logging.getLogger("mmbyol")

MEASUREMENTS_PER_RUN = 10  # trainer.monitor_every's default: about this many measurements a run


def monitor_every(cfg: DictConfig, total_steps: int) -> int:
    """Steps between measurements (0: no monitor): ``trainer.monitor_every``, or by default about
    ten a run, on a multiple of ``trainer.log_every`` so they share a line of metrics.jsonl."""
    every = cfg.trainer.monitor_every
    if every is not None:
        return every
    log_every = cfg.trainer.log_every
    return max(log_every, round(total_steps / MEASUREMENTS_PER_RUN / log_every) * log_every)


def split_memory(labels: torch.Tensor, groups: list[Any] | None = None) -> torch.Tensor:
    """True for the kNN's memory, class by class: with ``groups`` (one per item) and two or more
    groups in a class, the items of the class's first half of groups (in order of appearance, the
    larger half); otherwise the class's first half of items, in the order given (at least one). The
    rest are its queries. Unlabelled items (-1) are neither."""
    memory = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique():
        if label < 0:
            continue
        members = (labels == label).nonzero().squeeze(1).tolist()
        seen = list(dict.fromkeys(groups[i] for i in members)) if groups is not None else []
        if len(seen) >= 2:
            kept = set(seen[: (len(seen) + 1) // 2])
            members = [i for i in members if groups[i] in kept]
        else:
            members = members[: max(1, (len(members) + 1) // 2)]
        memory[members] = True
    return memory


def standard_error(accuracy: float, queries: int) -> float:
    """The binomial standard error of an accuracy measured on ``queries`` items."""
    return math.sqrt(accuracy * (1 - accuracy) / max(queries, 1))


def noise_note(knn: float, start: float, queries: int, whole_split: bool = False) -> str:
    """A sentence for a warning whose shortfall is under two standard errors of an accuracy on
    ``queries`` items (binomial, at the start's accuracy), where one slice's draw could make it;
    else nothing. ``whole_split``: the slice is the whole training split, so only the test split
    can tell more."""
    error = standard_error(start, queries)
    if start - knn >= 2 * error:
        return ""
    more = ("The slice is the whole training split: the test split tells more." if whole_split
            else "A larger slice (trainer.monitor_items) or the test split tells more.")
    return (f" The shortfall, {100 * (start - knn):.1f} points, is under two standard errors of a kNN on "
            f"{queries} queries ({100 * error:.1f} points each): it may be noise. {more}")


class Monitor:
    """kNN accuracy and RankMe of an encoder's features on a validation slice of the training
    split, read once (as evaluation reads items: no random crop, no per-view noise)."""

    def __init__(self, dataset: DataSet, modality: Modality, info: dict[str, Any], device: torch.device,
                 autocast, items: int, batch_size: int, knn_k: int, knn_temperature: float):
        self.modality, self.info, self.device, self.autocast = modality, info, device, autocast
        self.batch_size, self.knn_k, self.knn_temperature = batch_size, knn_k, knn_temperature
        read = self._read(evenly_spaced(dataset, items))
        self.whole_split = len(dataset) <= items
        self.items = [(item, label) for item, label, _ in read]
        labels = torch.tensor([label for _, label in self.items], dtype=torch.long)
        self.memory = split_memory(labels, [group for _, _, group in read])  # no groups: one (None) per class
        self.queries = (labels >= 0) & ~self.memory
        self.labels = labels
        self.num_classes = int(labels.max()) + 1 if len(labels) else 0
        self.labelled = bool(self.queries.any()) and len(labels[labels >= 0].unique()) >= 2
        # eval's k (200 of tens of thousands) would be most of a small memory and vote by class
        # size; √n neighbours is the usual scale for n examples
        self.k = min(knn_k, max(1, math.ceil(math.sqrt(int(self.memory.sum())))))
        self.start: dict[str, float] | None = None  # the step-0 measurement
        self.features: torch.Tensor | None = None  # the last measurement's, for its noise (mmbyol search)
        self.seconds = 0.0  # time spent measuring, in all

    @staticmethod
    def _read(dataset) -> list[tuple[Any, int, Any]]:
        """Every readable item of ``dataset`` once, as evaluation reads it, with its group (``None``
        when the data set names none)."""
        epoch = getattr(getattr(dataset, "dataset", dataset), "epoch", None)  # a Subset's parent's
        groups = getattr(dataset, "groups", None) or [None] * len(dataset)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(None)  # no random crop or per-view noise; the loop sets the epoch again
        try:
            items = [(dataset[i], groups[i]) for i in range(len(dataset))]
        finally:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
        return [(item[0].view1 if isinstance(item[0], TwoViews) else item[0], item[1], group)
                for item, group in items if item is not None]

    @torch.no_grad()
    def measure(self, encoder: nn.Module) -> dict[str, float]:
        """``monitor_knn`` (labelled slices only) and ``monitor_rank`` of ``encoder``'s features, in
        eval mode, and the seconds that took (``monitor_seconds``); the encoder returns to the mode
        it was in. Draws no random numbers, so a run's course does not depend on whether it is
        monitored."""
        started, training = time.perf_counter(), encoder.training
        try:
            features, _ = extract_features(encoder, self.items, self.modality, self.device, self.batch_size,
                                           self.info, self.autocast)
        finally:
            encoder.train(training)
        self.features = features
        result = {"monitor_rank": round(effective_rank(features), 3)}
        if self.labelled:
            result["monitor_knn"] = round(knn_accuracy(
                features[self.memory], self.labels[self.memory], features[self.queries], self.labels[self.queries],
                self.num_classes, self.k, self.knn_temperature), 4)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        return {**result, "monitor_seconds": round(seconds, 3)}

    def record(self, step: int, total_steps: int, encoder: nn.Module) -> dict[str, float]:
        """The measurement at ``step`` with the step-0 reference beside it, warning when, past half
        of the run, the kNN accuracy is still below the reference."""
        result = self.measure(encoder)
        if step == 0 or self.start is None:
            self.start = {k: v for k, v in result.items() if k in ("monitor_knn", "monitor_rank")}
            return result
        start = {f"{key}_start": value for key, value in self.start.items()}
        knn, knn_start = result.get("monitor_knn"), self.start.get("monitor_knn")
        if knn is not None and knn_start is not None and step >= total_steps / 2 and knn < knn_start:
            log.warning("MONITOR WARNING at step %d of %d: kNN accuracy on the validation slice is %.1f%%, below the "
                        "untrained encoder's %.1f%% at step 0. BYOL is making these features worse for these labels: "
                        "the augmentations likely remove what the labels depend on. Find a better pair with "
                        "`mmbyol search` (docs/monitor.md).%s", step, total_steps, 100 * knn, 100 * knn_start,
                        noise_note(knn, knn_start, int(self.queries.sum()), self.whole_split))
        return {**result, **start}

    def restore(self, metrics_path: Path) -> None:
        """The step-0 reference of a resumed run, from its metrics.jsonl."""
        if not metrics_path.exists():
            return
        for line in metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("step") == 0 and "monitor_rank" in record:
                self.start = {k: v for k, v in record.items() if k in ("monitor_knn", "monitor_rank")}
                return


def build_monitor(cfg: DictConfig, dataset: DataSet, modality: Modality, info: dict[str, Any],
                  device: torch.device, autocast) -> Monitor | None:
    """The run's monitor as the config sets it, or ``None`` when it is off (``trainer.monitor_every=0``
    or ``trainer.monitor_items=0``)."""
    if cfg.trainer.monitor_every == 0 or cfg.trainer.monitor_items < 1:
        return None
    return monitor_from_config(cfg, dataset, modality, info, device, autocast)


def monitor_from_config(cfg: DictConfig, dataset: DataSet, modality: Modality, info: dict[str, Any],
                        device: torch.device, autocast) -> Monitor:
    """A monitor of ``trainer.monitor_items`` items with eval's kNN settings, whatever ``monitor_every`` says."""
    return Monitor(labelled(dataset), modality, info, device, autocast, cfg.trainer.monitor_items,
                   cfg.eval.batch_size, cfg.eval.knn_k, cfg.eval.knn_temperature)
