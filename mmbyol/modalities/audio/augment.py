"""BYOL-A's augmentations (and a few more) as batched on-device ops. Batches are normalized
log-mel spectrograms ``(B, 1, F, T)``: 0 is the data set's mean level and 1 its standard
deviation, the units BYOL-A's parameters are given in."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...augment import Augmentation, Float, Int, Interval, along_axis, bands, interpolation_matrix, uniform
from ...generic import MemoryMixup
from ...registry import register_augmentation


@register_augmentation("audio", "mixup")
class LogMixupExp(MemoryMixup):
    """BYOL-A's mixup: each sample gets a background sound from a memory of past inputs, mixed
    in the linear power domain (``log((1 − λ)·e^x + λ·e^z)``, λ ~ U(0, ``ratio``)); the generic
    ``memory_mixup`` with BYOL-A's mixing, and the same memory."""

    def __init__(self, ratio: float = 0.2, memory_size: int = 2048, log_mixup_exp: bool = True, p: float = 1.0):
        super().__init__(ratio, memory_size, p)
        self.log_mixup_exp = log_mixup_exp

    def mix(self, x: torch.Tensor, z: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        if self.log_mixup_exp:  # log-sum-exp form: exact identity at λ = 0, no overflow
            return torch.logaddexp(x + torch.log1p(-lam), z + lam.log())
        return super().mix(x, z, lam)


@register_augmentation("audio", "random_resize_crop")
class RandomResizeCrop(Augmentation):
    """BYOL-A's random resize crop: the spectrogram sits in the middle of a virtual canvas
    ``virtual_crop_scale`` times its size (frequency, time), padded with 0 (the mean level); a
    crop of ``freq_scale`` × ``time_scale`` of the spectrogram's size (clipped to the canvas) at
    a random place is resized back to the input size (bilinear). Shape is kept."""

    search_space = {"freq_scale": Interval(0.5, 1.6), "time_scale": Interval(0.5, 1.6)}

    def __init__(
        self,
        virtual_crop_scale: tuple[float, float] = (1.0, 1.5),
        freq_scale: tuple[float, float] = (0.6, 1.5),
        time_scale: tuple[float, float] = (0.6, 1.5),
        p: float = 1.0,
    ):
        super().__init__(p)
        self.virtual_crop_scale = tuple(virtual_crop_scale)
        self.freq_scale, self.time_scale = tuple(freq_scale), tuple(time_scale)

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, freqs, frames = x.shape
        canvas_f = int(freqs * self.virtual_crop_scale[0])
        canvas_t = int(frames * self.virtual_crop_scale[1])
        pad_f, pad_t = (canvas_f - freqs) // 2, (canvas_t - frames) // 2
        canvas = F.pad(x, (pad_t, canvas_t - frames - pad_t, pad_f, canvas_f - freqs - pad_f))
        # crop sizes in canvas cells, as BYOL-A draws them (int of scale × input size, clipped to the canvas)
        height = (uniform(n, *self.freq_scale, generator, x.device) * freqs).floor().clamp(1, canvas_f)
        width = (uniform(n, *self.time_scale, generator, x.device) * frames).floor().clamp(1, canvas_t)
        top = (torch.rand(n, generator=generator, device=x.device) * (canvas_f - height + 1)).floor()
        left = (torch.rand(n, generator=generator, device=x.device) * (canvas_t - width + 1)).floor()
        rows = interpolation_matrix(top / canvas_f, height / canvas_f, canvas_f, freqs)
        cols = interpolation_matrix(left / canvas_t, width / canvas_t, canvas_t, frames)
        return rows.unsqueeze(1).to(x.dtype) @ canvas @ cols.transpose(1, 2).unsqueeze(1).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"virtual_crop_scale={self.virtual_crop_scale}, freq_scale={self.freq_scale}, "
                f"time_scale={self.time_scale}, p={self.p}")


@register_augmentation("audio", "random_linear_fader")
class RandomLinearFader(Augmentation):
    """BYOL-A v2's fade in/out: a straight line over time from ``head`` to ``tail``, each
    ~ U(−gain, gain) per sample, added to the log-mel (a gain ramp)."""

    search_space = {"gain": Float(0.1, 2.0), "p": Float(0.0, 1.0)}

    def __init__(self, gain: float = 1.0, p: float = 1.0):
        super().__init__(p)
        self.gain = gain

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, frames = x.shape[0], x.shape[-1]
        head, tail = uniform(2 * n, -self.gain, self.gain, generator, x.device).view(2, n, 1)
        ramp = torch.linspace(0, 1, frames, device=x.device, dtype=x.dtype)
        return x + (head + (tail - head) * ramp).view(n, 1, 1, frames).to(x.dtype)

    def extra_repr(self) -> str:
        return f"gain={self.gain}, p={self.p}"


@register_augmentation("audio", "gain")
class RandomGain(Augmentation):
    """A constant gain ~ U(−gain, gain) per sample, added to the log-mel."""

    search_space = {"gain": Float(0.1, 2.0), "p": Float(0.0, 1.0)}

    def __init__(self, gain: float = 0.5, p: float = 1.0):
        super().__init__(p)
        self.gain = gain

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        return x + uniform(n, -self.gain, self.gain, generator, x.device).view(n, 1, 1, 1).to(x.dtype)


