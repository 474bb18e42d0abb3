"""Coloured noise for the noisy spoken digits: each clip's own fixed noise, a bank of noise
windows for a fresh noise per view, and mixing at a signal-to-noise ratio."""

from __future__ import annotations

import zlib
from functools import lru_cache

import torch


def stable_seed(*parts) -> int:
    """A seed from strings and numbers that is the same in every process and Python run."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def coloured_noise(n: int, exponent: float, generator: torch.Generator) -> torch.Tensor:
    """Unit-power noise whose power spectrum falls as 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spectrum = torch.fft.rfft(torch.randn(n, generator=generator))
    frequency = torch.fft.rfftfreq(n)
    frequency[0] = frequency[1]
    noise = torch.fft.irfft(spectrum * frequency.pow(-exponent / 2), n=n)
    return noise / noise.pow(2).mean().sqrt().clamp_min(1e-12)


def mix_at_snr(window: torch.Tensor, noise: torch.Tensor, power: torch.Tensor, snr: float) -> torch.Tensor:
    """``window`` plus unit-power ``noise`` scaled to ``snr`` dB below ``power``, the power of
    the whole clip (so trailing silence counts, as it does for every clip of the set)."""
    return window + noise * (power / 10 ** (snr / 10)).sqrt()


VIEW_NOISES = 4096  # noise windows the views of data.noise_per_view draw from (245 MB at 0.95 s)


@lru_cache(maxsize=16384)
def clip_noise(name: str, length: int, colour: float) -> tuple[float, torch.Tensor]:
    """The noise of the clip named ``name`` (its path in the data set): a uniform draw in [0, 1)
    that places its SNR in the range, and ``length`` samples of unit-power coloured noise, both
    fixed by the name. Making the noise (an FFT pair) costs three times as much as decoding the
    clip, so it is kept: 60 KB per 0.95 s window, 600 MB for all of spoken-digits, shared by every
    data set of the process (training, evaluation, a benchmark's many runs)."""
    generator = torch.Generator().manual_seed(stable_seed("noise", name))
    fraction = float(torch.rand(1, generator=generator))
    return fraction, coloured_noise(length, colour, generator)
