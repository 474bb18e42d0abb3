"""Time series: multichannel sequences ``(channels, length)`` from the UCR/UEA archive's ``.ts``
files or the user's arrays (``data``), the FCN and ResNet baselines and a patch Transformer
(``encoders``). There are no time-series augmentations of its own: the default pair is made of
generic ones (``mmbyol.generic``), which act on the batch ``(B, channels, length)`` by its axes'
names. ``prepare`` normalizes each channel with the training split's mean and std, kept in the
run's ``info``. docs/timeseries.md has the defaults and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ...errors import InputShapeError
from ...registry import register_modality
from ..base import ROW_LABELS, Modality
from . import data, encoders  # noqa: F401  (each registers its parts)
from .data import TimeSeriesDataConfig, resample


def collate_series(inputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(inputs)


class SeriesFrontEnd(nn.Module):
    """Raw series ``(B, channels, steps)``, any number of steps, shorter ones padded with NaN at
    the end, made what the encoder trained on: each resampled to the run's length as the data
    sets do (:func:`~.data.resample`), each channel normalized with the training split's mean and
    std, a missing value (NaN) then 0, the channel's mean. A run on windows of long series
    (``data.window``) takes windows of that many steps: a series of another length is an error, not
    squeezed or stretched."""

    def __init__(self, info: dict):
        super().__init__()
        self.length, self.window = info["length"], info.get("window")
        self.register_buffer("mean", torch.tensor(info["mean"], dtype=torch.float32).view(1, -1, 1))
        self.register_buffer("std", torch.tensor(info["std"], dtype=torch.float32).view(1, -1, 1))

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        channels = self.mean.shape[1]
        if series.dim() != 3 or series.shape[1] != channels:
            fix = ("It looks like (batch, steps, channels): give series.transpose(1, 2)."
                   if series.dim() == 3 and series.shape[2] == channels else f"Give the encoder data with {channels} "
                   f"channels.")
            raise InputShapeError(f"expected series (batch, {channels} channels, steps), as the run trained on; got "
                                  f"shape {tuple(series.shape)}. {fix}")
        if self.window and not torch.compiler.is_compiling() and series.shape[2] != self.window:  # no guard on export
            w = self.window
            raise InputShapeError(f"the run trained on windows of {w} steps (data.window); got series of "
                                  f"{series.shape[2]}. Cut them into windows first: series.unfold(2, {w}, STRIDE)"
                                  f".transpose(1, 2).flatten(0, 1) gives (batch × windows, {channels}, {w}).")
        return self.normalize(resample(series.to(self.mean.device, non_blocking=True).float(), self.length))

    def normalize(self, series: torch.Tensor) -> torch.Tensor:
        """Each channel with the training split's mean and std; a missing value then 0."""
        return torch.nan_to_num((series - self.mean) / self.std, nan=0.0)


def prepare_series(batch: torch.Tensor, device: torch.device, info: dict) -> torch.Tensor:
    return SeriesFrontEnd(info).to(device)(batch)


def save_lines(original: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor, path: Path,
               info: dict | None = None, channels: int = 3, labels: Sequence[str] = ROW_LABELS) -> None:
    """A grid of line plots: a column per item, rows original / view 1 / view 2 (or ``labels``),
    the first ``channels`` channels of each drawn as lines on one shared scale per item (a shorter
    local view spans less of the time axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [x.float().cpu() for x in (original, view1, view2)]
    n = len(rows[0])
    figure, axes = plt.subplots(3, n, figsize=(2.2 * n + 0.6, 5.4), squeeze=False, sharex="col", sharey="col")
    for row, (label, x) in enumerate(zip(labels, rows)):
        for item in range(n):
            ax = axes[row][item]
            for channel in range(min(channels, x.shape[1])):
                ax.plot(x[item, channel].numpy(), linewidth=0.9)
            ax.tick_params(labelsize=6)
            if item == 0:
                ax.set_ylabel(label)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


register_modality(Modality(
    name="timeseries",
    data_config=TimeSeriesDataConfig,
    collate=collate_series,
    prepare=prepare_series,
    render_views=save_lines,
    front_end=SeriesFrontEnd,
    axes={"channel": 1, "time": 2},
    description="multichannel series (UCR/UEA .ts, arrays) with generic augmentations",
))
