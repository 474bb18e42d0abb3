"""Audio as log-mel spectrograms, after BYOL-A (Niizumi et al. 2021; v2 2023): decoding, the
spoken-digits and audio-folder data sets, the log-mel front end, BYOL-A's augmentations as
batched on-device ops, and the BYOL-A CNN.

The data path: a data set item is a fixed-length mono waveform at ``data.sample_rate``
(``data``, ``spoken_digits``; for spoken digits in training, one waveform per view, each under a
noise of its own); ``prepare`` turns a batch of them into log-mel spectrograms
``(B, 1, n_mels, frames)`` on the device, normalized with the training set's mean and std
(computed once, kept in the run's ``info``; ``frontend``); the augmentations act on that, as
BYOL-A's do (``augment``); the encoder is BYOL-A's CNN (``encoders``). docs/audio.md has the
defaults and why.
"""

from __future__ import annotations

from ...registry import register_modality
from ..base import Modality
from . import augment, data, encoders, spoken_digits  # noqa: F401  (each registers its parts)
from .data import AudioDataConfig
from .frontend import AudioFrontEnd, collate_waves, prepare_audio, save_spectrograms

register_modality(Modality(
    name="audio",
    data_config=AudioDataConfig,
    collate=collate_waves,
    prepare=prepare_audio,
    render_views=save_spectrograms,
    front_end=AudioFrontEnd,
    axes={"channel": 1, "frequency": 2, "time": 3},
    channels_last=True,  # the CNN's maps of 32-64 channels convolve faster so (docs/performance.md)
    description="audio files as log-mel spectrograms (BYOL-A)",
))
