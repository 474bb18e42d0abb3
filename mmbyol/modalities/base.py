"""The contracts between the engine and a modality, in one place: the :class:`Modality` object,
the data set protocol (:class:`DataSet`, with :class:`TwoViews` for data sets that make an input
per view), and the encoder builder. A modality supplies parts; nothing here knows any modality."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..augment import check_kwargs
from ..errors import ConfigError, DataError
from ..registry import ENCODERS, MODALITIES

ROW_LABELS = ("original", "view 1", "view 2")  # what render_views names its three rows by default


@dataclass(frozen=True)
class Modality:
    """What a modality supplies besides its registered encoders, augmentations and data sets.

    - ``data_config``: dataclass schema of the ``data`` config section (extends ``DataConfig``);
    - ``collate(inputs)``: a list of data set inputs → one batch input of fixed shape;
    - ``prepare(batch, device, info)``: deterministic preprocessing of one collated batch on the
      device (uint8 → float, waveform → normalized log-mel, strings → token ids …), before the
      augmentations; ``info`` is the training data set's (saved with the run and in the exported
      encoder's ``metadata["info"]``);
    - ``render_views(original, view1, view2, path, info)``: a picture (or text) of view pairs, the
      prepared batch and its two views, written to ``path`` (``mmbyol views``; default file name
      ``views_file``). A ``labels`` keyword, if it takes one, names the three rows (``ROW_LABELS``
      by default; ``mmbyol views`` draws multi-crop's local views with it, which may be shorter);
    - ``axes``: the named axes of the prepared batch, dim by name (``{"channel": 1, "time": 2}``),
      for a batch that is one float tensor; the generic augmentations (``mmbyol.generic``) are
      offered to such a modality and find the axis they act on by name. ``None`` (a batch of
      token ids, a mapping): they are not offered;
    - ``channels_last``: use the channels-last memory format (image-like batches; faster
      convolutions on CUDA and on CPU);
    - ``front_end(info)``: ``prepare`` as a module, from a collated batch to the encoder's input on
      the module's device: ``load_encoder(…, raw_input=True)`` puts it before the encoder, and
      ``mmbyol export format=onnx`` traces the two as one graph where it maps tensors to tensors.
      ``None``: encoders of the modality take prepared batches only;
    - ``config_file``: the modality's default YAML, for a modality that does not ship with mmbyol
      (a plugin's); ``description``: one line for ``mmbyol list``.
    """

    name: str
    data_config: type
    collate: Callable[[list[Any]], Any]
    prepare: Callable[[Any, Any, dict[str, Any]], Any]
    render_views: Callable[[Any, Any, Any, Path, dict[str, Any]], None]
    views_file: str = "views.png"
    axes: dict[str, int] | None = None
    channels_last: bool = False
    front_end: Callable[[dict[str, Any]], nn.Module] | None = None
    config_file: Path | None = None
    description: str = ""


@runtime_checkable
class DataSet(Protocol):
    """What a registered data set builder ``fn(data_cfg, split) -> DataSet`` returns (``split`` is
    ``"train"`` or ``"test"``): a torch ``Dataset`` of ``(input, label)`` items.

    - an item's ``label`` is the class index, ``-1`` when unlabelled; an unreadable item is ``None``
      (logged by the data set, then skipped and counted by the loop, never a crash);
    - an item's ``input`` is what the modality's ``collate`` takes, or a :class:`TwoViews` of two
      such inputs when the data set makes each view its own (the two views then start from them);
    - ``classes``: the label names (empty for unlabelled data);
    - ``info``: a JSON-able dict the encoder builder and ``prepare`` receive (image channels,
      normalization statistics, a tokenizer …); the training split's is saved with the run;
    - optionally ``groups``: one hashable per item naming what a test split keeps apart (the
      speaker, recording or word an item comes from); the monitor then keeps a group's items out of
      either its kNN memory or its queries, so it measures what an unseen group's test measures;
    - optionally ``origins``: one hashable per item naming the whole example it was cut from (a
      window's series, or its stretch of one label), whose label all its items share; ``mmbyol
      eval`` then also scores each whole example by the mean prediction of its items
      (``linear_acc_whole``, …) and gives the few labels to whole examples;
    - optionally ``set_epoch(epoch)``, for a data set with random per-item choices (a crop's
      place, a noise): the loop calls it before each epoch, and from then on the draws depend on
      (seed, epoch, index) only, so a resumed run reads the same items. Before it is called
      (evaluation, statistics, the first row of ``mmbyol views``) every read of an item is the same.
    """

    classes: list[str]
    info: dict[str, Any]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Any, int] | None: ...


class TwoViews(NamedTuple):
    """An input per view, for a data set that makes them itself (e.g. a clip under two different
    noises): view 1 is augmented from ``view1`` and view 2 from ``view2``. Collated and prepared
    view by view."""

    view1: Any
    view2: Any


# what users call a held-out folder beside train/, in the order looked for
HELD_OUT_FOLDERS = ("test", "val", "validation", "valid")


def split_folder(root: Path, split: str) -> Path:
    """``ROOT/SPLIT`` of a folder layout; the test split may also be ``val/``, ``validation/`` or
    ``valid/`` (the first of them found). The path is returned whether or not it exists."""
    if split == "test":
        for name in HELD_OUT_FOLDERS:
            if (root / name).is_dir():
                return root / name
    return root / split


def files_under(folder: Path, suffixes: Collection[str]) -> list[Path]:
    """The files under ``folder``, at any depth, whose suffix (in any case) is one of
    ``suffixes``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)


def no_files_error(folder: Path, suffixes: Collection[str], what: str, layout: str) -> DataError:
    """The error for a folder that holds no ``what`` files: the suffixes looked for, the most
    common ones it holds instead, and the ``layout`` expected."""
    held = Counter(p.suffix.lower() or "files without a suffix" for p in folder.rglob("*") if p.is_file())
    holds = ", ".join(f"{n} {suffix}" for suffix, n in held.most_common(3)) if held else "no files"
    return DataError(f"No {what} files ({' '.join(sorted(suffixes))}) under {folder}: it holds {holds}. "
                     f"Expected {layout}.")


def get_modality(name: str) -> Modality:
    return MODALITIES.get("", name)


def build_encoder(modality: str, encoder_cfg: dict[str, Any] | DictConfig, info: dict[str, Any]) -> nn.Module:
    """An encoder from its config section (``name`` plus keyword options) and the data set info.
    A registered builder is ``fn(info, **options) -> nn.Module`` mapping a prepared batch to
    ``(B, out_dim)`` features, with an integer ``out_dim``."""
    options = OmegaConf.to_container(encoder_cfg) if isinstance(encoder_cfg, DictConfig) else dict(encoder_cfg)
    name = options.pop("name")
    builder = ENCODERS.get(modality, name)
    check_kwargs(builder, {"info": info, **options}, f"encoder {name!r}")
    try:
        encoder = builder(info, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"encoder {name!r}: {error}") from error
    if not isinstance(getattr(encoder, "out_dim", None), int):
        raise ConfigError(f"encoder {name!r} must expose an integer `out_dim` (its feature size).")
    return encoder
