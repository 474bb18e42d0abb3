"""Batched augmentations with an independent random draw per sample.

An :class:`Augmentation` acts on a whole prepared batch on the training device. Its ``p`` is
drawn per sample: the base class picks the rows to transform and calls :meth:`apply` on them
only, so every subclass sees just the rows it must change and draws one set of parameters per
row from the ``torch.Generator`` it is given (seedable, so views are reproducible).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .errors import ConfigError, did_you_mean
from .registry import AUGMENTATIONS, GENERIC, MODALITIES

# A batch is a tensor, or a mapping whose tensors share the batch dimension (e.g. token ids and
# attention mask) and whose other values are constants of the whole batch (e.g. the [MASK] id).
Batch = Any


def _first_tensor(x: Mapping) -> torch.Tensor:
    return next(value for value in x.values() if isinstance(value, torch.Tensor))


def batch_size(x: Batch) -> int:
    return (_first_tensor(x) if isinstance(x, Mapping) else x).shape[0]


def batch_device(x: Batch) -> torch.device:
    return (_first_tensor(x) if isinstance(x, Mapping) else x).device


def select_rows(x: Batch, index: torch.Tensor) -> Batch:
    if isinstance(x, Mapping):
        return {key: select_rows(value, index) for key, value in x.items()}
    return x[index] if isinstance(x, torch.Tensor) else x


def replace_rows(x: Batch, index: torch.Tensor, rows: Batch) -> Batch:
    """A copy of ``x`` whose rows at ``index`` are ``rows``; ``x`` itself is left untouched."""
    if isinstance(x, Mapping):
        return {key: replace_rows(value, index, rows[key]) for key, value in x.items()}
    if not isinstance(x, torch.Tensor):
        return x
    out = x.clone()
    out[index] = rows.to(out.dtype)
    return out


def uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` independent draws from U(low, high)."""
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def bernoulli(n: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` independent coin flips that come up True with probability ``p``."""
    return torch.rand(n, generator=generator, device=device) < p


def window_positions(start: torch.Tensor, length: torch.Tensor, size_in: int, size_out: int) -> torch.Tensor:
    """``(n, size_out)`` positions, in input samples (0 … size_in − 1, clamped), at which
    ``size_out`` evenly spaced outputs read the window [start, start + length) (fractions of the
    side) of each sample: the centres of the output cells, as ``align_corners=False`` places them."""
    centres = (torch.arange(size_out, device=start.device, dtype=start.dtype) + 0.5) / size_out
    return ((start[:, None] + length[:, None] * centres) * size_in - 0.5).clamp(0, size_in - 1)


def interpolation_matrix(start: torch.Tensor, length: torch.Tensor, size_in: int, size_out: int) -> torch.Tensor:
    """Per-sample ``(size_out, size_in)`` matrices of 1-D bilinear resampling of the window
    [start, start + length) (fractions of the side) to ``size_out`` pixels. Crops are
    axis-aligned, so two batched matmuls do what ``grid_sample`` does (same values:
    ``align_corners=False``, border padding), in about half the time on a CPU."""
    position = window_positions(start, length, size_in, size_out)
    low = position.floor()
    weight_high = position - low
    high = (low + 1).clamp(max=size_in - 1)
    matrix = torch.zeros(len(start), size_out, size_in, device=start.device, dtype=start.dtype)
    matrix.scatter_add_(2, low.long().unsqueeze(-1), (1 - weight_high).unsqueeze(-1))
    matrix.scatter_add_(2, high.long().unsqueeze(-1), weight_high.unsqueeze(-1))
    return matrix


def bands(start: torch.Tensor, width: torch.Tensor | int, size: int) -> torch.Tensor:
    """``(n, size)`` masks, True inside any of each sample's bands [start, start + width) along an
    axis of ``size`` steps; ``start`` (and a tensor ``width``) are ``(n, count, 1)``."""
    position = torch.arange(size, device=start.device)
    return ((position >= start) & (position < start + width)).any(dim=1)


def along_axis(values: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-sample values over one axis, ``(n, x.shape[dim])``, viewed to broadcast against ``x``."""
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[dim] = x.shape[dim]
    return values.view(shape)


# ------------------------------------------------------------------ search-space declarations


@dataclass(frozen=True)
class Float:
    """A float option searched in [low, high] (on a log scale with ``log``)."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Int:
    """An integer option searched in [low, high]."""

    low: int
    high: int

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high)


@dataclass(frozen=True)
class Choice:
    """An option searched among ``choices``."""

    choices: tuple

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))


@dataclass(frozen=True)
class Interval:
    """A ``[low, high]`` option (a range the augmentation draws from) whose two ends are searched
    in [low, high]: two draws, the smaller one first."""

    low: float
    high: float

    def suggest(self, trial, name: str) -> list[float]:
        ends = sorted([trial.suggest_float(f"{name}.a", self.low, self.high),
                       trial.suggest_float(f"{name}.b", self.low, self.high)])
        return [round(end, 4) for end in ends]


# ------------------------------------------------------------------------------ augmentations


class Augmentation(nn.Module):
    """Base class: applies :meth:`apply` to each sample of a batch with probability ``p``.

    ``search_space`` declares what ``mmbyol search`` may vary: option name (``p`` included) →
    :class:`Float`, :class:`Int`, :class:`Choice` or :class:`Interval`. Options it leaves out
    keep the value the config gives them (or their default). An augmentation that declares
    nothing can still be searched in or out of a view, as configured."""

    search_space: ClassVar[dict[str, Float | Int | Choice | Interval]] = {}

    def __init__(self, p: float = 1.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must lie in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: Batch, generator: torch.Generator) -> Batch:
        if self.p >= 1.0:
            return self.apply(x, generator)
        n = batch_size(x)
        chosen = bernoulli(n, self.p, generator, batch_device(x))
        if self.p <= 0.0 or not bool(chosen.any()):
            return x
        index = chosen.nonzero().squeeze(1)
        return replace_rows(x, index, self.apply(select_rows(x, index), generator))

    def apply(self, x: Batch, generator: torch.Generator) -> Batch:
        """Transform every row of ``x``, drawing independent random parameters per row."""
        raise NotImplementedError

    def bind(self, axes: Mapping[str, int]) -> None:
        """Called once the view pair is built, with the modality's named axes of the batch (dim by
        name, ``Modality.axes``): a generic augmentation finds the axis it acts on here, and raises
        ``ValueError`` when the batch lacks one it needs. Nothing to do for most."""

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Compose(nn.Module):
    """Augmentations applied one after the other."""

    def __init__(self, augmentations: Sequence[Augmentation]):
        super().__init__()
        self.augmentations = nn.ModuleList(augmentations)

    def forward(self, x: Batch, generator: torch.Generator) -> Batch:
        for augmentation in self.augmentations:
            x = augmentation(x, generator)
        return x


class ViewPair(nn.Module):
    """The two augmentation pipelines of BYOL; asymmetric when the two lists differ.
    ``view1, view2 = views(x1, x2, generator)``: view 1 is made from ``x1`` and view 2 from
    ``x2``, the same prepared batch unless the data set gives each view an input of its own.
    ``views.make_local(x1, generator)``: the ``local_count`` local views of multi-crop, each
    made from ``x1`` by the ``local`` pipeline (an empty list when there are none)."""

    def __init__(self, view1: Compose, view2: Compose, local: Compose | None = None, local_count: int = 0):
        super().__init__()
        if local_count < 0:
            raise ValueError(f"the number of local views cannot be negative, got {local_count}")
        self.view1 = view1
        self.view2 = view2
        self.local = local if local is not None else Compose([])
        self.local_count = local_count

    def forward(self, x1: Batch, x2: Batch, generator: torch.Generator) -> tuple[Batch, Batch]:
        return self.view1(x1, generator), self.view2(x2, generator)

    def make_local(self, x1: Batch, generator: torch.Generator) -> list[Batch]:
        return [self.local(x1, generator) for _ in range(self.local_count)]


def modality_axes(modality: str) -> Mapping[str, int] | None:
    return MODALITIES.get("", modality).axes


def _offered(cls: type, axes: Mapping[str, int] | None) -> bool:
    """Whether a generic augmentation can act on a batch with ``axes``: it needs a tensor batch
    with named axes, and among them any it names in ``needs``."""
    return axes is not None and set(getattr(cls, "needs", ())) <= set(axes)


def augmentation_names(modality: str) -> list[str]:
    """The augmentations a modality's views may use: its own, and the generic ones its batch
    suits (a modality's own name wins over a generic one of the same name)."""
    own = AUGMENTATIONS.names(modality)
    axes = modality_axes(modality)
    generic = [name for name in AUGMENTATIONS.names(GENERIC)
               if name not in own and _offered(AUGMENTATIONS.get(GENERIC, name), axes)]
    return sorted(own + generic)


def generic_names(modality: str) -> list[str]:
    """Which of :func:`augmentation_names` are generic ones."""
    own = set(AUGMENTATIONS.names(modality))
    return [name for name in augmentation_names(modality) if name not in own]


def augmentation_class(modality: str, name: str) -> type[Augmentation]:
    """The class registered as ``name`` for ``modality``, or the generic one; a clear error with
    the closest name otherwise."""
    if name in AUGMENTATIONS.names(modality):
        return AUGMENTATIONS.get(modality, name)
    available = augmentation_names(modality)
    if name in available:
        return AUGMENTATIONS.get(GENERIC, name)
    if name in AUGMENTATIONS.names(GENERIC):
        needs = getattr(AUGMENTATIONS.get(GENERIC, name), "needs", ())
        axes = modality_axes(modality)
        why = (f"a batch with a {' and a '.join(repr(n) for n in needs)} axis" if axes is not None
               else "a tensor batch with named axes")
        raise ConfigError(f"The generic augmentation {name!r} needs {why}, which modality {modality!r} does not "
                          f"have ({', '.join(axes) if axes else 'its batch is not such a tensor'}). "
                          f"Available: {', '.join(available)}.")
    hint = did_you_mean(name, available)
    raise ConfigError(f"Unknown augmentation {name!r} for modality {modality!r}.{hint} Available: "
                      f"{', '.join(available) or 'none'}. Run `mmbyol list` to see every registered name, "
                      f"including those added by plugins.")


def build_augmentation(modality: str, spec: Mapping[str, Any], where: str = "augment") -> Augmentation:
    """One augmentation from a config item ``{name: ..., p: ..., other kwargs}``, bound to the
    modality's axes."""
    spec = dict(spec)
    if "name" not in spec:
        raise ConfigError(f"{where}: each augmentation needs a `name`, got {spec}. Example: {{name: solarize, p: 0.2}}")
    name = spec.pop("name")
    cls = augmentation_class(modality, name)
    check_kwargs(cls, spec, f"{where} augmentation {name!r}")
    try:
        augmentation = cls(**spec)
        augmentation.bind(modality_axes(modality) or {})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where} augmentation {name!r}: {error}") from error
    return augmentation


def build_views(modality: str, view1: Sequence[Mapping[str, Any]], view2: Sequence[Mapping[str, Any]],
                local: Sequence[Mapping[str, Any]] = (), local_views: int = 0) -> ViewPair:
    """The view pair of ``augment.view1`` and ``augment.view2``, and ``local_views`` local views
    through ``augment.local`` (multi-crop; none by default)."""
    def pipeline(specs: Sequence[Mapping[str, Any]], where: str) -> Compose:
        return Compose([build_augmentation(modality, s, f"augment.{where}[{i}]") for i, s in enumerate(specs)])

    return ViewPair(pipeline(view1, "view1"), pipeline(view2, "view2"), pipeline(local, "local"), local_views)


def check_kwargs(fn: Any, kwargs: Mapping[str, Any], what: str) -> None:
    """Fail with the closest valid name when ``kwargs`` holds a name ``fn`` does not take."""
    parameters = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in valid:
            raise ConfigError(f"{what} has no option {key!r}.{did_you_mean(key, valid)} "
                              f"Its options: {', '.join(valid)}.")

