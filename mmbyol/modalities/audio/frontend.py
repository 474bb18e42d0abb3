"""The log-mel front end (BYOL-A's settings), on the device: waveforms → normalized log-mel
spectrograms ``(B, 1, n_mels, frames)``, and their picture for ``mmbyol views``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from ...errors import DataError
from ...views import save_labelled_grid
from ..base import ROW_LABELS

LOG_EPS = torch.finfo(torch.float32).eps  # BYOL-A's floor under the mel power before the log
NO_STATISTICS = ("Audio batches are normalized with the training set's statistics; pass the info of the training "
                 "data set (or the exported encoder's metadata['info']).")


def collate_waves(inputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(inputs)


class LogMel(nn.Module):
    """``(B, samples)`` waveforms → ``(B, 1, n_mels, frames)`` log mel power, not normalized:
    torchaudio's ``MelSpectrogram`` (power 2) in two parts, its STFT (complex) and mel filterbank,
    except that the power is re² + im², where torchaudio takes ``abs().pow(2)``, a square root and
    a square: the same values to rounding (tested), in less time (docs/performance.md)."""

    def __init__(self, info: dict):
        super().__init__()
        n_fft = info["n_fft"]
        self.spectrogram = torchaudio.transforms.Spectrogram(n_fft=n_fft, win_length=n_fft,
                                                             hop_length=info["hop_length"], power=None)
        self.mel_scale = torchaudio.transforms.MelScale(info["n_mels"], info["sample_rate"], float(info["f_min"]),
                                                        float(info["f_max"]), n_stft=n_fft // 2 + 1)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        s = self.spectrogram  # its STFT called directly: torchaudio's reshapes around it do not export to ONNX
        stft = torch.stft(waves.to(self.mel_scale.fb.device, non_blocking=True).float(), s.n_fft, s.hop_length,
                          s.win_length, s.window, center=s.center, pad_mode=s.pad_mode, normalized=False,
                          onesided=s.onesided, return_complex=True)
        power = stft.real.square() + stft.imag.square()
        return (self.mel_scale(power) + LOG_EPS).log().unsqueeze(1)


class AudioFrontEnd(nn.Module):
    """``prepare_audio`` as a module: waveforms at the run's sample rate → log-mel spectrograms
    normalized with the training set's statistics. Any length."""

    def __init__(self, info: dict):
        super().__init__()
        if "mean" not in info:
            raise DataError(NO_STATISTICS)
        self.log_mel = LogMel(info)
        self.mean, self.std = float(info["mean"]), float(info["std"])

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return (self.log_mel(waves) - self.mean) / self.std


@lru_cache(maxsize=8)
def _log_mel(sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float,
             device: str) -> LogMel:
    """One :class:`LogMel` per set of settings and device: its filterbank is built once, not per batch."""
    return LogMel({"sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels,
                   "f_min": f_min, "f_max": f_max}).to(device)


def log_mel(waves: torch.Tensor, info: dict, device: torch.device) -> torch.Tensor:
    """``(B, samples)`` waveforms → ``(B, 1, n_mels, frames)`` log mel power, not normalized (:class:`LogMel`)."""
    return _log_mel(info["sample_rate"], info["n_fft"], info["hop_length"], info["n_mels"], float(info["f_min"]),
                    float(info["f_max"]), str(device))(waves)


def prepare_audio(waves: torch.Tensor, device: torch.device, info: dict) -> torch.Tensor:
    """Waveforms ``(B, samples)`` → log-mel spectrograms normalized with the training set's statistics."""
    if "mean" not in info:
        raise DataError(NO_STATISTICS)
    return (log_mel(waves, info, device) - info["mean"]) / info["std"]


def save_spectrograms(original: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor, path: Path,
                      info: dict | None = None, labels: Sequence[str] = ROW_LABELS) -> None:
    """Rows, labelled: original / view 1 / view 2 spectrograms (or ``labels``; low frequencies at
    the bottom), each scaled to its own range, enlarged 3× so the picture is legible."""
    rows = []
    for x in (original, view1, view2):
        x = x.float().cpu().flip(-2)
        low, high = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
        rows.append(F.interpolate((x - low) / (high - low).clamp_min(1e-6), scale_factor=3, mode="nearest"))
    save_labelled_grid(rows, path, labels, padding=6)
