"""Evaluation of a frozen encoder: linear probe and weighted kNN on its features h."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import atomic_write_text
from .config import L2_GRID, data_source, load_config
from .data import build_dataset, collate_items, evenly_spaced, labelled
from .errors import CheckpointError, ConfigError, DataError, MMBYOLError, search_folder_hint
from .modalities.base import Modality, build_encoder, get_modality
from .registry import import_plugins
from .runtime import autocast_context, out_of_memory, resolve_device

log = logging.getLogger("mmbyol")


class RawInputEncoder(nn.Module):
    """An encoder with its modality's front end before it: ``features = encoder(batch)`` for a
    batch as the data sets give it (uint8 images, waveforms at the run's sample rate, raw series,
    a list of strings)."""

    def __init__(self, front_end: nn.Module, encoder: nn.Module):
        super().__init__()
        self.front_end, self.encoder = front_end, encoder
        self.metadata = getattr(encoder, "metadata", None)

    def forward(self, batch: Any) -> torch.Tensor:
        return self.encoder(self.front_end(batch))


def load_encoder(run_dir: str | Path, device: str | torch.device = "cpu", raw_input: bool = False) -> nn.Module:
    """The online encoder f_θ exported by a run, in eval mode: ``features = encoder(prepared_batch)``,
    or with ``raw_input=True`` ``encoder(batch)`` from raw inputs (:class:`RawInputEncoder`: audio
    from waveforms, with the run's front end and normalization).
    Its ``metadata`` holds what the export recorded (modality, encoder config, data info, step)."""
    path = Path(run_dir) / "encoder.safetensors"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir} is not a folder: pass the run directory `mmbyol train` printed.")
    run_config_path(Path(run_dir), CheckpointError)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: the run has not finished. Finish it with "
                              f"`mmbyol train run.dir={run_dir} resume=auto`.")
    try:
        with safe_open(str(path), framework="pt") as file:
            meta = json.loads((file.metadata() or {})["mmbyol"])
        state = load_file(str(path))
    except Exception as error:
        raise CheckpointError(
            f"{path} cannot be read ({error}); it is truncated or not an mmbyol encoder. "
            f"Re-export it by resuming the run: mmbyol train run.dir={run_dir} resume=auto."
        ) from None
    import_plugins(meta.get("plugins", []))
    encoder = build_encoder(meta["modality"], meta["encoder"], meta["info"])
    encoder.load_state_dict(state)
    encoder.metadata = meta
    modality = get_modality(meta["modality"])
    encoder = for_inference(encoder, modality, device)
    if not raw_input:
        return encoder
    if modality.front_end is None:
        raise ConfigError(f"modality {meta['modality']} has no front end as a module: its encoder takes prepared "
                          f"batches (load_encoder(run_dir) and the modality's prepare)")
    return RawInputEncoder(modality.front_end(meta["info"]), encoder).to(device).eval()


def for_inference(encoder: nn.Module, modality: Modality, device: str | torch.device) -> nn.Module:
    """The encoder on ``device`` in eval mode, channels-last where the modality wants it."""
    if modality.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder.to(device).eval()


@torch.no_grad()
def extract_features(encoder: nn.Module, dataset, modality: Modality, device: torch.device, batch_size: int,
                     info: dict[str, Any], autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """Features h (float32, on the CPU) and labels of every readable item, in order; ``info`` is
    the training data set's, as the encoder saw it (``encoder.metadata["info"]`` for an export)."""
    encoder.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=partial(collate_items, collate=modality.collate))
    features, labels = [], []
    for inputs, batch_labels, _skipped in loader:
        if inputs is None:
            continue
        with autocast():
            h = encoder(modality.prepare(inputs, device, info))
        features.append(h.float().cpu())
        labels.append(batch_labels)
    return torch.cat(features), torch.cat(labels)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 1000) -> nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS, to convergence."""
    torch.manual_seed(0)
    linear = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), y) + 0.5 * l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return linear


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows whose highest score is their label's."""
    return float((scores.argmax(dim=1) == labels).float().mean())


