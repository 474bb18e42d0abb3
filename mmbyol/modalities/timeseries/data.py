"""Time-series data: the UCR/UEA archive's ``.ts`` format, the ``ucr`` data set (the sets a
time-series package ships in its wheel, or the user's copy of the archive) and ``array-file`` for
the user's own arrays. Every series becomes a float tensor ``(channels, length)`` at one length.

Series of different lengths are resampled (linear interpolation) to ``data.length``, by default
the training split's longest. Padding with a mask would keep the sampling rate, but then every
augmentation and encoder would have to carry the mask; resampling keeps the batch a plain tensor
that the generic augmentations act on, and each series' whole course, at the cost of its speed
(which no development set's classes depend on). Missing values (``?``/NaN) at the end of a series
shorten it; others become the channel's mean once normalized. With ``data.window`` each series is
cut into windows of that many steps, the items of the split, each labelled and grouped by its series.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
import zipfile
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ...config import DataConfig
from ...errors import ConfigError, DataError, did_you_mean
from ...registry import register_dataset

log = logging.getLogger(__name__)

# the packages whose wheels carry UCR/UEA sets as NAME/NAME_{TRAIN,TEST}.ts, in the order searched
UCR_PACKAGES = ("aeon", "sktime")


@dataclass
class TimeSeriesDataConfig(DataConfig):
    name: str = "ucr"
    set: str | None = None  # ucr: the set's name, e.g. JapaneseVowels (a name it lacks lists those it has)
    # array-file: the user's files (.npy .npz .pt .csv .ts), and optionally label files for .npy
    train: str | None = None
    test: str | None = None
    train_labels: str | None = None
    test_labels: str | None = None
    # array-file .csv/.tsv: the labels' column, by the header's name or by position (0: the first); the rest are steps
    label_column: str | int = "label"
    # array-file .npy/.npz/.pt: true when 3-D arrays are (items, steps, channels), as Keras and many sensor
    # pipelines store them; null reads (items, channels, steps), aeon's and sktime's order, and warns where
    # that gives more channels than steps; false reads the same without the warning
    channels_last: bool | None = None
    length: int | None = None  # every series resampled to this many steps; null: the training split's longest
    # long recordings as items: each series cut into windows of this many steps (every split, labels and all)
    window: int | None = None
    stride: int | None = None  # steps from one window's start to the next; null: the window (no overlap)


# ------------------------------------------------------------------------------ the .ts format


@dataclass
class TSFile:
    """A ``.ts`` file read: one ``(channels, length)`` float array per series (lengths may differ;
    ``nan`` for missing values), the labels as written (``None`` when unlabelled), and the class
    names the header declares."""

    series: list[np.ndarray]
    labels: list[str] | None
    classes: list[str]


def read_ts(path: str | Path) -> TSFile:
    """The sktime/aeon ``.ts`` format: ``@`` header lines (``@classLabel true a b c``,
    ``@dimensions``, ``@missing`` …; ``#`` or ``%`` begins a comment line), then after ``@data``
    one series per line, its channels separated by ``:``, values by ``,``, ``?`` for a missing
    value, and the class label last."""
    path = Path(path)
    labelled, classes, dimensions, series, labels = False, [], None, [], []
    in_data = False
    with path.open(encoding="utf-8-sig") as lines:
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(("#", "%")):  # '%': ARFF's comments, kept by some of the archive's files
                continue
            if not in_data:
                words = line.split()
                key = words[0].lower()
                if key == "@data":
                    in_data = True
                elif key == "@classlabel":
                    labelled = len(words) > 1 and words[1].lower() == "true"
                    classes = words[2:] if labelled else []
                elif key == "@timestamps" and len(words) > 1 and words[1].lower() == "true":
                    raise DataError(f"{path}: series with time stamps are not supported; write the values only "
                                    f"(@timeStamps false).")
                elif key == "@targetlabel" and len(words) > 1 and words[1].lower() == "true":
                    raise DataError(f"{path} holds a regression target (@targetLabel); mmbyol reads class labels.")
                elif key == "@dimensions" and len(words) > 1:
                    dimensions = int(words[1])
                elif not key.startswith("@"):
                    raise DataError(f"{path}:{number}: expected a header line (@...) or @data, got {line[:40]!r}.")
                continue
            fields = line.split(":")
            if labelled:
                labels.append(fields.pop().strip())
            try:
                channels = [np.array(f.replace("?", "nan").split(","), dtype=np.float32) for f in fields]
            except ValueError as error:
                raise DataError(f"{path}:{number}: a value is not a number ({error}).") from error
            if dimensions is not None and len(channels) != dimensions:
                raise DataError(f"{path}:{number}: {len(channels)} channels, the header says @dimensions {dimensions}.")
            length = max(len(c) for c in channels)
            series.append(np.stack([np.pad(c, (0, length - len(c)), constant_values=np.nan) for c in channels]))
    if not in_data:
        raise DataError(f"{path} has no @data line: is it a .ts file?")
    return TSFile(series, labels if labelled else None, classes)


# ------------------------------------------------------------------------------ the data set


def resample(series: torch.Tensor, length: int) -> torch.Tensor:
    """``(batch, channels, steps)`` → ``(batch, channels, length)``: each series without the steps at
    its end where every channel is missing (NaN, how shorter series are padded), then linearly
    interpolated to ``length`` with its first and last steps kept (a series of one step repeats
    it). A series already ``length`` steps long comes back as it was. The data sets and the front
    end both resample with it, so raw series given to a trained encoder meet what it trained on."""
    batch, channels, steps = series.shape
    present = ~torch.isnan(series).all(dim=1)
    n = (present * torch.arange(1, steps + 1, device=series.device)).amax(dim=1).clamp(min=1)
    position = torch.arange(length, device=series.device, dtype=torch.float32)[None] * (
        (n - 1).float() / max(length - 1, 1))[:, None]
    left = position.floor().long().clamp(max=steps - 1)
    right = torch.minimum(left + 1, (n - 1)[:, None])
    weight = (position - left)[:, None, :]

    def at(index: torch.Tensor) -> torch.Tensor:
        return series.gather(2, index[:, None, :].expand(-1, channels, -1))

    # where a position falls on a step, that step alone: a missing neighbour does not spread to it
    return torch.where(weight == 0, at(left), at(left) * (1 - weight) + at(right) * weight)


def series_length(series: np.ndarray) -> int:
    present = (~np.isnan(series)).any(axis=0).nonzero()[0]
    return int(present[-1]) + 1 if len(present) else 0


def resampled(series: list[np.ndarray], length: int) -> torch.Tensor:
    """``(items, channels, length)``: each series resampled to ``length`` steps, those of one shape in
    one call (a set of equal lengths, or windows, in one)."""
    if not series:
        return torch.empty(0, 1, length)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, one in enumerate(series):
        by_shape.setdefault(one.shape, []).append(index)
    out: list[torch.Tensor] = [torch.empty(0)] * len(series)
    for indices in by_shape.values():
        batch = resample(torch.from_numpy(np.stack([series[i] for i in indices]).astype(np.float32, copy=False)),
                         length)
        for row, index in zip(batch, indices):
            out[index] = row
    return torch.stack(out)


class SeriesSet(Dataset):
    """Series as ``(channels, length)`` float tensors with labels (-1 when unlabelled). ``info``
    holds the shape and, for a training split, each channel's mean and std over its values
    (missing ones aside), which ``prepare`` normalizes with; the run keeps them."""

    def __init__(self, series: list[np.ndarray], labels: list[int], classes: list[str], length: int, training: bool,
                 source: str, groups: list[int] | None = None, window: int | None = None,
                 origins: list[Any] | None = None):
        empty = [i for i, s in enumerate(series) if series_length(s) == 0]
        infinite = [i for i, s in enumerate(series) if np.isinf(s).any()]  # an overflow is no value to learn from
        if empty or infinite:
            log.warning("skipping %s in %s", ", ".join(f"{len(found)} series with {what}" for found, what in
                                                      ((empty, "no values"), (infinite, "infinite values")) if found),
                        source)
        kept = sorted(set(range(len(series))) - set(empty) - set(infinite))
        self.x = resampled([series[i] for i in kept], length)
        self.labels = [labels[i] for i in kept]
        # windows of one series share its group, so the monitor's kNN asks about other series, as a test does
        self.groups = None if groups is None else [groups[i] for i in kept]
        # a window's whole example, for evaluation over whole series: its series, or its stretch of one label
        self.origins = None if origins is None else [origins[i] for i in kept]
        self.classes, self.training, self.source, self.window = classes, training, source, window

    @cached_property
    def info(self) -> dict:
        info = {"channels": self.x.shape[1], "length": self.x.shape[2]}
        if self.window:
            info["window"] = self.window  # the encoder takes windows, not whole recordings
        if self.training:
            values = self.x.transpose(0, 1).reshape(self.x.shape[1], -1).double()
            mean = values.nanmean(dim=1)
            std = (values - mean[:, None]).pow(2).nanmean(dim=1).sqrt()
            info["mean"] = torch.nan_to_num(mean).tolist()
            info["std"] = [s if math.isfinite(s) and s > 1e-8 else 1.0 for s in std.tolist()]
        return info

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        return self.x[index], self.labels[index]


def label_indices(labels: list[str] | None, classes: list[str], where: str) -> list[int]:
    if labels is None:
        return []
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise DataError(f"{where}: label {unknown[0]!r} is not a class of the training split ({', '.join(classes)}).")
    index = {name: i for i, name in enumerate(classes)}
    return [index[label] for label in labels]


def class_names(labels: list[str]) -> list[str]:
    """Distinct labels, in numeric order when they are all numbers, else in text order."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


def cut_windows(series: list[np.ndarray], window: int, stride: int,
                source: str) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Each series' windows of ``window`` steps, one starting every ``stride`` steps (the steps after
    the last whole window left out), and for each window the index of its series and its first
    step. A series shorter than the window gives none; the log counts them."""
    windows, origin, starts, short, longest = [], [], [], 0, 0
    for index, one in enumerate(series):
        steps = series_length(one)
        short, longest = short + (steps < window), max(longest, steps)
        for start in range(0, steps - window + 1, stride):
            windows.append(one[:, start : start + window])
            origin.append(index)
            starts.append(start)
    if series and not windows:
        raise DataError(f"{source}: no series is as long as data.window={window} steps (the longest has {longest}). "
                        f"Set data.window={longest} or less.")
    if short:
        log.warning("%s: %d of %d series are shorter than data.window=%d steps and give no window.", source, short,
                    len(series), window)
    return windows, origin, starts


def window_labels(step_labels: list[np.ndarray], origin: list[int], starts: list[int], window: int,
                  source: str) -> tuple[list[int], list[str], list[tuple[int, int]]]:
    """For windows of series labelled step by step: the windows whose steps all carry one label
    (the others, across a change of label, are left out and counted in the log), their labels, and
    for each the stretch of one label it lies in, ``(series, stretch)``: the whole example it was
    cut from."""
    stretches = [np.concatenate([[0], np.cumsum(row[1:] != row[:-1])]) for row in step_labels]
    kept = [i for i, (one, start) in enumerate(zip(origin, starts))
            if stretches[one][start] == stretches[one][start + window - 1]]
    if len(kept) < len(origin):
        log.warning("%s: %d of %d windows span a change of label and are left out.", source,
                    len(origin) - len(kept), len(origin))
    labels = [str(step_labels[origin[i]][starts[i]].item()) for i in kept]
    return kept, labels, [(origin[i], int(stretches[origin[i]][starts[i]])) for i in kept]


def build(train: tuple[list[np.ndarray], list | None], split_data: tuple[list[np.ndarray], list | None],
          declared: list[str], cfg: TimeSeriesDataConfig, split: str, source: str) -> SeriesSet:
    """A split's :class:`SeriesSet`, its classes and length taken from the training split (or its
    windows, with ``data.window``). Labels are one per series, or one per step (arrays), which
    label the windows."""
    train_series, train_labels = train
    series, labels = split_data
    if train_labels and not isinstance(train_labels[0], str):  # one per step
        train_labels = [str(v.item()) for row, one in zip(train_labels, train_series)
                        for v in np.unique(row[: series_length(one)])]
    classes = declared or (class_names(train_labels) if train_labels else [])
    if split == "train" and not cfg.window and len(train_labels or []) > 1 and len(classes) == len(train_labels):
        log.warning("%s: each of the %d training series has a label of its own, so no class has two members for "
                    "the monitor's kNN or a probe to learn from. Labels from data.train_labels are one a line (or a "
                    ".npy of one a series): is that the labels file?", source, len(train_labels))
    if labels is not None and not classes:
        labels = None  # a labelled test split for an unlabelled training split: nothing to probe with
    groups = origins = None
    if cfg.stride and not cfg.window:
        raise ConfigError(f"data.stride={cfg.stride} needs data.window=STEPS: the stride is how far apart windows "
                          f"start.")
    per_step = bool(labels) and not isinstance(labels[0], str)
    if per_step and not cfg.window:
        raise DataError(f"{source}: the labels are one per step, {len(labels[0])} a series. Cut the series into "
                        f"windows with data.window=STEPS: each window takes the label of its steps.")
    if cfg.window:
        series, groups, starts = cut_windows(series, cfg.window, cfg.stride or cfg.window, source)
        if per_step:
            kept, labels, origins = window_labels(labels, groups, starts, cfg.window, source)
            series, groups = [series[i] for i in kept], [groups[i] for i in kept]
        else:
            labels, origins = None if labels is None else [labels[i] for i in groups], groups
    elif split == "train" and len(series) < cfg.batch_size:  # said beside the error the run stops with
        log.warning("%s: %d series, fewer than a batch of %d. If they are long recordings, data.window=STEPS cuts "
                    "each into windows, the items to train on.", source, len(series), cfg.batch_size)
    length = cfg.length or cfg.window or max((series_length(s) for s in train_series), default=1)
    indices = label_indices(labels, classes, source) if labels is not None else [-1] * len(series)
    return SeriesSet(series, indices, classes, length, split == "train", source, groups, cfg.window, origins)


# ------------------------------------------------------------------------------ ucr


def packaged_ucr_folders() -> list[Path]:
    """The data folders of the installed packages that ship UCR/UEA sets (found without importing
    them: reading a file needs none of their code)."""
    folders = []
    for package in UCR_PACKAGES:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(location) / "datasets" / "data"
            if folder.is_dir():
                folders.append(folder)
    return folders


def packages_searched() -> str:
    """Where the sets were looked for, in words: the installed packages that may ship them, and the
    ones not installed, whose sets are then missing."""
    installed = [package for package in UCR_PACKAGES if importlib.util.find_spec(package)]
    missing = [package for package in UCR_PACKAGES if package not in installed]
    more = f"; {' and '.join(missing)} ship{'s' * (len(missing) == 1)} others: pip install {' '.join(missing)}"
    return f"the installed packages ({', '.join(installed) or 'none'}{more if missing else ''})"


def ucr_sets(root: str | None = None) -> dict[str, Path]:
    """Set name → its training file, ``NAME/NAME_TRAIN.ts`` (or ``.tsv``, as the 2018 univariate
    archive has them) beside ``NAME_TEST`` of the same kind: under ``root``, or in the installed
    packages. Where a set has both, the ``.ts`` files."""
    folders = [Path(root).expanduser()] if root else packaged_ucr_folders()
    found: dict[str, Path] = {}
    for folder in folders:
        for suffix in (".ts", ".tsv"):
            for train in sorted(folder.glob(f"*/*_TRAIN{suffix}")):
                name = train.name[: -len(f"_TRAIN{suffix}")]
                if train.parent.name == name and split_file(train, "test").is_file():
                    found.setdefault(name, train)
    return dict(sorted(found.items()))


def split_file(train: Path, split: str) -> Path:
    """The file of ``split`` beside an archive set's training file."""
    return train.with_name(train.name.replace("_TRAIN.", f"_{split.upper()}."))


