"""Structured configs, composed as ``configs/base.yaml`` ← ``configs/modality/NAME.yaml`` ←
``config=FILE`` ← ``key=value`` overrides, with struct mode on: a typo or a wrong type fails
early, with the key named and the closest valid one suggested; a layer that names another encoder
starts the ``encoder`` section afresh. The YAML files ship inside the package
(``mmbyol/configs/``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError, closest, did_you_mean
from .registry import MODALITIES, import_plugins


@dataclass
class RunConfig:
    dir: str | None = None  # default: runs/<modality>-<date>-<time>


@dataclass
class TrainerConfig:
    epochs: int = 10
    max_steps: int | None = None  # when set, the run (and every schedule) is this many steps
    log_every: int = 10  # steps between lines of metrics.jsonl
    checkpoint_every: int = 500  # steps between checkpoints (and one at the end of every epoch)
    precision: str = "auto"  # auto (bf16 where the device has it natively, else fp32) | fp32 | bf16
    compile: bool = False  # torch.compile the encoder
    progress: bool = True  # tqdm progress bar
    # the monitor (docs/monitor.md): kNN accuracy and RankMe of the encoder's features on a
    # validation slice of the training split, against the untrained encoder's; steps between
    # measurements, null: about 10 a run; 0: off
    monitor_every: int | None = None
    monitor_items: int = 1024  # the validation slice: this many training items, evenly spaced
    loggers: list[str] = field(default_factory=lambda: ["jsonl"])  # jsonl (metrics.jsonl) | tensorboard


@dataclass
class ModelConfig:
    hidden_dim: int = 4096
    projection_dim: int = 256
    tau_base: float = 0.996
    temperature: float = 0.1  # objective=infonce only


@dataclass
class OptimConfig:
    name: str = "lars"  # lars | adamw | sgd
    lr: float = 0.2  # per 256 examples: the rate used is lr·batch_size/256 (BYOL §3.3)
    weight_decay: float = 1.5e-6
    momentum: float = 0.9
    trust_coefficient: float = 1e-3
    trust_clip: bool = False  # LARS: the adaptive rate never above lr (solo-learn's clip_lr)
    warmup_epochs: float = 10.0
    predictor_lr_scale: float = 1.0  # the predictor's learning rate relative to lr (1 in the paper)
    encoder_lr_scale: float = 1.0  # the online encoder's learning rate relative to lr (a pretrained one: lower)


@dataclass
class DataConfig:
    """The keys every data set understands; a modality extends this with its own."""

    name: str = "???"
    root: str | None = None
    batch_size: int = 256
    limit: int | None = None  # use only N training items, evenly spaced through the set
    num_workers: int | None = None  # DataLoader workers; default: 0 on CPU, up to 8 per process on CUDA


@dataclass
class AugmentConfig:
    view1: list[dict[str, Any]] = field(default_factory=list)
    view2: list[dict[str, Any]] = field(default_factory=list)
    local_views: int = 0  # multi-crop: this many more views, made from view 1's input by `local`
    local: list[dict[str, Any]] = field(default_factory=list)


L2_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the linear probe's L2 strengths by default


@dataclass
class EvalConfig:
    init: str = "trained"  # trained | random (an untrained encoder of the same config)
    labels_per_class: int | None = None  # also probe with only N labels per class
    label_draws: int = 5  # ...on this many draws of those labels (seeds eval.seed, +1, …); their mean is reported
    # the linear probe's L2 strengths, one chosen by cross-validation on the training data; one value skips it
    l2_grid: list[float] = field(default_factory=lambda: list(L2_GRID))
    knn_k: int = 200  # at most the mean class size of the training split (evaluate.knn_neighbours)
    knn_temperature: float = 0.1
    batch_size: int = 512
    test_limit: int | None = None  # use only N test items, evenly spaced through the test set
    seed: int = 0


@dataclass
class SearchConfig:
    """``mmbyol search`` (docs/search.md)."""

    trials: int = 20  # finished trials (complete or pruned) to reach, counted over every process on the study
    minutes: float | None = None  # and at most this long (this process); the trial running then is cut short
    trial_steps: int | None = None  # BYOL steps per trial; null: a fifth of the configured run
    measurements: int = 5  # monitor measurements per trial: the pruner's intermediate values
    finalists: int = 1  # the best trials trained again, with the configured pair, in a final round; 0: none
    final_steps: int | None = None  # BYOL steps in the final round; null: 2 trials' length, at most the run's
    # how far a finalist must lead the configured pair in the final round to replace it in best.yaml, in
    # standard errors of the slice's kNN (binomial, on its queries); 0: any lead. RankMe: any lead
    margin: float = 2.0
    objective: str = "auto"  # auto (knn for labelled data, else rank) | knn | rank
    pruner: str = "hyperband"  # hyperband | median | none
    storage: str | None = None  # an Optuna storage URL; null: sqlite:///RUN_DIR/study.db
    augmentations: list[str] | None = None  # names that may enter a view; null: every one of the modality
    tau_base: list[float] | None = field(default_factory=lambda: [0.4, 0.99])  # searched range; null: keep
    lr_scale: list[float] | None = field(default_factory=lambda: [0.3, 3.0])  # optim.lr × this (log); null: keep


@dataclass
class Config:
    modality: str = "image"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    objective: str = "byol"  # byol | infonce | supervised (the labelled upper bound)
    resume: str | None = None  # auto | PATH to a checkpoint
    preset: str | None = None  # a recipe in configs/preset/ that reproduces a published result
    plugins: list[str] = field(default_factory=list)
    run: RunConfig = field(default_factory=RunConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "???"})
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


LOGGERS = ("jsonl", "tensorboard")
CHOICES = {
    "objective": ("byol", "infonce", "supervised"),
    "optim.name": ("lars", "adamw", "sgd"),
    "trainer.precision": ("auto", "fp32", "bf16"),
    "eval.init": ("trained", "random"),
    "search.objective": ("auto", "knn", "rank"),
    "search.pruner": ("hyperband", "median", "none"),
}


def config_dir() -> Path:
    """``$MMBYOL_CONFIG_DIR``, else the default configs that ship in the package."""
    return Path(os.environ.get("MMBYOL_CONFIG_DIR", Path(__file__).resolve().parent / "configs"))


def preset_names() -> list[str]:
    """The presets that ship in ``configs/preset/``."""
    return sorted(path.stem for path in (config_dir() / "preset").glob("*.yaml"))


def _preset(name: Any) -> DictConfig:
    """``preset=NAME``: its YAML file, merged over the modality's defaults and under ``config=FILE``
    and the overrides."""
    path = config_dir() / "preset" / f"{name}.yaml"
    if not isinstance(name, str) or not path.exists():
        raise ConfigError(f"preset={name!r} is not a preset; the presets are: {', '.join(preset_names())}.")
    return load_yaml(path)


def load_yaml(path: Path) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except Exception as error:
        raise ConfigError(f"Config file {path} is not valid YAML: {error}") from error


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """``key=value`` items as (key, value); values are YAML (``[a, b]``, ``{name: x}``, ``null``),
    keys are dotted paths that may index lists (``augment.view1.0.scale=[0.2, 1.0]``)."""
    parsed = []
    for item in overrides:
        if not re.match(r"^[A-Za-z_][\w.]*=", item):
            raise ConfigError(
                f"Cannot read {item!r}: overrides are key=value, e.g. trainer.epochs=5 or "
                f"'augment.view2=[{{name: solarize, p: 0.2}}]'.{_path_hint(item)} `mmbyol config` shows every key."
            )
        key, _, text = item.partition("=")
        try:
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={text}"]))["value"]
        except Exception as error:
            raise ConfigError(f"Cannot parse the value of {item!r}: {str(error).splitlines()[0]}") from None
        parsed.append((key, value))
    return parsed


def _path_hint(item: str) -> str:
    """What to write instead, where a word meant as an override names a file or a run's folder."""
    path = Path(item).expanduser()
    if path.is_dir() and (path / "config.yaml").is_file():
        return (f" {item} is a run's folder: continue it with run.dir={item} resume=auto, or take its settings "
                f"with config={path / 'config.yaml'} (and a new run.dir, to train them again).")
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return f" A file of settings is given as config={item}."
    return ""


