"""Training: :func:`setup` makes a run ready, :func:`train_loop` runs it, top to bottom.

:func:`build_training` builds the parts of a step (model, views, optimizer with the
batch-scaled learning rate, schedules, random streams, precision) for the loop and for the
benchmarks alike, so the two cannot drift apart. The run directory's layout is in
docs/design.md.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import distributed
from .augment import ViewPair, build_views
from .byol import BYOL, SimCLR, Supervised
from .checkpoint import (
    atomic_write_text,
    checkpoint_path,
    export_encoder,
    open_run,
    rank_seed,
    rank_state,
    restore_rank_state,
    resume_run_dir,
    save_checkpoint,
    unwrap,
)
from .config import describe_data, load_config, to_container
from .data import SkipCount, build_dataset, make_loader, prepare_views
from .distributed import ONE_PROCESS, Ranks
from .errors import ConfigError, DataError, Stopped, TrainingDiverged
from .metrics import TrainingLog
from .modalities.base import DataSet, Modality, build_encoder, get_modality
from .monitor import Monitor, build_monitor, monitor_every
from .optim import build_optimizer
from .runtime import InterruptFlag, autocast_context, native_bf16, out_of_memory, resolve_device, resolve_precision
from .schedules import lr_schedule, tau_schedule

log = logging.getLogger("mmbyol")

OnMonitor = Callable[[int, dict[str, float]], None]


# --------------------------------------------------------------------------- the parts


def build_model(cfg: DictConfig, encoder: nn.Module, num_classes: int = 0) -> nn.Module:
    """The model of ``cfg.objective``; ``num_classes`` is read by ``objective=supervised`` only."""
    if cfg.objective == "supervised":
        if num_classes < 2:
            raise DataError(f"objective=supervised needs a labelled data set with at least two classes; "
                            f"{cfg.data.name!r} has {num_classes}. Use a labelled data set or objective=byol.")
        return Supervised(encoder, encoder.out_dim, num_classes)
    if cfg.objective == "infonce":
        return SimCLR(encoder, encoder.out_dim, cfg.model.hidden_dim, cfg.model.projection_dim,
                      temperature=cfg.model.temperature)
    return BYOL(encoder, encoder.out_dim, cfg.model.hidden_dim, cfg.model.projection_dim)


@dataclass
class Training:
    """The parts of a training run. ``model`` is what a step runs (in DDP under ``torchrun``,
    compiled with ``trainer.compile``); ``step`` is where a resumed run starts."""

    cfg: DictConfig
    modality: Modality
    dataset: DataSet
    info: dict[str, Any]
    device: torch.device
    model: nn.Module
    views: ViewPair
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the augmentations' random stream
    autocast: Any  # a context manager factory
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    base_lr: float  # optim.lr scaled by batch_size / 256 (BYOL §3.3)
    step: int = 0

    def lr(self, step: int) -> float:
        return lr_schedule(step, self.total_steps, self.base_lr, self.warmup_steps)

    def tau(self, step: int) -> float:
        return tau_schedule(step, self.total_steps, self.cfg.model.tau_base)


def build_training(cfg: DictConfig, device: torch.device, dataset: DataSet, info: dict[str, Any],
                   ranks: Ranks = ONE_PROCESS, state: dict[str, Any] | None = None) -> Training:
    """The parts of a step for ``cfg`` on ``device``, as a fresh run has them, or as checkpoint
    ``state`` left them. The encoder and heads draw their initial weights from the global RNG."""
    modality = get_modality(cfg.modality)
    batch_size = cfg.data.batch_size
    steps_per_epoch = len(dataset) // batch_size
    total_steps = cfg.trainer.max_steps or cfg.trainer.epochs * steps_per_epoch
    base_lr = cfg.optim.lr * batch_size / 256

    encoder = build_encoder(cfg.modality, cfg.encoder, info)
    model = build_model(cfg, encoder, len(getattr(dataset, "classes", []))).to(device)
    if modality.channels_last:  # faster convolutions on CUDA and on CPU (oneDNN) alike
        model = model.to(memory_format=torch.channels_last)
    augment = to_container(cfg.augment)
    local_views = augment["local_views"] if cfg.objective == "byol" else 0
    if augment["local_views"] and not local_views and ranks.rank == 0:
        log.info("objective=%s trains on the two views: augment.local_views, BYOL's multi-crop, is left out",
                 cfg.objective)
    views = build_views(cfg.modality, augment["view1"], augment["view2"], augment["local"], local_views).to(device)
    optim = cfg.optim
    optimizer = build_optimizer(optim.name, model, base_lr, optim.weight_decay, optim.momentum,
                                optim.trust_coefficient, optim.predictor_lr_scale, optim.trust_clip,
                                optim.encoder_lr_scale)
    generator = torch.Generator(device=device).manual_seed(rank_seed(cfg.seed, ranks.rank))
    if ranks.rank:
        torch.manual_seed(rank_seed(cfg.seed, ranks.rank))  # dropout masks differ between ranks
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        restore_rank_state(state, ranks, cfg.seed, views, generator, device)
    model = distributed.wrap(model, ranks, device)
    if cfg.trainer.compile:
        model = torch.compile(model)
    return Training(cfg, modality, dataset, info, device, model, views, optimizer, generator,
                    autocast_context(cfg.trainer.precision, device), steps_per_epoch, total_steps,
                    min(round(cfg.optim.warmup_epochs * steps_per_epoch), total_steps), base_lr, step)


# -------------------------------------------------------------------------------- a step


def model_step(model: nn.Module, optimizer: torch.optim.Optimizer, view1, view2, lr: float, tau: float, autocast,
               labels: torch.Tensor | None = None,
               local_views: Sequence = ()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The step on two augmented views (and any local ones): the loss, the optimizer step at
    ``lr``, the target update at ``tau`` (``labels`` only for ``objective=supervised``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    local = {"local_views": local_views} if local_views else {}  # only BYOL takes them
    with autocast():
        loss, outputs = model(view1, view2, labels=labels, return_outputs=True, **local)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    unwrap(model).update_target(tau)
    return loss.detach(), outputs


def train_step(t: Training, x1, x2, lr: float, tau: float, labels: torch.Tensor | None = None):
    """One training step from the views' prepared inputs: the two augmented views and the local
    ones (``augment.local_views``, from ``x1``), then :func:`model_step`."""
    view1, view2 = t.views(x1, x2, t.generator)
    local_views = t.views.make_local(x1, t.generator)
    return model_step(t.model, t.optimizer, view1, view2, lr, tau, t.autocast, labels, local_views)


# -------------------------------------------------------------------------------- set-up


def load_train_config(overrides: Sequence[str]) -> DictConfig:
    """The config of ``mmbyol train``. With ``resume=auto`` and an existing run, the run's saved
    config is the base and the command line refines it, so a resumed run keeps its settings."""
    cfg = load_config(overrides)
    if cfg.resume != "auto":
        return cfg
    run_dir = resume_run_dir(cfg)
    if run_dir is None or not (run_dir / "config.yaml").exists():
        return cfg
    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    saved["run"]["dir"] = str(run_dir)
    return load_config(overrides, base=saved)


def setup(cfg: DictConfig, ranks: Ranks, device: torch.device,
          dataset: DataSet | None = None) -> tuple[Training, Path, bool]:
    """The run directory, made ready, and the training parts: ``(training, run_dir, resumed)``.
    Rank 0 decides where the run lives and reads the checkpoint; the others get both from it
    (several machines need not share a file system). ``dataset``: the training split, if built."""
    run_dir, state = distributed.broadcast(open_run(cfg) if ranks.main else None, ranks)
    cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
    cfg.run.dir = str(run_dir)

    torch.manual_seed(cfg.seed)
    if ranks.local_rank != 0:
        distributed.barrier(ranks)  # one process per machine prepares a missing data set
    if dataset is None:
        dataset = build_dataset(cfg, "train")
    if ranks.local_rank == 0:
        distributed.barrier(ranks)
    batch_size = cfg.data.batch_size
    if len(dataset) < batch_size:
        raise DataError(f"The training set has {len(dataset)} item{'' if len(dataset) == 1 else 's'}, fewer than "
                        f"data.batch_size={batch_size}. Lower data.batch_size or add data.")
    if batch_size % ranks.world:
        raise ConfigError(f"data.batch_size={batch_size} is the global batch and must split evenly over the "
                          f"{ranks.world} processes; use a multiple of {ranks.world}.")
    info = state["info"] if state is not None else dataset.info  # a resumed run keeps its statistics
    t = build_training(cfg, device, dataset, info, ranks, state)
    if state is not None:
        log.info("resuming %s from step %d of %d", run_dir, t.step, t.total_steps)
    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))  # a resume rewrites it
    log.info("training %s/%s on %s%s in %s: %d items, %d steps of %d (%d per epoch) → %s",
             cfg.modality, describe_data(cfg), device, f" × {ranks.world} processes" if ranks.distributed else "",
             resolve_precision(cfg.trainer.precision, device), len(dataset), t.total_steps, batch_size,
             t.steps_per_epoch, run_dir)
    return t, run_dir, state is not None


def train(cfg: DictConfig, dataset: DataSet | None = None, monitor: Monitor | None = None,
          on_monitor: OnMonitor | None = None) -> Path:
    """Train as configured; returns the run directory. Under ``torchrun`` every process calls
    this, each training on its slice of the global batch. ``mmbyol search`` runs many short
    trainings on one data set and passes what they share: ``dataset``, the training split, and
    ``monitor``, one built on it; ``on_monitor(step, measurement)`` is called at each of the
    monitor's measurements after step 0."""
    ranks = distributed.launched_ranks()
    device = resolve_device(cfg.device, ranks)
    distributed.init(ranks, device)
    try:
        t, run_dir, resumed = setup(cfg, ranks, device, dataset)
        if monitor is None and ranks.main:
            monitor = build_monitor(t.cfg, t.dataset, t.modality, t.info, device, t.autocast)
        step = train_loop(t, run_dir, resumed, ranks, monitor if ranks.main else None, on_monitor)
        if ranks.main:
            export_encoder(run_dir / "encoder.safetensors", t.cfg, unwrap(t.model).online_encoder, t.info, step)
        log.info("done: %d steps; encoder exported to %s", step, run_dir / "encoder.safetensors")
        distributed.barrier(ranks)
        return run_dir
    except BaseException as error:
        if ranks.distributed:  # the frames of a failed step hold the model too
            traceback.clear_frames(error.__traceback__)
        if isinstance(error, torch.OutOfMemoryError):
            raise memory_advice(error, cfg, device, ranks) from error
        raise
    finally:
        t = None  # the DDP model goes before its process group: see distributed.close
        distributed.close(ranks)