def _holds_a_regression_target(path: Path) -> bool:
    """Whether a ``.ts`` file's header declares ``@targetLabel true`` (read up to ``@data`` only)."""
    if path.suffix.lower() != ".ts":
        return False
    with path.open(encoding="utf-8-sig", errors="replace") as lines:
        for line in lines:
            words = line.lower().split()
            if words[:1] == ["@data"]:
                return False
            if words[:2] == ["@targetlabel", "true"]:
                return True
    return False


@lru_cache(maxsize=16)
def _read_cached(path: str, mtime: float) -> TSFile:
    return read_archive_file(Path(path))


def read_archive_cached(path: Path) -> TSFile:
    return _read_cached(str(path), path.stat().st_mtime)


@register_dataset("timeseries", "ucr")
def ucr(cfg: TimeSeriesDataConfig, split: str) -> SeriesSet:
    """A UCR/UEA classification set by name (``data.set``): from ``data.root`` (a copy of the
    archive, ``ROOT/NAME/NAME_TRAIN.ts``, or ``.tsv`` as in the 2018 univariate archive) or from an
    installed package that ships it (aeon, sktime: ``pip install aeon``). Train and test are the
    archive's own split."""
    sets = ucr_sets(cfg.root)
    where = f"data.root={cfg.root}" if cfg.root else packages_searched()
    if not sets:
        raise DataError(f"No UCR/UEA sets found in {where}. Install a package that ships some "
                        f"(`pip install aeon`, as mmbyol's `timeseries` extra does), or point data.root at a copy "
                        f"of the archive (ROOT/NAME/NAME_TRAIN.ts and NAME_TEST.ts, or .tsv).")
    if cfg.set not in sets:
        regression = [name for name, path in sets.items() if _holds_a_regression_target(path)]
        readable = [n for n in sets if n not in regression]
        what = ("needs data.set=NAME." if cfg.set is None
                else f"has no set {cfg.set!r} in {where}.{did_you_mean(str(cfg.set), readable)}")
        also = f" (regression sets, which it cannot read: {', '.join(regression)})" if regression else ""
        raise DataError(f"ucr {what} Available: {', '.join(readable) or 'none'}{also}.")
    path = sets[cfg.set]
    train = read_archive_cached(path)
    data = train if split == "train" else read_archive_cached(split_file(path, split))
    return build((train.series, train.labels), (data.series, data.labels), train.classes, cfg, split,
                 str(split_file(path, split)))