def load_config(overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None) -> DictConfig:
    """The resolved config: defaults ← base.yaml ← modality yaml ← the modality's
    ``NAME.pretrained.yaml`` when ``encoder.pretrained`` is set ← ``preset=NAME`` ← ``base`` ←
    ``config=FILE`` ← ``overrides``.

    ``base`` is a saved config (a run's ``config.yaml``) that overrides refine, for resume and
    eval; when it is given, the packaged YAML files are not read again. ``config=FILE`` among the
    overrides is a user's YAML file, merged and checked like the overrides that follow it.
    """
    parsed = parse_overrides(overrides)
    files = [_user_file(value) for key, value in parsed if key == "config"]
    parsed = [(key, value) for key, value in parsed if key != "config"]
    given = dict(parsed)
    layers: list[Any] = []
    if base is None:
        layers.append(load_yaml(config_dir() / "base.yaml"))
    else:
        layers.append(OmegaConf.create(dict(base)))
    preset = _preset(given.get("preset")) if base is None and given.get("preset") is not None else None
    # the command line chooses the modality, else the last file that names one, else the preset, else the base
    chosen = [given.get("modality"), *(layer.get("modality") for layer, _ in reversed(files)),
              preset.get("modality") if preset is not None else None, layers[0].get("modality")]
    modality_name = next((name for name in chosen if name), Config.modality)
    if not isinstance(modality_name, str):
        raise ConfigError(f"modality={modality_name!r} is not a name; `mmbyol list` shows the modalities.")
    plugins = [*layers[0].get("plugins", [])]
    for value in [*(layer.get("plugins") for layer, _ in files), given.get("plugins")]:
        if value is None:
            continue
        if not isinstance(value, Sequence) or isinstance(value, str) or not all(isinstance(p, str) for p in value):
            raise ConfigError(f"plugins={value!r}: plugins is a list of module names, e.g. plugins=[my_package.augs].")
        plugins += list(value)
    import_plugins(plugins)
    modality = MODALITIES.get("", modality_name)

    cfg = _merge(OmegaConf.structured(Config), {"data": OmegaConf.structured(modality.data_config)})
    if base is None:
        modality_file = config_dir() / "modality" / f"{modality_name}.yaml"
        if modality_file.exists():
            layers.append(load_yaml(modality_file))
        elif modality.config_file is not None:
            layers.append(load_yaml(modality.config_file))
        pretrained_file = config_dir() / "modality" / f"{modality_name}.pretrained.yaml"
        if pretrained_file.exists() and _pretrained_given(given, files, preset):
            layers.append(load_yaml(pretrained_file))  # fine-tuning a checkpoint wants other defaults
        if preset is not None:
            layers.append(preset)
    for layer in layers:
        cfg = _merge(_fresh_encoder(cfg, _encoder_name(layer)), layer)
    for layer, source in files:
        cfg = _merge(_fresh_encoder(cfg, _encoder_name(layer)), layer, source)
    cfg = _fresh_encoder(cfg, given.get("encoder.name", _encoder_name(given)))
    for key, value in parsed:
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except (OmegaConfBaseException, TypeError, ValueError, ArithmeticError) as error:
            raise ConfigError(_explain(cfg, error, key)) from None
    cfg.modality = modality_name
    try:
        OmegaConf.resolve(cfg)  # ${...} interpolations become values now, or a clear error
    except (OmegaConfBaseException, TypeError, ValueError, ArithmeticError) as error:
        raise ConfigError(_explain(cfg, error)) from None
    _expand_home(cfg)
    validate(cfg)
    return cfg