def memory_advice(error: torch.OutOfMemoryError, cfg: DictConfig, device: torch.device, ranks: Ranks) -> ConfigError:
    """What to lower when training ran out of device memory, and how the run goes on."""
    per_process = f", {cfg.data.batch_size // ranks.world} per process" if ranks.distributed else ""
    bf16 = (" or use trainer.precision=bf16," if resolve_precision(cfg.trainer.precision, device) == "fp32"
            and native_bf16(device) else "")
    return out_of_memory(error, device, "while training",
                         f"data.batch_size (now {cfg.data.batch_size}{per_process}),{bf16} and train into a new "
                         f"run.dir; if other processes held the memory, resume=auto continues from the last checkpoint")


# ---------------------------------------------------------------------------------- loop


def train_loop(t: Training, run_dir: Path, resumed: bool, ranks: Ranks = ONE_PROCESS, monitor: Monitor | None = None,
               on_monitor: OnMonitor | None = None) -> int:
    """Train from ``t.step`` to ``t.total_steps``, saving a checkpoint every
    ``trainer.checkpoint_every`` steps, at each epoch's end, at the last step and on Ctrl-C, and
    measuring the encoder with ``monitor`` (main process only) at step 0 and every
    ``trainer.monitor_every`` steps; returns the number of steps done."""
    cfg, step, skips = t.cfg, t.step, SkipCount()
    report = TrainingLog(run_dir, step, t.total_steps, cfg.trainer.log_every, resumed, ranks.main,
                         cfg.trainer.progress, cfg.trainer.loggers)
    every = monitor_every(cfg, t.total_steps) if monitor is not None else 0
    encoder = unwrap(t.model).online_encoder
    started, monitor_seconds = time.perf_counter(), monitor.seconds if every else 0.0
    with InterruptFlag() as interrupt, report:
        if every and resumed:
            monitor.restore(run_dir / "metrics.jsonl")
        elif every:
            report.start(monitor.record(0, t.total_steps, encoder))
        while step < t.total_steps:
            epoch, start = divmod(step, t.steps_per_epoch)
            for inputs, labels, skipped in make_loader(t.dataset, t.modality, cfg, epoch, start, t.device, ranks):
                if ranks.distributed:  # every rank must take the step, or none
                    skipped, empty = distributed.sum_over_ranks([skipped, inputs is None], ranks, t.device)
                    skipped, inputs = int(skipped), None if empty else inputs
                skips.add(skipped, cfg.data.batch_size, step)
                lr, tau = t.lr(step), t.tau(step)
                if inputs is None:  # not one readable item in the batch
                    step += 1
                    continue
                x1, x2 = prepare_views(t.modality, inputs, t.device, t.info)
                loss, outputs = train_step(t, x1, x2, lr, tau, supervised_labels(cfg, labels, t.device))
                # the mean loss over ranks; a stop signal seen by any rank stops them all at this step. They
                # decide on the sum alone: a signal that lands after it stops them all at the next step.
                loss_sum, stop = distributed.sum_over_ranks([float(loss), interrupt.requested], ranks, t.device)
                loss, stopping = loss_sum / ranks.world, bool(stop)
                step += 1
                check_finite(loss, step, epoch, cfg, run_dir)
                measured = None
                if every and (step % every == 0 or step == t.total_steps):
                    measured = monitor.record(step, t.total_steps, encoder)
                report.step(step, epoch, loss, len(labels) * ranks.world, tau, lr, outputs, skips.total, measured)
                if measured is not None and on_monitor is not None:
                    on_monitor(step, measured)
                if (step % cfg.trainer.checkpoint_every == 0 or step % t.steps_per_epoch == 0
                        or step == t.total_steps or stopping):
                    save(t, run_dir, step, ranks)
                if stopping:
                    log.warning("interrupted at step %d; checkpoint saved to %s. Continue with: "
                                "mmbyol train run.dir=%s resume=auto", step, checkpoint_path(run_dir), run_dir)
                    # a rank stopped by another's signal exits as if sent SIGTERM
                    raise Stopped(interrupt.signum or signal.SIGTERM)
                if step >= t.total_steps:
                    break
    if skips.total:
        log.warning("%d unreadable item(s) were skipped in total", skips.total)
    if every:
        spent, elapsed = monitor.seconds - monitor_seconds, time.perf_counter() - started
        log.info("monitor: %.1f s of the run's %.1f s (%.1f%%)", spent, elapsed, 100 * spent / max(elapsed, 1e-9))
    return step