# ------------------------------------------------------------------------------ array-file


ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".csv", ".tsv", ".ts")
X_KEYS, Y_KEYS = ("x", "X", "data", "series"), ("y", "Y", "label", "labels", "target")


def _as_series(array, path: Path, channels_last: bool | None) -> list[np.ndarray]:
    try:
        array = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: the series are not numbers ({error}).") from error
    if array.ndim == 2:  # (items, steps): one channel
        return list(array[:, None, :])
    if array.ndim != 3:
        raise DataError(f"{path}: expected an array of (items, steps) or (items, channels, steps), got shape "
                        f"{array.shape}.")
    return _oriented(list(array), path, channels_last)


def _oriented(stored: list[np.ndarray], path: Path, channels_last: bool | None) -> list[np.ndarray]:
    """Multichannel series as ``(channels, steps)``: as stored, or transposed where
    ``data.channels_last`` says they are ``(steps, channels)``. Unsaid, series that all have more
    channels than steps are warned of, since a ``(steps, channels)`` array is then the likelier."""
    if channels_last:
        return [s.T for s in stored]
    if channels_last is None and stored and all(s.shape[0] > s.shape[1] for s in stored):
        log.warning("%s: read as series of %d channels × %d steps, (items, channels, steps) as aeon and sktime "
                    "store them. If the array is (items, steps, channels), set data.channels_last=true; "
                    "data.channels_last=false keeps this reading without this warning.", path, *stored[0].shape)
    return stored


