"""Registries of modalities, encoders, augmentations and data sets, and plugin discovery.

Names are the public surface (``mmbyol list`` shows them all). Third-party packages register
theirs with the ``register_*`` decorators in a module named by an entry point of the group
``mmbyol.plugins``; those modules are imported lazily at the first registry lookup.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import ConfigError, did_you_mean

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mmbyol.plugins"
# The modalities that ship with mmbyol; they register themselves on import, like any plugin.
BUILTIN_MODULES = ("mmbyol.generic", "mmbyol.modalities.image", "mmbyol.modalities.audio", "mmbyol.modalities.text",
                   "mmbyol.modalities.timeseries")
# The scope of augmentations registered for every modality (``register_augmentation(GENERIC, name)``):
# offered to each modality whose batch has the axes they need (mmbyol.augment.augmentation_names).
GENERIC = "*"


class NameTaken(ValueError):
    """A name registered twice by different objects."""


class Registry:
    """Named objects, optionally scoped by modality (encoders, augmentations, data sets are)."""

    def __init__(self, kind: str, scoped: bool = True):
        self.kind = kind
        self.scoped = scoped
        self._items: dict[tuple[str, str], Any] = {}
        self._origin: dict[tuple[str, str], str] = {}

    def add(self, modality: str, name: str, obj: Any) -> None:
        key = (modality if self.scoped else "", name)
        if key in self._items and self._items[key] is not obj:
            where = f" for modality {modality!r}" if self.scoped else ""
            raise NameTaken(f"{self.kind} {name!r}{where} is already registered by {self._origin[key]}")
        self._items[key] = obj
        self._origin[key] = _current_origin

    def get(self, modality: str, name: str) -> Any:
        load_plugins()
        key = (modality if self.scoped else "", name)
        if key not in self._items:
            available = self.names(modality)
            hint = did_you_mean(name, available)
            where = f" for modality {modality!r}" if self.scoped else ""
            raise ConfigError(
                f"Unknown {self.kind} {name!r}{where}.{hint} Available: {', '.join(available) or 'none'}. "
                f"Run `mmbyol list` to see every registered name, including those added by plugins."
            )
        return self._items[key]

    def names(self, modality: str = "") -> list[str]:
        load_plugins()
        scope = modality if self.scoped else ""
        return sorted(name for (m, name) in self._items if m == scope)

    def entries(self) -> list[tuple[str, str, str]]:
        """(modality, name, origin) for every entry, sorted."""
        load_plugins()
        return sorted((m, name, self._origin[(m, name)]) for (m, name) in self._items)


MODALITIES = Registry("modality", scoped=False)
ENCODERS = Registry("encoder")
AUGMENTATIONS = Registry("augmentation")
DATASETS = Registry("data set")

_current_origin = "mmbyol"
_loaded = False


def _decorator(registry: Registry, modality: str, name: str) -> Callable[[Any], Any]:
    def register(obj: Any) -> Any:
        registry.add(modality, name, obj)
        return obj

    return register


def register_encoder(modality: str, name: str):
    """Register an encoder builder ``fn(info: dict, **kwargs) -> nn.Module`` (with ``out_dim``)."""
    return _decorator(ENCODERS, modality, name)


def register_augmentation(modality: str, name: str):
    """Register an :class:`~mmbyol.augment.Augmentation` subclass under a modality and a name;
    under ``"*"`` (``GENERIC``), for every modality whose batch has the axes it needs."""
    return _decorator(AUGMENTATIONS, modality, name)


def register_dataset(modality: str, name: str):
    """Register a data set builder ``fn(data_cfg, split) -> Dataset`` (with ``classes`` and ``info``)."""
    return _decorator(DATASETS, modality, name)


def register_modality(modality: Any) -> Any:
    """Register a :class:`~mmbyol.modalities.base.Modality` object under its ``name``."""
    MODALITIES.add("", modality.name, modality)
    return modality


def import_plugins(modules: list[str] | tuple[str, ...], origin: str | None = None) -> None:
    """Import modules that register things (the config's ``plugins:`` list). The built-in
    modalities register first, so a plugin that takes one of their names is the one refused."""
    global _current_origin
    if origin is None:
        load_plugins()
    for module in modules:
        previous, _current_origin = _current_origin, origin or module
        try:
            _import_here_too(module)
        except NameTaken as error:
            if origin == "mmbyol":  # a plugin imported by hand before the built-ins took their name
                raise ConfigError(f"{module!r} cannot register its names: {error}. Rename that plugin's.") from error
            raise ConfigError(f"Plugin module {module!r} cannot register its names: {error}. "
                              f"Rename yours in {module!r}.") from error
        except (ImportError, ValueError, TypeError) as error:  # ValueError, TypeError: "" or ".x"
            raise ConfigError(
                f"Cannot import plugin module {module!r} ({error}). Install the package that "
                f"provides it into this environment, run from the folder that holds it, or remove it "
                f"from `plugins`."
            ) from error
        finally:
            _current_origin = previous


def _import_here_too(module: str) -> None:
    """``import module``; one found nowhere else is looked for in the working directory too, as
    ``python -m mmbyol`` would find it (the ``mmbyol`` command's path does not hold it). Looked
    for last, so it never shadows an installed module."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        here = str(Path.cwd())
        if error.name != module.split(".")[0] or here in sys.path or not _beside(Path(here), module):
            raise
        sys.path.append(here)
        importlib.import_module(module)


def _beside(folder: Path, module: str) -> bool:
    top = module.split(".")[0]
    return (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file()


def load_plugins() -> None:
    """Import the built-in modalities and every ``mmbyol.plugins`` entry point, once."""
    global _loaded, _current_origin
    if _loaded:
        return
    _loaded = True
    import_plugins(BUILTIN_MODULES, origin="mmbyol")
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        package = entry_point.dist.name if entry_point.dist else entry_point.value
        before = {id(r): set(r._items) for r in (MODALITIES, ENCODERS, AUGMENTATIONS, DATASETS)}
        previous, _current_origin = _current_origin, package
        try:
            entry_point.load()
        except Exception as error:  # a broken plugin must not take the framework down
            log.warning("mmbyol plugin %r from %s failed to load: %s", entry_point.name, package, error)
            continue
        finally:
            _current_origin = previous
        added = [f"{registry.kind} " + f"{modality}/{name}".strip("/")
                 for registry in (MODALITIES, ENCODERS, AUGMENTATIONS, DATASETS)
                 for modality, name in sorted(set(registry._items) - before[id(registry)])]
        log.info("plugin %s registered %s", package, ", ".join(added) or "nothing")


def list_names(kind: str, modality: str = "") -> list[str]:
    """Registered names of one kind: ``modalities``, ``encoders``, ``augmentations`` or ``datasets``."""
    registries = {"modalities": MODALITIES, "encoders": ENCODERS, "augmentations": AUGMENTATIONS, "datasets": DATASETS}
    return registries[kind].names(modality)