@register_augmentation("audio", "noise")
class AddNoise(Augmentation):
    """Stationary noise mixed in the power domain, the way noisy recordings are made:
    ``logaddexp(x, n)``, the noise floor ``n`` at ``level`` ~ U(low, high) relative to the
    sample's mean level, tilted across the mel bins by ~ U(−tilt, tilt) (white to pink to brown,
    roughly) and grainy cell by cell (Gaussian, std ``grain``); all in the normalized log-mel
    units mixup uses. One draw per sample, so the two views of a clip get different noise and
    the encoder is asked to see through it. The result is never below the input."""

    search_space = {"level": Interval(-4.0, 1.0), "tilt": Float(0.0, 2.0), "grain": Float(0.0, 0.6),
                    "p": Float(0.0, 1.0)}

    def __init__(self, level: tuple[float, float] = (-2.0, 0.5), tilt: float = 1.0, grain: float = 0.3, p: float = 1.0):
        super().__init__(p)
        if level[0] > level[1] or tilt < 0 or grain < 0:
            raise ValueError(f"level must be [low, high] with low <= high, tilt and grain non-negative; "
                             f"got {level}, {tilt}, {grain}")
        self.level, self.tilt, self.grain = tuple(level), tilt, grain

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, freqs = x.shape[0], x.shape[-2]
        level = uniform(n, *self.level, generator, x.device).view(n, 1, 1, 1)
        level = level + x.float().mean(dim=(1, 2, 3), keepdim=True)
        slope = uniform(n, -self.tilt, self.tilt, generator, x.device).view(n, 1, 1, 1)
        tilt = slope * torch.linspace(0.5, -0.5, freqs, device=x.device).view(1, 1, freqs, 1)
        grain = torch.randn(x.shape, generator=generator, device=x.device) * self.grain
        return torch.logaddexp(x, (level + tilt + grain).to(x.dtype))

    def extra_repr(self) -> str:
        return f"level={self.level}, tilt={self.tilt}, grain={self.grain}, p={self.p}"


@register_augmentation("audio", "denoise")
class Denoise(Augmentation):
    """Spectral subtraction (Boll 1979) at a random strength: a view with less of the clip's
    stationary noise. Each mel bin's noise level is taken as its mean over time (in the log
    domain, as cepstral mean normalization does); ``strength`` ~ U(low, high) times that level
    is subtracted from the power (``e^x``, the units mixup uses), and no cell drops below
    ``floor`` times its input (the spectral floor of Berouti et al. 1979). Cells near the noise
    level or below it sink by up to ``log(floor)``; loud ones barely move. The two views of a
    clip get different strengths, so the noise level they share stops being a cue BYOL can keep.
    Not in BYOL-A, nor in the default pair: on spoken digits it helps short runs and hurts the
    full one (docs/experiments.md). The result is never above the input."""

    search_space = {"strength": Interval(0.0, 1.0), "p": Float(0.0, 1.0)}

    def __init__(self, strength: tuple[float, float] = (0.0, 1.0), floor: float = 0.02, p: float = 1.0):
        super().__init__(p)
        if not 0 <= strength[0] <= strength[1] or not 0 < floor <= 1:
            raise ValueError(f"strength must be [low, high] with 0 <= low <= high, and floor must lie in (0, 1]; "
                             f"got {strength}, {floor}")
        self.strength, self.floor = tuple(strength), floor

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        x32 = x.float()
        level = x32.mean(dim=-1, keepdim=True)
        strength = uniform(n, *self.strength, generator, x.device).view(n, *[1] * (x.dim() - 1))
        gain = (1 - strength * torch.exp(level - x32)).clamp_min(self.floor)
        return (x32 + gain.log()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"strength={self.strength}, floor={self.floor}, p={self.p}"


class _Masking(Augmentation):
    """SpecAugment masking (Park et al. 2019) along one axis: ``count`` bands per sample, each of
    width ~ U{0..max_width} at a random place, set to ``value`` (0, the mean level). torchaudio's
    masks draw from the global RNG; these draw from the view generator, so views are seedable."""

    axis = -1

    def __init__(self, max_width: int = 20, count: int = 1, value: float = 0.0, p: float = 1.0):
        super().__init__(p)
        self.max_width, self.count, self.value = max_width, count, value

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, size = x.shape[0], x.shape[self.axis]
        widest = min(self.max_width, size)
        width = (torch.rand(n, self.count, 1, generator=generator, device=x.device) * (widest + 1)).floor()
        start = (torch.rand(n, self.count, 1, generator=generator, device=x.device) * (size - width + 1)).floor()
        return x.masked_fill(along_axis(bands(start, width, size), x, x.dim() + self.axis), self.value)

    def extra_repr(self) -> str:
        return f"max_width={self.max_width}, count={self.count}, p={self.p}"


@register_augmentation("audio", "time_mask")
class TimeMask(_Masking):
    search_space = {"max_width": Int(2, 40), "count": Int(1, 3), "p": Float(0.0, 1.0)}
    axis = -1


@register_augmentation("audio", "freq_mask")
class FreqMask(_Masking):
    search_space = {"max_width": Int(2, 24), "count": Int(1, 3), "p": Float(0.0, 1.0)}
    axis = -2

    def __init__(self, max_width: int = 8, count: int = 1, value: float = 0.0, p: float = 1.0):
        super().__init__(max_width, count, value, p)