def _tensor_series(x, path: Path, channels_last: bool | None) -> list[np.ndarray]:
    """A ``.pt`` file's series: one tensor ``(items, [channels,] steps)``, or a list of tensors
    ``([channels,] steps)``, one per series, of any lengths."""
    if isinstance(x, torch.Tensor):
        return _as_series(x.float().numpy(), path, channels_last)
    if isinstance(x, (tuple, list)) and x and all(isinstance(t, torch.Tensor) and t.dim() in (1, 2) for t in x):
        arrays = [t.float().numpy() for t in x]
        if all(a.ndim == 2 for a in arrays):
            return _oriented(arrays, path, channels_last)
        return [a if a.ndim == 2 else a[None] for a in arrays]
    raise DataError(f"{path}: expected a tensor (items, [channels,] steps), a list of ([channels,] steps) tensors, "
                    f"(x, y), or a dict with x and y.")


def _pick(mapping, keys: tuple[str, ...]):
    return next((mapping[k] for k in keys if k in mapping), None)


def _label_list(y, path: Path, steps: int | None = None) -> list[str] | list[np.ndarray]:
    """Labels as text, one per series (a column ``(n, 1)`` too), or, for an array ``(series,
    steps)`` as long as the series, one per step: a row of labels for each series (a stream
    annotated as it goes, cut into windows with ``data.window``). Other rows of several values —
    one-hot codes, scores — are refused with how to make labels of them."""
    array = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
    if array.ndim == 2 and steps is not None and array.shape[1] == steps > 1:
        return list(array)
    if array.ndim > 1 and math.prod(array.shape[1:]) > 1:
        raise DataError(f"{path}: the labels are an array of shape {array.shape}, neither one label per series nor "
                        f"one per step{f' ({steps} steps)' if steps else ''}. Save a class index or name per series "
                        f"(one-hot rows: y.argmax(axis=1)).")
    return [str(v) for v in array.reshape(-1).tolist()]