def _expand_home(node: Any) -> None:
    """Every string value that begins with ``~/`` made a path in the home folder: the shell leaves
    ``~`` after ``key=`` as it is, and YAML files never expand it."""
    for key in list(node.keys()) if isinstance(node, DictConfig) else range(len(node)):
        if OmegaConf.is_missing(node, key):
            continue
        value = node[key]
        if isinstance(value, str) and value.startswith("~/"):
            node[key] = os.path.expanduser(value)
        elif OmegaConf.is_config(value):
            _expand_home(value)


def _pretrained_given(given: Mapping[str, Any], files: list[tuple[DictConfig, str]],
                      preset: DictConfig | None) -> bool:
    """Whether the command line, a config file or the preset sets ``encoder.pretrained``."""
    if "encoder.pretrained" in given:
        return given["encoder.pretrained"] is not None
    if isinstance(given.get("encoder"), Mapping) and "pretrained" in given["encoder"]:
        return given["encoder"]["pretrained"] is not None
    for layer in [*(layer for layer, _ in reversed(files)), preset]:
        encoder = layer.get("encoder") if layer is not None else None
        if isinstance(encoder, Mapping) and "pretrained" in encoder:
            return encoder["pretrained"] is not None
    return False


def _encoder_name(layer: Any) -> Any:
    """The encoder a config layer (or the command line's ``encoder={...}``) names, else None."""
    encoder = layer.get("encoder") if isinstance(layer, Mapping) else None
    return encoder.get("name") if isinstance(encoder, Mapping) else None


