"""Audio data: files decoded with soundfile to mono waveforms at one rate, read as fixed-length
clips (a random crop in training, the start in evaluation), and the ``audio-folder`` data set."""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import BinaryIO

import soundfile
import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import Dataset

from ...config import DataConfig
from ...errors import DataError
from ...registry import register_dataset
from ..base import TwoViews, files_under, no_files_error, split_folder
from ..hf import open_labelled
from .frontend import log_mel
from .noise import VIEW_NOISES, clip_noise, mix_at_snr, stable_seed

log = logging.getLogger(__name__)


@dataclass
class AudioDataConfig(DataConfig):
    name: str = "spoken-digits"
    sample_rate: int = 16_000
    clip_seconds: float = 0.95  # a random crop of this length in training, the start in evaluation; short clips padded
    # log-mel front end (BYOL-A's)
    n_fft: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 60.0
    f_max: float = 7800.0
    stats_items: int = 1000  # training items the normalization statistics are computed from
    # spoken-digits only: noise mixed into each clip at an SNR drawn from this range (dB); null = clean
    snr_db: list[float] | None = field(default_factory=lambda: [-5.0, 10.0])
    noise_colour: float = 1.0  # the noise's power spectrum falls as 1/f^colour: 0 white, 1 pink, 2 brown
    # spoken-digits only: in training, give each view of a clip its own noise, drawn afresh (SNR in
    # snr_db, samples from a bank of noise windows) instead of the clip's one fixed noise; the
    # test split and the normalization statistics keep the fixed noise; nothing to do for clean
    # speech (snr_db null). false trains on the set's fixed noise, which learns less (docs/audio.md)
    noise_per_view: bool = True
    # noise_per_view only: the range the views' SNRs are drawn from (dB); null: snr_db, the range
    # that measured best on spoken digits (docs/audio.md)
    view_snr_db: list[float] | None = None
    # spoken-digits only: what a clip's label is, the word (zero..nine; train and test split by
    # accent) or the voice, espeak-ng's voice variant (m1..f4; split by word, so the test words
    # are never heard in training): a task where what the word-task augmentations remove matters
    label: str = "word"
    test_accents: list[str] = field(default_factory=lambda: ["en-gb-scotland", "en-029"])  # label=word
    test_words: list[str] = field(default_factory=lambda: ["seven", "eight", "nine"])  # label=voice
    # hf-dataset only: the columns holding the audio (a datasets Audio feature) and the label
    audio_column: str = "audio"
    label_column: str = "label"
    # esc50 (folds 1-5) and urbansound8k (1-10): the fold held out for testing; the others train
    fold: int = 1


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"}


def load_audio(path: str | Path | BinaryIO, sample_rate: int) -> torch.Tensor:
    """A file (or an open binary file object) decoded with soundfile, mixed down to mono and
    resampled to ``sample_rate``: float32 ``(samples,)``. Raises ``ValueError`` for an empty file
    or one with NaN or infinite samples (a float WAV can hold them; one such clip would turn the
    loss into NaN), soundfile's error for an unreadable one."""
    data, rate = soundfile.read(path if hasattr(path, "read") else str(path), dtype="float32", always_2d=True)
    if data.size == 0:
        raise ValueError("no samples")
    wave = torch.from_numpy(data).mean(dim=1)
    if not torch.isfinite(wave).all():
        raise ValueError("NaN or infinite samples")
    if rate != sample_rate:
        wave = _resampler(rate, sample_rate)(wave)
    return wave


@lru_cache(maxsize=8)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig, new)


