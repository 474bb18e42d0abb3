"""``mmbyol views``: a batch as evaluation reads it, and the two views training makes of it, as a
picture whose rows are labelled (``original``, ``view 1``, ``view 2``); with multi-crop, a second
picture of the first two local views beside it."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont

from .augment import build_views
from .config import to_container
from .data import build_dataset, collate_items, evenly_spaced, prepare_views
from .errors import ConfigError
from .modalities.base import ROW_LABELS, get_modality
from .runtime import resolve_device

LOCAL_LABELS = ("original", "local view 1", "local view 2")
log = logging.getLogger(__name__)


def show_views(cfg: DictConfig, out: Path | None = None, n: int = 8) -> Path:
    """Write the picture of ``n`` training items, spread evenly through the split (so a set
    stored class by class shows several), and their views; returns its path (by default the
    modality's ``views_file``). The first row is each item as evaluation reads it; the views
    are made from the items as training reads them (after ``set_epoch(0)``: a random crop, a
    noise per view …), with the run's augmentations and ``seed``."""
    modality = get_modality(cfg.modality)
    device = resolve_device(cfg.device)
    dataset = evenly_spaced(build_dataset(cfg, "train"), n)

    def read() -> tuple:
        inputs, labels, _skipped = collate_items([dataset[i] for i in range(len(dataset))], modality.collate)
        return prepare_views(modality, inputs, device, dataset.info), labels

    evaluated, labels = read()
    trained = evaluated
    if labels is not None and (labels >= 0).any():  # the picture names its rows; the log, its items
        classes = list(getattr(dataset, "classes", []))
        log.info("the items' classes, in the order shown: %s", ", ".join(
            classes[label] if 0 <= label < len(classes) else "unlabelled" for label in labels.tolist()))
    if hasattr(dataset, "set_epoch"):  # training reads the items otherwise
        dataset.set_epoch(0)
        trained, _ = read()
    augment = to_container(cfg.augment)
    views = build_views(cfg.modality, augment["view1"], augment["view2"], augment["local"],
                        augment["local_views"]).to(device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    with torch.no_grad():
        view1, view2 = views(*trained, generator)
        local = views.make_local(trained[0], generator)  # after the pair, as in a training step
        if len(local) == 1:  # the picture has two rows for them: a second draw of the one local view
            local.append(views.local(trained[0], generator))
    out = Path(out or modality.views_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    render(cfg, modality, (evaluated[0], view1, view2), out, dataset.info, ROW_LABELS)
    if local:
        local_out = local_views_file(out)
        one = views.local_count == 1
        render(cfg, modality, (evaluated[0], local[0], local[1]), local_out, dataset.info,
               ("original", "local view", "another draw") if one else LOCAL_LABELS)
        log.info("%d local view%s a step (augment.local_views); drawn in %s", views.local_count,
                 "" if one else "s", local_out)
    return out


def local_views_file(out: Path) -> Path:
    """Where the local views' picture goes, beside the views': ``views.local.png``."""
    return out.with_name(f"{out.stem}.local{out.suffix}")


def render(cfg: DictConfig, modality, rows: tuple, out: Path, info: dict, labels: Sequence[str]) -> None:
    """``modality.render_views`` on ``rows``, naming them ``labels`` where it takes a ``labels``
    argument (a plugin's may not: its rows keep their own names, and the log says what they are)."""
    takes_labels = "labels" in inspect.signature(modality.render_views).parameters
    try:
        if takes_labels:
            modality.render_views(*rows, out, info, labels=labels)
        else:
            modality.render_views(*rows, out, info)
            if tuple(labels) != ROW_LABELS:
                log.info("%s: its rows are %s", out, ", ".join(labels))
    except ValueError as error:  # Pillow's and matplotlib's word for a file type they cannot write
        if out.suffix and out.suffix.lstrip(".").lower() in str(error).lower():
            raise ConfigError(f"out={out}: {cfg.modality} views are written as {Path(modality.views_file).suffix} "
                              f"files (or another type the writer knows), not {out.suffix} ({error}).") from None
        raise


def save_labelled_grid(rows: Sequence[torch.Tensor], path: Path, labels: Sequence[str] = ROW_LABELS,
                       padding: int = 4) -> None:
    """Rows of images ``(n, C, H, W)`` in [0, 1], one row each, with each row's label written on
    its left: ``torchvision.utils.make_grid`` and Pillow's own font. A row of smaller images (local
    views) is enlarged to the first row's size."""
    import torch.nn.functional as F
    from torchvision.utils import make_grid  # here: torchvision is a second's import other modalities skip

    size = rows[0].shape[-2:]
    rows = [x if x.shape[-2:] == size else F.interpolate(x.float(), size=tuple(size), mode="nearest") for x in rows]
    n = len(rows[0])
    grid = make_grid(torch.cat(list(rows)).float().cpu().clamp(0, 1), nrow=n, padding=padding, pad_value=1.0)
    picture = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    height = rows[0].shape[-2]
    font = ImageFont.load_default(size=max(10, min(18, height // 3)))
    margin = 8 + max(int(font.getlength(label)) for label in labels)
    labelled = Image.new("RGB", (picture.width + margin, picture.height), "white")
    labelled.paste(picture, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    for row, label in enumerate(labels):
        left, top, right, bottom = font.getbbox(label)
        middle = padding + row * (height + padding) + height // 2
        draw.text((4, middle - (bottom + top) // 2), label, fill="black", font=font)
    labelled.save(path)