def _fresh_encoder(cfg: DictConfig, name: Any) -> DictConfig:
    """``cfg`` with its encoder section emptied when ``name`` is another encoder's: an encoder's
    options mean nothing to another (the FCN's ``channels`` to a Transformer), so a layer that
    switches encoders starts from the new one's own defaults and the options it gives."""
    current = OmegaConf.select(cfg, "encoder.name", throw_on_missing=False)
    if name is None or current is None or name == current:
        return cfg
    cfg.encoder = {"name": name}
    return cfg


def _user_file(value: Any) -> tuple[DictConfig, str]:
    """The YAML file of ``config=FILE``: a mapping of config keys."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config={value!r}: give the path of a YAML file, e.g. config=my.yaml.")
    layer = load_yaml(Path(value).expanduser())
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"Config file {value} must hold a mapping of config keys (e.g. `trainer: {{epochs: 5}}`), "
                          f"not a list.")
    return layer, value


def _merge(cfg: DictConfig, layer: Any, source: str | None = None) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except (OmegaConfBaseException, TypeError, ValueError, ArithmeticError) as error:
        raise ConfigError(_explain(cfg, error) + (f" (in {source})" if source else "")) from None


def _explain(cfg: DictConfig, error: Exception, key: str | None = None) -> str:
    key = getattr(error, "full_key", None) or key or "?"
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if "not in" in str(error) or type(error).__name__ in ("ConfigKeyError", "ConfigAttributeError"):
        valid = list(parent.keys()) if isinstance(parent, DictConfig) else []
        close = closest(leaf, valid)
        hint = f" Did you mean {'.'.join(filter(None, [parent_key, close]))!r}?" if close else ""
        return (f"Unknown config key {key!r}.{hint} Valid keys{' under ' + repr(parent_key) if parent_key else ''}: "
                f"{', '.join(valid)}. `mmbyol config` prints the whole config.")
    message = str(error).splitlines()[0]
    return f"Config key {key!r}: {message}. `mmbyol config` shows every key with its current value."


# Numeric keys, the range each must be in and the test of a value outside it; null, where a key
# allows it, means "unset" and is not tested.
NUMBER_RANGES = (
    (("data.batch_size", "trainer.log_every", "trainer.checkpoint_every", "eval.label_draws", "search.trials",
      "search.measurements", "model.hidden_dim", "model.projection_dim", "eval.batch_size", "eval.knn_k"),
     "at least 1", lambda v: v < 1),
    (("trainer.max_steps", "data.limit", "eval.test_limit", "eval.labels_per_class", "search.trial_steps",
      "search.final_steps", "data.length", "data.window", "data.stride"),
     "at least 1, or null", lambda v: v < 1),
    (("optim.lr", "model.temperature", "eval.knn_temperature", "search.minutes"),
     "more than 0", lambda v: not v > 0),
    (("optim.weight_decay", "optim.warmup_epochs", "optim.trust_coefficient", "data.num_workers",
      "trainer.monitor_every", "trainer.monitor_items", "search.finalists", "search.margin", "augment.local_views"),
     "0 or more", lambda v: v < 0),
)


def validate(cfg: DictConfig) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not a choice.{did_you_mean(str(value), allowed)} "
                              f"Choose one of: {', '.join(allowed)}.")
    for keys, phrase, outside in NUMBER_RANGES:
        for key in keys:
            value = OmegaConf.select(cfg, key)
            if value is not None and outside(value):
                raise ConfigError(f"{key} must be {phrase}, got {value}.")
    if cfg.trainer.max_steps is None and cfg.trainer.epochs < 1:
        raise ConfigError(f"trainer.epochs must be at least 1, got {cfg.trainer.epochs} (or set trainer.max_steps).")
    if not 0 <= cfg.model.tau_base <= 1:
        raise ConfigError(f"model.tau_base must be in [0, 1], got {cfg.model.tau_base}: the target network is "
                          f"τ·target + (1 − τ)·online (0.996 in the paper; 1 never moves the target).")
    if not 0 <= cfg.optim.momentum < 1:
        raise ConfigError(f"optim.momentum must be in [0, 1), got {cfg.optim.momentum}.")
    for key in ("search.tau_base", "search.lr_scale"):
        value = OmegaConf.select(cfg, key)
        top = 1 if key == "search.tau_base" else float("inf")
        if value is not None and (len(value) != 2 or not 0 < value[0] <= value[1] <= top):
            raise ConfigError(f"{key}={list(value)} must be a range [low, high] with 0 < low <= high"
                              f"{' <= 1' if top == 1 else ''}, or null to keep the configured value.")
    grid = cfg.eval.l2_grid
    if not grid or not all(isinstance(v, (int, float)) and v >= 0 for v in grid):
        raise ConfigError(f"eval.l2_grid={list(grid)} must list one or more L2 strengths >= 0, e.g. "
                          f"eval.l2_grid=[1e-4, 1e-2]; one value fixes the probe's L2 without cross-validation.")
    for key in ("optim.predictor_lr_scale", "optim.encoder_lr_scale"):
        if not OmegaConf.select(cfg, key) > 0:
            raise ConfigError(f"{key} must be more than 0, got {OmegaConf.select(cfg, key)}: it multiplies optim.lr.")
    if cfg.augment.local_views and not cfg.augment.local:
        raise ConfigError(f"augment.local_views={cfg.augment.local_views} needs augment.local, the local views' "
                          f"augmentations, e.g. 'augment.local=[{{name: crop_resize, scale: [0.2, 0.5], size: 0.5}}]'.")
    unknown = [name for name in cfg.trainer.loggers if not isinstance(name, str) or name not in LOGGERS]
    if unknown:
        raise ConfigError(f"trainer.loggers: unknown logger {unknown[0]!r}. Choose from: {', '.join(LOGGERS)}, "
                          f"e.g. trainer.loggers=[jsonl, tensorboard].")
    if cfg.search.augmentations is not None and not all(isinstance(n, str) for n in cfg.search.augmentations):
        raise ConfigError("search.augmentations is a list of augmentation names, e.g. "
                          "search.augmentations=[mixup, time_mask], or null for all of the modality's.")
    missing = [k for k in ("data.name", "encoder.name") if OmegaConf.is_missing(cfg, k)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set (e.g. data.name=... on the command line).")


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """A plain dict (for checkpoints, which load with ``weights_only=True``)."""
    return OmegaConf.to_container(cfg, resolve=True)


def data_source(cfg: DictConfig) -> dict[str, Any]:
    """The ``data`` keys that name the items a run reads: the data set's name, then its files
    (``train``, ``test``) where they are given, else the set within it (``set``) where it has one."""
    files = [key for key in ("train", "test") if cfg.data.get(key) is not None]
    keys = files or (["set"] if cfg.data.get("set") is not None else [])
    return {"name": cfg.data.name, **{key: cfg.data[key] for key in keys}}


def describe_data(cfg: DictConfig) -> str:
    """``ucr (set=JapaneseVowels)``: the data a run reads, for logs and reports."""
    source = data_source(cfg)
    name, rest = source.pop("name"), " ".join(f"{key}={value}" for key, value in source.items())
    return f"{name} ({rest})" if rest else str(name)