class AudioClips(Dataset):
    """Audio files as fixed-length waveforms with labels (-1 when unlabelled).

    Once the training loop has called ``set_epoch``, an item is a crop of ``clip_seconds`` at a
    random place in a longer clip, or a shorter clip at a random offset in a zero window; the draw
    depends on (seed, epoch, index) only, so a resumed run reads the same items. Before that
    (evaluation, statistics, ``mmbyol views``) an item is the clip's first ``clip_seconds``, a shorter
    clip padded at its end, as BYOL-A's evaluation package (EVAR) reads its test clips: recorded
    sounds start near the start of their file, and a centred window cut the start off the words of
    a fifth of the spoken digits (up to 0.55 s of silence follows each). The same on every read.
    With ``snr_db``, each clip is mixed with coloured noise (``noise_colour``) whose SNR and
    samples are fixed by the file's name, so the noisy set is the same on every read. With
    ``noise_per_view`` as well, a training item's input (once ``set_epoch`` has been called) is
    instead a :class:`~mmbyol.modalities.base.TwoViews`: the same crop of the clean clip mixed
    with two independent noises, one per view, whose SNRs and samples depend on (seed, epoch,
    index) only.
    An unreadable or empty file is logged and its item is ``None`` (skipped and counted).
    ``info`` holds the front-end settings and, for a training split (``training``), the normalization
    statistics, computed on first use (evaluating an exported encoder never needs them).
    """

    def __init__(self, files: list[Path], labels: list[int], classes: list[str], cfg: AudioDataConfig,
                 training: bool, root: Path, snr_db: list[float] | None = None, noise_colour: float = 1.0,
                 noise_per_view: bool = False, view_snr_db: list[float] | None = None,
                 groups: list[str] | None = None):
        self.files, self.labels, self.classes, self.groups = files, labels, classes, groups
        self.reported: set[int] = set()  # the unreadable files named in the log so far
        self.sample_rate, self.training, self.root = cfg.sample_rate, training, root
        self.length = round(cfg.clip_seconds * cfg.sample_rate)
        self.snr_db = tuple(snr_db) if snr_db is not None else None
        self.noise_colour, self.noise_per_view = noise_colour, noise_per_view
        self.view_snr_db = tuple(view_snr_db) if view_snr_db is not None else self.snr_db
        self.seed, self.epoch, self.stats_items = torch.initial_seed(), None, cfg.stats_items
        self.front_end = {
            "sample_rate": cfg.sample_rate, "clip_samples": self.length, "n_fft": cfg.n_fft,
            "hop_length": cfg.hop_length, "n_mels": cfg.n_mels, "f_min": cfg.f_min, "f_max": cfg.f_max,
        }

    @cached_property
    def info(self) -> dict:
        if not self.training:
            return dict(self.front_end)
        return {**self.front_end, **compute_statistics(self, self.stats_items)}

    def set_epoch(self, epoch: int | None) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path = self.files[index]
        try:
            wave = self.read(index)
        except (soundfile.LibsndfileError, RuntimeError, ValueError, OSError) as error:
            if index not in self.reported:  # each epoch reads it again; it is counted each time
                self.reported.add(index)
                log.warning("skipping unreadable audio %s: %s", path, error)
            return None
        excess = len(wave) - self.length
        if self.epoch is not None:
            generator = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch, index))
            offset = int(torch.randint(abs(excess) + 1, (1,), generator=generator))
        else:
            offset = 0
        if excess >= 0:
            window = wave[offset : offset + self.length]
        else:
            window = F.pad(wave, (offset, -excess - offset))
        if self.snr_db is not None and self.noise_per_view and self.epoch is not None:
            return self.noisy_views(window, wave.pow(2).mean(), index), self.labels[index]
        if self.snr_db is not None:
            window = mix_at_snr(window, self.noise(path), wave.pow(2).mean(), self.snr(path))
        return window.contiguous(), self.labels[index]

    def read(self, index: int) -> torch.Tensor:
        """The item's whole clip, mono at the data set's sample rate."""
        return load_audio(self.files[index], self.sample_rate)

    def noisy_views(self, window: torch.Tensor, power: torch.Tensor, index: int) -> TwoViews:
        """``window`` mixed with two fresh noises, one per view, at SNRs drawn from ``view_snr_db``
        against the clip's ``power``. Each noise is one of ``VIEW_NOISES`` unit-power windows,
        circularly shifted by a random amount (the windows are periodic, so the shift has no seam)."""
        generator = torch.Generator().manual_seed(stable_seed(self.seed, self.epoch, index, "pv"))
        low, high = self.view_snr_db
        views = []
        for _ in range(2):
            snr = low + (high - low) * float(torch.rand(1, generator=generator))
            which = int(torch.randint(VIEW_NOISES, (1,), generator=generator))
            shift = int(torch.randint(self.length, (1,), generator=generator))
            noise = clip_noise(f"bank{which}", self.length, self.noise_colour)[1].roll(shift)
            views.append(mix_at_snr(window, noise, power, snr))
        return TwoViews(*views)

    def _noise(self, path: Path) -> tuple[float, torch.Tensor]:
        return clip_noise(path.relative_to(self.root).as_posix(), self.length, self.noise_colour)

    def snr(self, path: Path) -> float:
        """The clip's SNR in dB (the speech power is the clip's own, padding aside)."""
        low, high = self.snr_db
        return low + (high - low) * self._noise(path)[0]

    def noise(self, path: Path) -> torch.Tensor:
        """The clip's own unit-power noise over the window, its samples fixed by the clip's name."""
        return self._noise(path)[1]


