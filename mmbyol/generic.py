"""Augmentations that need no domain knowledge, registered once for every modality whose prepared
batch is a float tensor with named axes (``Modality.axes``; image, audio and time series here, not
text, whose batch is token ids). They are the starting points research offers for a modality
nobody has designed a pair for:

- ``randomized_quantization``: a random non-uniform quantizer per channel (Wu et al., ICCV 2023);
- ``span_mask``: spans along an axis set to the mean level, as data2vec masks;
- ``crop_resize``: a random window along an axis stretched back to the axis' length;
- ``memory_mixup``: mixed with a remembered past input, mixup as positive noise (DACL, Verma et al.
  2021; BYOL-A's mixup is the same idea in the log domain);
- ``gaussian_noise``, ``amplitude_scale``, ``magnitude_warp``, ``time_warp``,
  ``segment_permutation``: the time-series classics (Um et al. 2017; TS-TCC, Eldele et al. 2021);
  the last two only where an axis is time.

Each acts on a whole batch on the device with one draw per sample from the view generator, and
declares its search ranges. A generic augmentation finds its axis by name when the view pair is
built (:meth:`~mmbyol.augment.Augmentation.bind`): ``axis: time`` on a time series, ``axis:
frequency`` on a spectrogram, ``axis: [height, width]`` on an image; left unset, the time axis where
there is one, else the last (``crop_resize``: every axis but the channels). A plugin registers a
generic augmentation the same way, under the scope ``*``: ``@register_augmentation("*", "name")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F

from .augment import Augmentation, Float, Int, Interval, along_axis, bands, uniform, window_positions
from .registry import GENERIC, register_augmentation


def sample_along(x: torch.Tensor, dim: int, position: torch.Tensor) -> torch.Tensor:
    """``x`` read along ``dim`` at fractional ``position`` ``(B, L_out)`` (in samples, 0 … L−1),
    linearly interpolated, one row of positions per sample: the resampling every warp, crop and
    permutation here is made of."""
    moved = x.movedim(dim, -1)
    shape = moved.shape
    rows = moved.reshape(shape[0], -1, shape[-1])
    position = position.clamp(0, shape[-1] - 1)
    low = position.floor()
    weight = (position - low).unsqueeze(1).to(x.dtype)
    low = low.long()
    high = (low + 1).clamp(max=shape[-1] - 1)
    index = (low.unsqueeze(1).expand(-1, rows.shape[1], -1), high.unsqueeze(1).expand(-1, rows.shape[1], -1))
    out = rows.gather(-1, index[0]) * (1 - weight) + rows.gather(-1, index[1]) * weight
    return out.reshape(*shape[:-1], position.shape[-1]).movedim(-1, dim)


class AxisAugmentation(Augmentation):
    """A generic augmentation that acts along named axes of the batch, one after the other with a
    draw of its own for each: ``axis`` is a name, a list of names, or ``None`` for the class's
    ``default_axes`` (``"time"``: the time axis, else the last; ``"all"``: every axis but the
    channels). ``needs`` names axes the batch must have. Subclasses implement :meth:`along`."""

    needs: ClassVar[tuple[str, ...]] = ()
    default_axes: ClassVar[str] = "time"

    def __init__(self, axis: str | list[str] | None = None, p: float = 1.0):
        super().__init__(p)
        self.axis = axis if axis is None or isinstance(axis, str) else list(axis)
        self.dims: list[int] | None = None
        self.channel_dim: int | None = None

    def bind(self, axes: Mapping[str, int]) -> None:
        missing = [name for name in self.needs if name not in axes]
        if missing:
            raise ValueError(f"needs a batch with a {missing[0]!r} axis; this modality's axes are "
                             f"{', '.join(axes) or 'none'}")
        self.channel_dim = axes.get("channel")
        if not axes:  # a modality that names no axes: the batch's last, in forward
            return
        if self.axis is None:
            if self.default_axes == "all":
                self.dims = [dim for name, dim in axes.items() if name != "channel"]
            else:
                self.dims = [axes["time"] if "time" in axes else max(axes.values())]
            return
        names = [self.axis] if isinstance(self.axis, str) else self.axis
        unknown = [name for name in names if name not in axes]
        if unknown or not names:
            raise ValueError(f"axis={self.axis!r} names no axis of this modality's batch: {', '.join(axes)}")
        self.dims = [axes[name] for name in names]

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.dims is None:  # built by hand, not from a config: the batch's last axis
            self.dims = [x.dim() - 1]
        return super().forward(x, generator)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for dim in self.dims:
            x = self.along(x, dim, generator)
        return x

    def along(self, x: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
        """Transform every row of ``x`` along ``dim``, with a draw per row."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"axis={self.axis}, p={self.p}"