def read_labels(path: Path, steps: int | None = None) -> list[str] | list[np.ndarray]:
    if not path.is_file():
        raise DataError(f"Label file {path} does not exist.")
    if path.suffix == ".npy":
        return _label_list(_load_numpy(path), path, steps)
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _load_numpy(path: Path):
    """``np.load`` without pickles (a ``.npz`` read whole, as a dict), its failures said as what to do."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return dict(loaded)
        return loaded
    except ValueError as error:
        if "Object arrays" in str(error):  # most often series of different lengths
            raise DataError(f"{path} holds an array of Python objects, which mmbyol does not unpickle. Save "
                            f"numbers: one float array, shorter series padded with NaN at the end (they are "
                            f"read as shorter), or a .ts file.") from error
        raise DataError(f"{path} is not a NumPy file (np.save or np.savez writes one): numpy reads it only "
                        f"by unpickling, which mmbyol does not do.") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a NumPy file numpy can read ({error}).") from error


def read_array_file(path: Path, labels_path: Path | None, label_column: str | int,
                    channels_last: bool | None = None) -> tuple[list[np.ndarray], list[str] | None]:
    """Series and labels (``None`` when unlabelled) from one of the ``array-file`` formats."""
    if not path.is_file():
        raise DataError(f"{path} does not exist.")
    suffix = path.suffix.lower()
    labels = None
    if suffix == ".ts":
        ts = read_ts(path)
        series, labels = ts.series, ts.labels
    elif suffix == ".npy":
        series = _as_series(_load_numpy(path), path, channels_last)
    elif suffix == ".npz":
        arrays = _load_numpy(path)
        x = _pick(arrays, X_KEYS)
        if x is None:
            raise DataError(f"{path} holds {', '.join(arrays)}; name the series array one of {', '.join(X_KEYS)}.")
        series, y = _as_series(x, path, channels_last), _pick(arrays, Y_KEYS)
        labels = None if y is None else _label_list(y, path, _steps(series))
    elif suffix == ".pt":
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a broken zip, or objects the weights-only unpickler refuses
            first = str(error).split(". ")[0].splitlines()[0] if str(error) else ""
            raise DataError(f"{path} is not a file torch.load reads with weights_only=True ({type(error).__name__}: "
                            f"{first}). Save tensors: torch.save({{'x': x, 'y': y}}, path).") from error
        if isinstance(loaded, dict):
            x, y = _pick(loaded, X_KEYS), _pick(loaded, Y_KEYS)
        elif isinstance(loaded, (tuple, list)) and len(loaded) == 2 and (
                isinstance(loaded[0], (tuple, list)) or getattr(loaded[0], "ndim", 0) >= 2):
            x, y = loaded  # (x, y)
        else:
            x, y = loaded, None  # a tensor, or a list of series
        series = _tensor_series(x, path, channels_last)
        labels = None if y is None else _label_list(y, path, _steps(series))
    elif suffix in (".csv", ".tsv"):
        series, labels = read_delimited(path, label_column)
    else:
        raise DataError(f"{path}: array-file reads {', '.join(ARRAY_SUFFIXES)}; convert the data to one of them.")
    if labels_path is not None:
        labels = read_labels(labels_path, _steps(series))
    if labels is not None and len(labels) != len(series):
        raise DataError(f"{path}: {len(series)} series but {len(labels)} labels.")
    return series, labels


def _steps(series: list[np.ndarray]) -> int | None:
    """The steps every series is stored with (an array's width, NaN padding included), if one."""
    widths = {one.shape[1] for one in series}
    return widths.pop() if len(widths) == 1 else None


def read_delimited(path: Path, label_column: str | int) -> tuple[list[np.ndarray], list[str] | None]:
    """One univariate series per row of a ``.csv`` (commas) or ``.tsv`` (tabs) file. When the first
    row is not all numbers it is a header, which may name the label column; ``label_column`` as a
    number is the column's position either way (0: the first, as the UCR archive's ``.tsv`` files
    hold their labels). Empty cells, ``?`` and ``NaN`` are missing values."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as file:
        rows = [row for row in csv.reader(file, delimiter=delimiter) if row]
    if not rows:
        return [], None
    label_at = None
    if isinstance(label_column, int):
        width = len(rows[0])
        if not -width <= label_column < width:
            raise DataError(f"{path}: data.label_column={label_column}, but the rows have {width} columns.")
        label_at = label_column % width
    header = None
    try:  # the labels aside, a first row that is not all numbers is a header
        [float(v) for i, v in enumerate(rows[0]) if i != label_at and v.strip() not in ("", "?")]
    except ValueError:
        header, rows = rows[0], rows[1:]
    if not isinstance(label_column, int):
        label_at = header.index(label_column) if header and label_column in header else None
        if label_at is None:
            log.info("%s: no column %s, so no labels: every column is a step. Labels in a column without a "
                     "header: data.label_column=POSITION (0 for the first, as the UCR archive's .tsv files).",
                     path, "named " + repr(label_column) if header else "header")
    labels = [] if label_at is not None else None
    series = []
    for number, row in enumerate(rows, 2 if header else 1):
        if labels is not None:
            if label_at >= len(row) or not row[label_at].strip():
                raise DataError(f"{path}:{number}: no label in column {label_at} (counting from 0).")
            labels.append(row[label_at].strip())
        values = [v for i, v in enumerate(row) if i != label_at]
        try:
            series.append(np.array([float(v) if v.strip() not in ("", "?") else np.nan for v in values],
                                   dtype=np.float32)[None])
        except ValueError as error:
            raise DataError(f"{path}:{number}: a value is not a number ({error}).") from error
    return series, labels


def read_archive_file(path: Path) -> TSFile:
    """A split of an archive set: the ``.ts`` format, or the 2018 univariate archive's ``.tsv``
    (the label first, then the values; shorter series padded with NaN)."""
    if path.suffix.lower() == ".tsv":
        series, labels = read_delimited(path, 0)
        return TSFile(series, labels, [])
    return read_ts(path)


@register_dataset("timeseries", "array-file")
def array_file(cfg: TimeSeriesDataConfig, split: str) -> SeriesSet:
    """The user's series in ``data.train`` and ``data.test``: ``.npy`` (items × steps, or items ×
    channels × steps; labels in ``data.train_labels``/``data.test_labels``, .npy or one per line),
    ``.npz`` and ``.pt`` (x and y), ``.csv`` (one series per row, a ``label`` column in the header),
    ``.ts``."""
    if cfg.train is None:
        raise DataError("array-file needs data.train=FILE (and data.test=FILE to evaluate): .npy, .npz, .pt, .csv "
                        "or .ts; labels inside the file, or data.train_labels=FILE for .npy.")
    if split != "train" and cfg.test is None:
        raise DataError(f"array-file has no {split} split: set data.test=FILE (labelled series to evaluate on).")
    def label_file(key: str) -> Path | None:
        return Path(getattr(cfg, key)).expanduser() if getattr(cfg, key) else None

    for key in ("test", "test_labels"):  # a wrong path is said before training, not when evaluating after it
        if getattr(cfg, key) and not Path(getattr(cfg, key)).expanduser().is_file():
            raise DataError(f"data.{key}={getattr(cfg, key)} does not exist (evaluation reads it). Correct the "
                            f"path, or leave data.{key} unset to train without it.")
    train = read_array_file(Path(cfg.train).expanduser(), label_file("train_labels"), cfg.label_column,
                            cfg.channels_last)
    data = train if split == "train" else read_array_file(Path(cfg.test).expanduser(), label_file("test_labels"),
                                                          cfg.label_column, cfg.channels_last)
    if split != "train" and data[1] is None:
        raise DataError(f"data.test={cfg.test} has no labels: evaluation needs them (inside the file, or "
                        f"data.test_labels=FILE).")
    return build(train, data, [], cfg, split, str(cfg.train if split == "train" else cfg.test))