def compute_statistics(dataset: AudioClips, items: int) -> dict[str, float]:
    """Mean and std of the log-mel values of up to ``items`` clips spread over the data set,
    taken as evaluation takes them (from the start); the normalization every run of this data keeps."""
    epoch, dataset.epoch = dataset.epoch, None
    try:
        step = max(1, len(dataset) // items)
        waves = [item[0] for item in (dataset[i] for i in range(0, len(dataset), step)[:items]) if item is not None]
    finally:
        dataset.epoch = epoch
    if not waves:
        raise DataError(f"None of the audio files under {dataset.root} could be read; see the warnings above.")
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(waves), 256):
        logmel = log_mel(torch.stack(waves[start : start + 256]), dataset.front_end, torch.device("cpu")).double()
        total, total_sq = total + logmel.sum().item(), total_sq + logmel.pow(2).sum().item()
        count += logmel.numel()
    mean = total / count
    return {"mean": mean, "std": math.sqrt(max(total_sq / count - mean**2, 1e-12))}


@register_dataset("audio", "audio-folder")
def audio_folder(cfg: AudioDataConfig, split: str) -> AudioClips:
    """``ROOT/SPLIT/CLASS/*`` (labels from folder names) or, for training, a flat folder of
    unlabelled audio files (WAV, FLAC, OGG, AIFF), any rate and channel count. Files one folder
    deeper, ``CLASS/GROUP/*`` (a speaker, a microphone), are grouped by that folder, which
    the monitor keeps apart."""
    if cfg.root is None:
        raise DataError("audio-folder needs data.root=DIR: a folder with train/CLASS/*.wav and test/CLASS/*.wav "
                        "(or val/CLASS/*.wav), or, to train only, a folder of audio files.")
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"data.root={root} is not a folder.")
    split_dir, groups = split_folder(root, split), None
    if split_dir.is_dir():
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
        files, labels = [], []
        for label, name in enumerate(classes):
            found = files_under(split_dir / name, AUDIO_SUFFIXES)
            files += found
            labels += [label] * len(found)
        base = split_dir
        parts = [f.relative_to(split_dir).parts for f in files]
        if any(len(p) > 2 for p in parts):  # CLASS/GROUP/file: a file directly in CLASS is its own group
            groups = [p[1] if len(p) > 2 else str(Path(*p)) for p in parts]
    elif split == "train":
        classes, base = [], root
        files = files_under(root, AUDIO_SUFFIXES)
        labels = [-1] * len(files)
    else:
        raise DataError(f"{root} has no {split}/ folder: evaluation needs labelled audio in {split_dir}/CLASS/ "
                        "(val/CLASS/ is read in its place).")
    if not files:
        raise no_files_error(base, AUDIO_SUFFIXES, "audio", f"{root}/train/CLASS/* and {root}/test/CLASS/* (labels "
                             "from the folder names), or, to train only, a folder of audio files")
    return AudioClips(files, labels, classes, cfg, split == "train", base, groups=groups)


class ArrowClips(AudioClips):
    """AudioClips whose audio is a ``datasets`` table's column (encoded bytes, or a file path),
    decoded with soundfile; an item's name is ``ROOT[index]``."""

    def __init__(self, table, column: str, labels: list[int], classes: list[str], cfg: AudioDataConfig,
                 training: bool, root: Path):
        from datasets import Audio

        self.table = table.cast_column(column, Audio(decode=False))  # soundfile decodes, not torchcodec
        self.column = column
        super().__init__([Path(f"{root}[{i}]") for i in range(len(table))], labels, classes, cfg, training, root)

    def read(self, index: int) -> torch.Tensor:
        audio = self.table[index][self.column]
        source = io.BytesIO(audio["bytes"]) if audio.get("bytes") else audio.get("path")
        if source is None:
            raise ValueError("neither bytes nor a path")
        return load_audio(source, self.sample_rate)


@register_dataset("audio", "hf-dataset")
def hf_dataset(cfg: AudioDataConfig, split: str) -> ArrowClips:
    """A Hugging Face dataset at ``data.root`` (a ``save_to_disk`` folder or Parquet files,
    ``mmbyol.modalities.hf``): the audio column (``data.audio_column``, an ``Audio`` feature of
    any rate and channel count) and, where there is one, the label column (``data.label_column``;
    a ``ClassLabel`` keeps its names)."""
    table, labels, classes = open_labelled(cfg.root, split, cfg.audio_column, cfg.label_column)
    return ArrowClips(table, cfg.audio_column, labels, classes, cfg, split == "train", Path(cfg.root).expanduser())