@register_augmentation(GENERIC, "randomized_quantization")
class RandomizedQuantization(AxisAugmentation):
    """Wu et al. (2023): each channel of each sample is quantized with ``bins`` random intervals:
    ``bins − 1`` cut points drawn uniformly over the channel's range, and every value in an interval
    replaced by one level drawn uniformly inside it. Monotone, so order survives; the precise
    values do not. Per channel where the batch has a channel axis, else per sample."""

    search_space = {"bins": Int(2, 32), "p": Float(0.0, 1.0)}

    def __init__(self, bins: int = 8, p: float = 1.0):
        super().__init__(None, p)
        if bins < 2:
            raise ValueError(f"bins must be at least 2, got {bins}")
        self.bins = bins

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        rows = (x.movedim(self.channel_dim, 1) if self.channel_dim else x.unsqueeze(1)).float()
        flat = rows.reshape(n, rows.shape[1], -1)
        low, high = flat.amin(dim=-1, keepdim=True), flat.amax(dim=-1, keepdim=True)
        cuts = torch.rand(*flat.shape[:2], self.bins - 1, generator=generator, device=x.device).sort(dim=-1).values
        cuts = low + (high - low) * cuts
        edges = torch.cat([low, cuts, high], dim=-1)
        levels = edges[..., :-1] + (edges[..., 1:] - edges[..., :-1]) * torch.rand(
            *flat.shape[:2], self.bins, generator=generator, device=x.device)
        out = levels.gather(-1, torch.searchsorted(cuts.contiguous(), flat.contiguous()))
        out = out.reshape(rows.shape)
        out = out.movedim(1, self.channel_dim) if self.channel_dim else out.squeeze(1)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, p={self.p}"