def supervised_labels(cfg: DictConfig, labels: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The batch labels on the device for ``objective=supervised``; ``None`` for the others."""
    if cfg.objective != "supervised":
        return None
    if (labels < 0).any():
        raise DataError(f"objective=supervised met unlabelled items in {cfg.data.name!r}; "
                        f"it needs every training item labelled.")
    return labels.to(device, non_blocking=True)


def check_finite(loss: float, step: int, epoch: int, cfg: DictConfig, run_dir: Path) -> None:
    """Stop a run whose loss became NaN or infinite; the last good checkpoint stays."""
    if math.isfinite(loss):
        return
    last = checkpoint_path(run_dir)
    kept = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
    raise TrainingDiverged(
        f"The loss became {loss} at step {step} (epoch {epoch}); the run is stopped and {kept}. Lower optim.lr "
        f"(now {cfg.optim.lr}) or use trainer.precision=fp32, then continue with: "
        f"mmbyol train run.dir={run_dir} resume=auto optim.lr=..."
    )


def save(t: Training, run_dir: Path, step: int, ranks: Ranks) -> None:
    """A checkpoint of every rank's state, written by rank 0, once the ranks agree on the weights."""
    distributed.check_in_step(t.model, ranks, step)
    states = distributed.gather(rank_state(t.views, t.generator, t.device), ranks)
    if ranks.main:
        save_checkpoint(checkpoint_path(run_dir), t.cfg, step, t.model, t.optimizer, states, t.info)