def _accuracy(linear: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return accuracy(linear(x), y)


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, seed: int = 0, standardize: bool = True,
                 l2_grid: Sequence[float] = L2_GRID) -> tuple[float, float]:
    """Test accuracy of a logistic regression on standardized features (as they are with
    ``standardize=False``, e.g. for sparse TF-IDF rows), its L2 strength chosen from ``l2_grid``
    on held-out training data (5-fold cross-validation for small sets, a 10% split otherwise; none
    for a grid of one). Returns (accuracy, chosen L2)."""
    scores, l2 = probe_scores(train_x, train_y, test_x, num_classes, seed, standardize, l2_grid)
    return accuracy(scores, test_y), l2


def probe_scores(train_x, train_y, test_x, num_classes: int, seed: int = 0, standardize: bool = True,
                 l2_grid: Sequence[float] = L2_GRID) -> tuple[torch.Tensor, float]:
    """The class probabilities :func:`linear_probe`'s logistic regression gives each row of
    ``test_x`` (``(rows, num_classes)``), and its L2."""
    if standardize:
        mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    n = len(train_x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    folds = order.chunk(5) if n < 5000 else [order[: n // 10]]
    l2_grid = [float(v) for v in l2_grid]
    scores = []
    for l2 in l2_grid if len(l2_grid) > 1 else []:
        fold_scores = []
        for held_out in folds:
            keep = torch.ones(n, dtype=torch.bool)
            keep[held_out] = False
            linear = fit_logistic(train_x[keep], train_y[keep], num_classes, l2, max_iter=300)
            fold_scores.append(_accuracy(linear, train_x[held_out], train_y[held_out]))
        scores.append(sum(fold_scores) / len(fold_scores))
    best = max(zip(scores, l2_grid))[1] if scores else l2_grid[0]  # ties: the stronger L2
    linear = fit_logistic(train_x, train_y, num_classes, best)
    with torch.no_grad():
        return linear(test_x).softmax(dim=1), best


def knn_neighbours(k: int, train_size: int, num_classes: int) -> int:
    """The k kNN uses: ``k``, at most the mean class size. More neighbours than a class has would
    vote by class size, not similarity: with k at least the training split (200 against the 50-300
    series of a UCR set) every query gets the same neighbours and, when their similarities are
    close, the same answer."""
    return max(1, min(k, train_size // max(1, num_classes)))


@torch.no_grad()
def knn_scores(train_x, train_y, test_x, num_classes: int, k: int = 200, temperature: float = 0.1) -> torch.Tensor:
    """Weighted kNN on cosine similarity (Wu et al. 2018): the k nearest training features vote
    for their class with weight exp(similarity / temperature). k is at most the mean class size
    (:func:`knn_neighbours`). Returns each query's votes as shares of its total, ``(queries, num_classes)``."""
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    k = knn_neighbours(k, len(train_x), num_classes)
    scores = []
    for start in range(0, len(test_x), 1024):
        similarity, index = (test_x[start : start + 1024] @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(len(index), num_classes).scatter_add_(1, train_y[index], (similarity / temperature).exp())
        scores.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


def knn_accuracy(train_x, train_y, test_x, test_y, num_classes: int, k: int = 200, temperature: float = 0.1) -> float:
    """The accuracy of :func:`knn_scores`' vote."""
    return accuracy(knn_scores(train_x, train_y, test_x, num_classes, k, temperature), test_y)


def wholes(labels: torch.Tensor, origins: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """For items cut from whole examples (``origins``: one per item, the series of a window): each
    item's whole, numbered in order of first appearance, and each whole's label, which its items share."""
    index = {origin: i for i, origin in enumerate(dict.fromkeys(origins))}
    which = torch.tensor([index[origin] for origin in origins], dtype=torch.long)
    whole_labels = torch.zeros(len(index), dtype=labels.dtype).scatter_(0, which, labels)
    if not torch.equal(whole_labels[which], labels):
        raise DataError("Items cut from one whole example carry different labels; a whole example's items share its "
                        "label (cut a recording whose label changes into series of one label each).")
    return which, whole_labels


def whole_accuracy(scores: torch.Tensor, labels: torch.Tensor, origins: Sequence[Any]) -> float:
    """Accuracy over the whole examples that items were cut from, each predicted by the mean of its
    items' ``scores``: a soft vote, in which every item has one say."""
    return _vote_accuracy(scores, *wholes(labels, origins))


def _vote_accuracy(scores: torch.Tensor, which: torch.Tensor, whole_labels: torch.Tensor) -> float:
    """:func:`whole_accuracy` for wholes already found by :func:`wholes`."""
    return accuracy(torch.zeros(len(whole_labels), scores.shape[1]).index_add_(0, which, scores.float()), whole_labels)


def require_examples(labels: torch.Tensor, per_class: int, classes: Sequence[str] | None = None,
                     examples: str = "training examples") -> None:
    """A :class:`DataError` naming the smallest class when it has fewer than ``per_class`` examples
    (by its name where ``classes`` are given; ``examples`` says what is counted)."""
    present, counts = labels.unique(return_counts=True)
    if len(counts) and counts.min() < per_class:
        label, count = int(present[counts.argmin()]), int(counts.min())
        name = repr(classes[label]) if classes is not None and 0 <= label < len(classes) else str(label)
        raise DataError(f"Class {name} has only {count} {examples}, fewer than eval.labels_per_class="
                        f"{per_class}. Set eval.labels_per_class={count} or less, or leave it unset for the probe "
                        f"with all labels and kNN alone.")


def few_labels(labels: torch.Tensor, per_class: int, seed: int, origins: Sequence[Any] | None = None) -> torch.Tensor:
    """Indices of ``per_class`` examples of each class, drawn with a fixed seed; with ``origins``
    (items cut from whole examples, :func:`wholes`), of every item of ``per_class`` whole examples
    of each class: a label is given to a whole recording, not to a window of it."""
    if origins is not None:
        which, whole_labels = wholes(labels, origins)
        return torch.isin(which, few_labels(whole_labels, per_class, seed)).nonzero().squeeze(1)
    require_examples(labels, per_class)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen)


def few_label_probes(train_x, train_y, test_x, test_y, num_classes: int, per_class: int, draws: int,
                     seed: int = 0, standardize: bool = True, l2_grid: Sequence[float] = L2_GRID) -> list[float]:
    """Test accuracies of the linear probe trained on ``per_class`` labelled examples of each
    class, one per draw of those examples (draw i uses seed ``seed + i``). Which few examples are
    labelled moves the accuracy by several points (docs/experiments.md), so one draw cannot rank
    two encoders; the mean of several can."""
    return [accuracy(scores, test_y) for scores in few_label_scores(
        train_x, train_y, test_x, num_classes, per_class, draws, seed, standardize, l2_grid)]


def few_label_scores(train_x, train_y, test_x, num_classes: int, per_class: int, draws: int, seed: int = 0,
                     standardize: bool = True, l2_grid: Sequence[float] = L2_GRID,
                     origins: Sequence[Any] | None = None) -> list[torch.Tensor]:
    """The class probabilities :func:`few_label_probes`' probes give ``test_x``, one tensor per draw
    (with ``origins``, the training items' wholes, each draw labels whole examples: :func:`few_labels`)."""
    if draws < 1:
        raise ConfigError(f"eval.label_draws must be at least 1; got {draws}.")
    scores = []
    for draw in range(seed, seed + draws):
        subset = few_labels(train_y, per_class, draw, origins)
        scores.append(probe_scores(train_x[subset], train_y[subset], test_x, num_classes, draw, standardize,
                                   l2_grid)[0])
    return scores


class RunFeatures(NamedTuple):
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    step: int
    train_set: Any
    test_set: Any


def run_features(cfg: DictConfig, run_dir: Path) -> RunFeatures:
    """Features and labels of the training and test sets as :func:`evaluate` takes them, from the
    run's encoder (or, with ``eval.init=random``, an untrained one of the same config), with the
    step it was taken at and the two data sets."""
    modality = get_modality(cfg.modality)
    device = resolve_device(cfg.device)
    train_set, test_set = labelled(build_dataset(cfg, "train")), build_dataset(cfg, "test")
    if cfg.eval.test_limit is not None:
        test_set = evenly_spaced(test_set, cfg.eval.test_limit)
    if cfg.eval.init == "random":
        torch.manual_seed(cfg.seed)  # the very initialization the run started from
        info = train_set.info
        encoder = for_inference(build_encoder(cfg.modality, cfg.encoder, info), modality, device)
        step = 0
    else:
        encoder = load_encoder(run_dir, device)
        info, step = encoder.metadata["info"], encoder.metadata["step"]
    autocast = autocast_context(cfg.trainer.precision, device)
    try:
        train_x, train_y = extract_features(encoder, train_set, modality, device, cfg.eval.batch_size, info, autocast)
        test_x, test_y = extract_features(encoder, test_set, modality, device, cfg.eval.batch_size, info, autocast)
    except torch.OutOfMemoryError as error:
        raise out_of_memory(error, device, "computing the features",
                            f"eval.batch_size (now {cfg.eval.batch_size})") from error
    if (train_y < 0).all():
        raise DataError(f"The training split of {cfg.data.name!r} has no labels; evaluation needs a labelled data set.")
    return RunFeatures(train_x, train_y, test_x, test_y, step, train_set, test_set)


def origins_of(dataset, rows: int) -> list[Any] | None:
    """The data set's ``origins`` (the whole example each item was cut from), or None where it has
    none or where unreadable items left fewer feature rows than items, which cannot then be matched."""
    origins = getattr(dataset, "origins", None)
    if origins is not None and len(origins) != rows:
        log.warning("%d items could not be read: no measures over whole examples, whose items' rows cannot be matched "
                    "to them.", len(origins) - rows)
        return None
    return origins


def probe_metrics(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                  eval_cfg: DictConfig, classes: Sequence[str] | None = None,
                  train_origins: Sequence[Any] | None = None,
                  test_origins: Sequence[Any] | None = None) -> dict[str, Any]:
    """The evaluation protocol on any frozen features (an encoder's, or a baseline's): the linear
    probe with all labels, weighted kNN, and with ``labels_per_class`` the probe on that many
    labels per class (the mean over ``label_draws`` draws); ``protocol`` describes it. ``classes``
    name the labels in errors. For items cut from whole examples (origins: one per item, a
    window's series), the few labels go to whole training examples (``train_origins``) and each
    measure is also taken over the whole test examples (``test_origins``; ``…_whole``,
    :func:`whole_accuracy`)."""
    n = eval_cfg.labels_per_class
    if n is not None:  # said before the probe with all labels, not after it
        if train_origins is None:
            require_examples(train_y, n, classes)
        else:  # the labels go to whole examples, so they are what is counted
            require_examples(wholes(train_y, train_origins)[1], n, classes,
                             "whole training examples (the series, or stretches of one label, items were cut from)")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    grid = list(eval_cfg.l2_grid)
    linear, l2 = probe_scores(train_x, train_y, test_x, num_classes, eval_cfg.seed, l2_grid=grid)
    scores = {"linear_acc": [linear],
              "knn_acc": [knn_scores(train_x, train_y, test_x, num_classes, eval_cfg.knn_k, eval_cfg.knn_temperature)]}
    if n is not None:
        scores[f"linear_acc_{n}"] = few_label_scores(train_x, train_y, test_x, num_classes, n, eval_cfg.label_draws,
                                                     eval_cfg.seed, l2_grid=grid, origins=train_origins)
    result: dict[str, Any] = {}
    for name, draws in scores.items():
        accuracies = [accuracy(s, test_y) for s in draws]
        result[name] = round(sum(accuracies) / len(accuracies), 4)
        if name == f"linear_acc_{n}":
            result[f"{name}_draws"] = [round(a, 4) for a in accuracies]
    test_wholes = wholes(test_y, test_origins) if test_origins is not None else None  # found once for every measure
    if test_wholes is not None:
        for name, draws in scores.items():
            result[f"{name}_whole"] = round(sum(_vote_accuracy(s, *test_wholes) for s in draws) / len(draws), 4)
    result["protocol"] = {
        "linear": "logistic regression on standardized frozen features, L-BFGS to convergence, " + (
            f"L2 chosen on held-out training data from {grid} (chose {l2:g})" if len(grid) > 1 else f"L2 {l2:g}"),
        "knn": f"weighted kNN, cosine, k={knn_neighbours(eval_cfg.knn_k, len(train_x), num_classes)}, "
               f"temperature={eval_cfg.knn_temperature}",
        "labels_per_class": n,
        "label_draws": eval_cfg.label_draws if n is not None else None,
        "seed": eval_cfg.seed,
    }
    if test_wholes is not None:
        result["protocol"]["whole"] = (f"each of the {len(test_wholes[1])} whole examples the test items were cut "
                                       f"from, predicted by the mean of its items' class probabilities (kNN: their "
                                       f"vote shares)")
    if train_origins is not None and n is not None:
        result["protocol"]["labels_per_class"] = f"{n} whole examples a class, all their items labelled"
    return result


def evaluate(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Evaluate the run's encoder (or, with ``eval.init=random``, an untrained one of the same
    config) and write ``eval.json`` (``eval-random.json``)."""
    started = time.perf_counter()
    train_x, train_y, test_x, test_y, step, train_set, test_set = run_features(cfg, run_dir)
    n, l2_choices = cfg.eval.labels_per_class, len(cfg.eval.l2_grid)
    log.info("features of %d training and %d test items in %.1f s (%s encoder, step %d); now the linear probe%s, "
             "kNN%s", len(train_x), len(test_x), time.perf_counter() - started,
             "the untrained" if cfg.eval.init == "random" else "the run's", step,
             f" (its L2 chosen among {l2_choices})" if l2_choices > 1 else "",
             f" and {cfg.eval.label_draws} draws of {n} labels per class" if n is not None else "")
    train_origins, origins = origins_of(train_set, len(train_x)), origins_of(test_set, len(test_x))
    metrics = probe_metrics(train_x, train_y, test_x, test_y, cfg.eval, getattr(test_set, "classes", None),
                            train_origins, origins)
    protocol = metrics.pop("protocol")
    result: dict[str, Any] = {
        **metrics,
        "init": cfg.eval.init,
        "step": step,
        "data": data_source(cfg),  # the set or the files too: eval.json files of several runs say which is which
        "n_train": len(train_x),
        "n_test": len(test_x),
        **({"n_test_whole": len(set(origins))} if origins is not None else {}),
        "feature_dim": train_x.shape[1],
        "protocol": protocol,
        "seconds": round(time.perf_counter() - started, 1),
    }
    name = "eval.json" if cfg.eval.init == "trained" else "eval-random.json"
    atomic_write_text(run_dir / name, json.dumps(result, indent=2) + "\n")
    return result


def run_config_path(run_dir: Path, error: type[MMBYOLError]) -> Path:
    """``RUN_DIR/config.yaml``, or ``error`` saying the folder is no run directory (and, for the
    folder of ``mmbyol search``, what to do with it instead)."""
    path = run_dir / "config.yaml"
    if not path.exists():
        raise error(f"{run_dir} is not a run directory (no config.yaml). Pass the folder `mmbyol train` printed."
                    + search_folder_hint(run_dir))
    return path


def load_eval_config(run_dir: Path, overrides: Sequence[str]) -> DictConfig:
    """The run's saved config refined by ``overrides`` (``init=random`` is short for ``eval.init=random``)."""
    path = run_config_path(run_dir, DataError)
    overrides = [f"eval.{o}" if o.startswith("init=") else o for o in overrides]
    return load_config(overrides, base=OmegaConf.to_container(OmegaConf.load(path)))