@register_augmentation(GENERIC, "span_mask")
class SpanMask(AxisAugmentation):
    """About ``ratio`` of the axis hidden in spans of ``span`` of its length each (at random
    places, which may overlap), set to ``value`` (0: the mean level of normalized data)."""

    search_space = {"ratio": Float(0.05, 0.5), "span": Float(0.02, 0.3), "p": Float(0.0, 1.0)}

    def __init__(self, ratio: float = 0.2, span: float = 0.1, value: float = 0.0, axis: str | None = None,
                 p: float = 1.0):
        super().__init__(axis, p)
        if not 0 <= ratio <= 1 or not 0 < span <= 1:
            raise ValueError(f"ratio must lie in [0, 1] and span in (0, 1]; got {ratio}, {span}")
        self.ratio, self.span, self.value = ratio, span, value

    def along(self, x: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
        n, size = x.shape[0], x.shape[dim]
        width = max(1, round(self.span * size))
        count = max(1, round(self.ratio * size / width)) if self.ratio > 0 else 0
        start = torch.randint(size - width + 1, (n, count, 1), generator=generator, device=x.device)
        return x.masked_fill(along_axis(bands(start, width, size), x, dim), self.value)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, span={self.span}, axis={self.axis}, p={self.p}"


@register_augmentation(GENERIC, "crop_resize")
class CropResize(AxisAugmentation):
    """A window of ``scale`` ~ U(low, high) of the axis, at a random place, stretched back to the
    axis' length (linear interpolation): a random crop and a change of scale in one. By default
    along every axis but the channels, each with its own draw (an image's height and width, a
    spectrogram's frequency and time, a series' time). ``size`` below 1 resamples the window to
    that fraction of the axis' length instead: the short local views of multi-crop
    (``augment.local``), which cost less to encode."""

    default_axes = "all"
    search_space = {"scale": Interval(0.1, 1.0), "p": Float(0.0, 1.0)}

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0), size: float = 1.0, axis: str | None = None,
                 p: float = 1.0):
        super().__init__(axis, p)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be [low, high] with 0 < low <= high <= 1, got {scale}")
        if not 0 < size <= 1:
            raise ValueError(f"size is the output's length as a fraction of the axis', in (0, 1], got {size}")
        if size < 1 and p < 1:
            raise ValueError(f"size={size} shortens every row of the batch, so every row must be cropped: p=1, not {p}")
        self.scale, self.size = tuple(scale), float(size)

    def along(self, x: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
        n, size = x.shape[0], x.shape[dim]
        length = uniform(n, *self.scale, generator, x.device)
        start = torch.rand(n, generator=generator, device=x.device) * (1 - length)
        return sample_along(x, dim, window_positions(start, length, size, max(1, round(self.size * size))))

    def extra_repr(self) -> str:
        size = f", size={self.size}" if self.size < 1 else ""
        return f"scale={self.scale}{size}, axis={self.axis}, p={self.p}"


@register_augmentation(GENERIC, "memory_mixup")
class MemoryMixup(Augmentation):
    """Each sample mixed with an input remembered from past batches, ``(1 − λ)·x + λ·z`` with
    λ ~ U(0, ``ratio``): the other sample is noise the view should see through (DACL's positive
    mixup). The memory keeps the last ``memory_size`` inputs (all rows, mixed or not) in float16,
    and is part of the checkpoint. Nothing is mixed until the memory holds something."""

    search_space = {"ratio": Float(0.0, 0.5), "p": Float(0.0, 1.0)}

    def __init__(self, ratio: float = 0.2, memory_size: int = 2048, p: float = 1.0):
        super().__init__(p)
        if not 0.0 <= ratio <= 1.0 or memory_size < 1:
            raise ValueError(f"ratio must lie in [0, 1] and memory_size be positive; got {ratio}, {memory_size}")
        self.ratio, self.memory_size = ratio, memory_size
        self.register_buffer("memory", torch.empty(0, dtype=torch.float16))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        out = super().forward(x, generator) if self.filled > 0 else x
        self._remember(x)
        return out

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        lam = uniform(n, 0.0, self.ratio, generator, x.device).view(n, *[1] * (x.dim() - 1))
        pick = torch.randint(int(self.filled), (n,), generator=generator, device=x.device)
        return self.mix(x, self.memory[pick].to(x.dtype), lam)

    def mix(self, x: torch.Tensor, z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return (1 - lam) * x + lam * z

    @torch.no_grad()
    def _remember(self, x: torch.Tensor) -> None:
        if self.memory.shape[1:] != x.shape[1:]:
            self.memory = torch.zeros(self.memory_size, *x.shape[1:], dtype=torch.float16, device=x.device)
            self.filled.zero_()
            self.position.zero_()
        rows = x.detach()[-self.memory_size :]
        index = (self.position + torch.arange(len(rows), device=x.device)) % self.memory_size
        self.memory[index] = rows.to(torch.float16)
        self.position.copy_((self.position + len(rows)) % self.memory_size)
        self.filled.copy_(torch.clamp(self.filled + len(rows), max=self.memory_size))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "memory")
        if saved is not None:  # the memory takes the saved shape (it is sized on the first batch)
            self.memory = torch.empty_like(saved, device=self.memory.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, memory_size={self.memory_size}, p={self.p}"


@register_augmentation(GENERIC, "gaussian_noise")
class GaussianNoise(Augmentation):
    """Noise ~ N(0, std²) added to every value (the jitter of Um et al.), in the batch's units: for
    normalized data, ``std`` is a fraction of the data's standard deviation."""

    search_space = {"std": Float(0.01, 1.0, log=True), "p": Float(0.0, 1.0)}

    def __init__(self, std: float = 0.1, p: float = 1.0):
        super().__init__(p)
        if std < 0:
            raise ValueError(f"std must be non-negative, got {std}")
        self.std = std

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        return (x + self.std * noise).to(x.dtype)

    def extra_repr(self) -> str:
        return f"std={self.std}, p={self.p}"


@register_augmentation(GENERIC, "amplitude_scale")
class AmplitudeScale(AxisAugmentation):
    """Each sample (each of its channels, with ``per_channel`` where there is a channel axis)
    multiplied by a factor ~ N(1, std²) (the scaling of Um et al.)."""

    search_space = {"std": Float(0.05, 1.0), "p": Float(0.0, 1.0)}

    def __init__(self, std: float = 0.2, per_channel: bool = True, p: float = 1.0):
        super().__init__(None, p)
        if std < 0:
            raise ValueError(f"std must be non-negative, got {std}")
        self.std, self.per_channel = std, per_channel

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        if self.per_channel and self.channel_dim:
            shape[self.channel_dim] = x.shape[self.channel_dim]
        factor = 1 + self.std * torch.randn(shape, generator=generator, device=x.device)
        return (x * factor).to(x.dtype)

    def extra_repr(self) -> str:
        return f"std={self.std}, per_channel={self.per_channel}, p={self.p}"


class SmoothCurve(AxisAugmentation):
    """An augmentation driven by a smooth random curve around 1 along an axis: values ~
    N(1, strength²) at ``knots`` interior points and the two ends, linearly interpolated, floored
    at 0.05 (Um et al.'s magnitude and time warps)."""

    search_space = {"strength": Float(0.05, 0.6), "knots": Int(1, 8), "p": Float(0.0, 1.0)}

    def __init__(self, strength: float = 0.2, knots: int = 4, axis: str | None = None, p: float = 1.0):
        super().__init__(axis, p)
        if strength < 0 or knots < 0:
            raise ValueError(f"strength and knots must be non-negative, got {strength}, {knots}")
        self.strength, self.knots = strength, knots

    def curves(self, n: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """``(n, size)`` curves, one per sample."""
        values = 1 + self.strength * torch.randn(n, 1, self.knots + 2, generator=generator, device=device)
        return F.interpolate(values, size=size, mode="linear", align_corners=True).squeeze(1).clamp_min(0.05)

    def extra_repr(self) -> str:
        return f"strength={self.strength}, knots={self.knots}, axis={self.axis}, p={self.p}"


@register_augmentation(GENERIC, "magnitude_warp")
class MagnitudeWarp(SmoothCurve):
    """The sample multiplied along an axis by a smooth random curve around 1 (Um et al.)."""

    def along(self, x: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
        curve = self.curves(x.shape[0], x.shape[dim], generator, x.device)
        return (x * along_axis(curve, x, dim)).to(x.dtype)


@register_augmentation(GENERIC, "time_warp")
class TimeWarp(SmoothCurve):
    """Time run faster and slower in turn (Um et al.): the local speed is a smooth random curve
    around 1, and the sample is read at the times it integrates to, rescaled so that the first and
    last instants stay in place."""

    needs = ("time",)

    def __init__(self, strength: float = 0.2, knots: int = 4, p: float = 1.0):
        super().__init__(strength, knots, "time", p)

    def along(self, x: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
        n, size = x.shape[0], x.shape[dim]
        speed = self.curves(n, size, generator, x.device)
        elapsed = torch.cat([torch.zeros(n, 1, device=x.device), speed[:, 1:].cumsum(dim=1)], dim=1)
        position = elapsed / elapsed[:, -1:].clamp_min(1e-12) * (size - 1)
        return sample_along(x, dim, position)

    def extra_repr(self) -> str:
        return f"strength={self.strength}, knots={self.knots}, p={self.p}"


@register_augmentation(GENERIC, "segment_permutation")
class SegmentPermutation(AxisAugmentation):
    """The time axis cut at ``segments − 1`` random points and its pieces put back in a random
    order (TS-TCC's strong view): local shapes survive, their order does not."""

    needs = ("time",)
    search_space = {"segments": Int(2, 10), "p": Float(0.0, 1.0)}

    def __init__(self, segments: int = 5, p: float = 1.0):
        super().__init__("time", p)
        if segments < 1:
            raise ValueError(f"segments must be at least 1, got {segments}")
        self.segments = segments

    def along(self, x: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
        n, size, k = x.shape[0], x.shape[dim], self.segments
        cuts = torch.randint(1, max(size, 2), (n, k - 1), generator=generator, device=x.device).sort(dim=1).values
        start = torch.cat([torch.zeros(n, 1, dtype=torch.long, device=x.device), cuts], dim=1)  # (n, k)
        length = torch.diff(start, dim=1, append=torch.full((n, 1), size, device=x.device))
        order = torch.rand(n, k, generator=generator, device=x.device).argsort(dim=1)
        placed_length = length.gather(1, order)
        placed_end = placed_length.cumsum(dim=1)
        position = torch.arange(size, device=x.device).expand(n, size).contiguous()
        slot = torch.searchsorted(placed_end, position, right=True).clamp(max=k - 1)
        segment = order.gather(1, slot)
        source = start.gather(1, segment) + position - (placed_end.gather(1, slot) - placed_length.gather(1, slot))
        return sample_along(x, dim, source.to(torch.float32))

    def extra_repr(self) -> str:
        return f"segments={self.segments}, p={self.p}"