def _layout_root(cfg: AudioDataConfig, name: str, expected: str) -> Path:
    if cfg.root is None:
        raise DataError(f"data.name={name} needs data.root=DIR: your copy of the set, holding {expected}.")
    root = Path(cfg.root).expanduser()
    if not (root / expected).exists():
        raise DataError(f"{root} has no {expected}: point data.root at the folder that holds it.")
    return root


def _clips(rows: list[tuple[Path, str, str | None]], classes: list[str], cfg: AudioDataConfig, split: str,
           root: Path) -> AudioClips:
    """``(file, class name, group)`` rows as AudioClips, labels numbered in the order of ``classes``."""
    index = {name: i for i, name in enumerate(classes)}
    groups = [group for _, _, group in rows]
    return AudioClips([file for file, _, _ in rows], [index[name] for _, name, _ in rows], classes, cfg,
                      split == "train", root, groups=groups if all(g is not None for g in groups) else None)


@register_dataset("audio", "speech-commands")
def speech_commands(cfg: AudioDataConfig, split: str) -> AudioClips:
    """Google Speech Commands (v1 or v2) as its archive unpacks: ``ROOT/WORD/SPEAKER_nohash_N.wav``,
    ``validation_list.txt`` and ``testing_list.txt``. The test split is the testing list; training
    is every other clip outside the validation list; ``_background_noise_/`` is not a class. Clips
    are grouped by speaker, the part of the name before ``_nohash_``."""
    root = _layout_root(cfg, "speech-commands", "testing_list.txt")
    listed = {name: set((root / f"{name}_list.txt").read_text().split()) for name in ("validation", "testing")
              if (root / f"{name}_list.txt").exists()}
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    rows = []
    for word in classes:
        for file in sorted((root / word).glob("*.wav")):
            relative = f"{word}/{file.name}"
            test = relative in listed["testing"]
            if test == (split == "test") and relative not in listed.get("validation", set()):
                rows.append((file, word, file.name.split("_nohash_")[0]))
    return _clips(rows, classes, cfg, split, root)


def _folds(cfg: AudioDataConfig, name: str, folds: int) -> None:
    if not 1 <= cfg.fold <= folds:
        raise DataError(f"data.fold={cfg.fold}: {name} has folds 1 to {folds}; data.fold=k tests on fold k and "
                        f"trains on the others (the set's cross-validation runs k = 1 … {folds}).")


@register_dataset("audio", "esc50")
def esc50(cfg: AudioDataConfig, split: str) -> AudioClips:
    """ESC-50 as its repository holds it: ``ROOT/audio/*.wav`` and ``ROOT/meta/esc50.csv``; fold
    ``data.fold`` is the test split, the other four train. Clips cut from one recording
    (``src_file``) are grouped."""
    root = _layout_root(cfg, "esc50", "meta/esc50.csv")
    _folds(cfg, "ESC-50", 5)
    with open(root / "meta" / "esc50.csv", newline="") as file:
        table = list(csv.DictReader(file))
    classes = [name for _, name in sorted({(int(r["target"]), r["category"]) for r in table})]
    rows = [(root / "audio" / r["filename"], r["category"], r["src_file"]) for r in table
            if (int(r["fold"]) == cfg.fold) == (split == "test")]
    return _clips(rows, classes, cfg, split, root)


@register_dataset("audio", "urbansound8k")
def urbansound8k(cfg: AudioDataConfig, split: str) -> AudioClips:
    """UrbanSound8K as it unpacks: ``ROOT/audio/foldK/*.wav`` and ``ROOT/metadata/UrbanSound8K.csv``;
    fold ``data.fold`` is the test split, the other nine train. Slices of one Freesound recording
    (``fsID``) are grouped."""
    root = _layout_root(cfg, "urbansound8k", "metadata/UrbanSound8K.csv")
    _folds(cfg, "UrbanSound8K", 10)
    with open(root / "metadata" / "UrbanSound8K.csv", newline="") as file:
        table = list(csv.DictReader(file))
    classes = [name for _, name in sorted({(int(r["classID"]), r["class"]) for r in table})]
    rows = [(root / "audio" / f"fold{r['fold']}" / r["slice_file_name"], r["class"], r["fsID"]) for r in table
            if (int(r["fold"]) == cfg.fold) == (split == "test")]
    return _clips(rows, classes, cfg, split, root)
