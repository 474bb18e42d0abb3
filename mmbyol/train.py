"""The training loop: one plain loop a reader can follow, a function per concern."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from . import distributed
from .augment import ViewPair, build_views
from .byol import BYOL, SimCLR, Supervised
from .config import load_config, to_container
from .distributed import ONE_PROCESS, Ranks
from .errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from .modalities.base import Modality, build_dataset, build_encoder, collate_items, get_modality
from .optim import build_optimizer
from .schedules import lr_schedule, tau_schedule

log = logging.getLogger("mmbyol")

CHECKPOINT_FORMAT = 1


# ---------------------------------------------------------------------------- set-up


def resolve_device(name: str, ranks: Ranks = ONE_PROCESS) -> torch.device:
    """The device of ``device=NAME``; under ``torchrun`` each process takes ``cuda:LOCAL_RANK``.
    A CPU device also sets the process up to compute on it (:func:`keep_freed_memory`)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device={name} but CUDA is not available here; use device=cpu or device=auto.")
    if device.type == "cuda" and ranks.distributed:
        if device.index is not None:
            raise ConfigError(f"device={name} under torchrun: each process takes the GPU of its local rank; "
                              f"use device=cuda (or auto), and CUDA_VISIBLE_DEVICES to choose the GPUs.")
        if ranks.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"torchrun started {ranks.local_world} processes on this machine, which has "
                              f"{torch.cuda.device_count()} GPU(s): use --nproc_per_node={torch.cuda.device_count()}.")
        device = torch.device("cuda", ranks.local_rank)
    keep_freed_memory(device)
    return device


def keep_freed_memory(device: torch.device) -> bool:
    """For a CPU run on Linux: keep the memory that tensors free in the process heap, for the
    next step to reuse, instead of handing it back to the kernel. glibc maps every block over
    32 MB (the audio CNN's first activations at batch 64 are 50 MB) afresh and unmaps it when
    freed, so each step page-faults it all in again. The setting is process-wide, made once;
    False where there is no glibc. Measured in README "Results" (the AVX2 machine)."""
    return device.type == "cpu" and sys.platform.startswith("linux") and _glibc_keep_freed_memory()


@functools.cache
def _glibc_keep_freed_memory() -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def default_run_dir(modality: str) -> Path:
    return Path("runs") / f"{modality}-{datetime.now():%Y%m%d-%H%M%S}"


def latest_run_dir(modality: str) -> Path | None:
    """The newest ``runs/<modality>-*`` that holds a checkpoint (for ``resume=auto`` without ``run.dir``)."""
    candidates = [p.parent.parent for p in Path("runs").glob(f"{modality}-*/checkpoints/last.pt")]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def resume_run_dir(cfg: DictConfig) -> Path | None:
    """``run.dir`` when set; else, with ``resume=auto``, the newest run of the modality."""
    if cfg.run.dir:
        return Path(cfg.run.dir)
    return latest_run_dir(cfg.modality) if cfg.resume == "auto" else None


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


class EpochBatches(Sampler):
    """Batches of one epoch: a permutation fixed by (seed, epoch), so a resumed run sees the
    same batches; ``start`` skips the batches already trained on. The last partial batch is
    dropped (BatchNorm needs full batches). Under ``torchrun`` rank r of w takes the r-th of w
    equal slices of every global batch of ``batch_size``: the global batches, and so a run's
    course, do not depend on the number of processes, and a run resumes on any number."""

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, start: int = 0, ranks: Ranks = ONE_PROCESS):
        self.size, self.batch_size, self.seed, self.epoch, self.start = size, batch_size, seed, epoch, start
        self.batches = size // batch_size
        self.local = batch_size // ranks.world
        self.offset = ranks.rank * self.local

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[: self.batches * self.batch_size]
        batches = order.view(self.batches, self.batch_size)[self.start :, self.offset : self.offset + self.local]
        yield from batches.tolist()

    def __len__(self) -> int:
        return self.batches - self.start


def loader_workers(cfg: DictConfig, device: torch.device, ranks: Ranks = ONE_PROCESS) -> int:
    """``data.num_workers``, or by default: none on CPU (workers would take the cores the step
    needs), and on CUDA up to 8 per process, so decoding and collation never starve the GPU."""
    if cfg.data.num_workers is not None:
        return cfg.data.num_workers
    if device.type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) // ranks.local_world - 1))


def make_loader(dataset, modality: Modality, cfg: DictConfig, epoch: int, start: int, device: torch.device,
                ranks: Ranks = ONE_PROCESS):
    """The batches of ``epoch`` from batch ``start`` on (this rank's slices of them). A data set
    with random per-item choices (e.g. the position of an audio crop) has ``set_epoch``, as
    samplers do in PyTorch: its draws then depend on (seed, epoch, index) only, so a resumed run
    reads the very same items."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    workers = loader_workers(cfg, device, ranks)
    return DataLoader(
        dataset,
        batch_sampler=EpochBatches(len(dataset), cfg.data.batch_size, cfg.seed, epoch, start, ranks),
        collate_fn=partial(collate_items, collate=modality.collate),
        num_workers=workers,
        # its own generator: making a loader must not draw from the global RNG (dropout uses it),
        # or a run resumed mid-epoch would drift from the straight one
        generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch),
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Other CPUs emulate bf16, and autocast there is several times slower than
    fp32 (the audio step: 7× on a 2-core AVX2 EPYC, measured), not faster."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":  # torch.cpu's probes are private: a torch without them counts as no
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``trainer.precision`` as run: ``auto`` is bf16 where the device has it natively, else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast_context(cfg: DictConfig, device: torch.device):
    if resolve_precision(cfg.trainer.precision, device) == "bf16":
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


# ------------------------------------------------------------------------ checkpoints


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        else:
            return module


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, flushed to disk, then renamed: never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        torch.save(obj, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, modality: str | None = None) -> dict[str, Any]:
    """A checkpoint, loaded with ``weights_only=True`` (plain containers and tensors only)."""
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}. Use resume=auto to start fresh when none exists.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"Checkpoint {path} cannot be loaded ({reason[:300]}). It is truncated, corrupted, or not "
            f"an mmbyol checkpoint (mmbyol only loads plain tensors and containers, never pickled code). "
            f"Delete it to start the run over, or pass resume=PATH with another checkpoint."
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an mmbyol checkpoint (format {CHECKPOINT_FORMAT}).")
    saved_modality = state["config"]["modality"]
    if modality is not None and saved_modality != modality:
        raise CheckpointError(f"{path} is a checkpoint of a {saved_modality} run, but this run is {modality}. "
                              f"Use a fresh run.dir, or modality={saved_modality}.")
    return state


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s random streams (``seed`` itself for rank 0 of a fresh run)."""
    return seed + 1_000_003 * rank + 7_919 * step


def rank_state(views, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """What differs between ranks: the augmentations' state (e.g. a mixup memory) and the RNGs."""
    return {
        "views": {k: v.cpu() for k, v in views.state_dict().items()},
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
            "augment": generator.get_state(),
        },
    }


def restore_rank_state(state: dict[str, Any], ranks: Ranks, cfg: DictConfig, views, generator, device) -> None:
    """Each rank takes back its own augmentation state and random streams. A rank the saving run
    did not have (it ran on fewer processes) takes rank 0's augmentation state and fresh streams."""
    saved = [{"views": state["views"], "rng": state["rng"]}, *state.get("ranks", [])]
    if ranks.main and len(saved) != ranks.world:
        log.warning("the checkpoint was saved by %d process(es) and resumes on %d: the run goes on with the same "
                    "global batches, but its augmentation draws differ from an uninterrupted run's",
                    len(saved), ranks.world)
    own = saved[ranks.rank] if ranks.rank < len(saved) else None
    views.load_state_dict((own or saved[0])["views"])
    try:
        if own is None:
            raise ValueError("no saved streams")
        torch.set_rng_state(own["rng"]["torch"])
        if own["rng"]["cuda"] and device.type == "cuda":
            torch.cuda.set_rng_state(own["rng"]["cuda"][0], device)
        generator.set_state(own["rng"]["augment"])
    except (ValueError, RuntimeError):  # no streams for this rank, or saved on another device type
        seed = rank_seed(cfg.seed, ranks.rank, state["step"])
        torch.manual_seed(seed)
        generator.manual_seed(seed)
        if own is not None:
            log.warning("rank %d resumes with fresh random streams: the checkpoint's were saved on another device "
                        "type; the run goes on, not bit-identical to an uninterrupted one", ranks.rank)


def save_checkpoint(path: Path, cfg: DictConfig, step: int, model, optimizer, states: list[dict[str, Any]],
                    info) -> None:
    """``states``: :func:`rank_state` of every rank, in rank order (one entry in one process)."""
    atomic_save({
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": {},  # bf16 autocast needs no loss scaling; kept for the documented layout
        "views": states[0]["views"],  # stateful augmentations (e.g. a mixup memory), rank 0's
        "rng": states[0]["rng"],
        "ranks": states[1:],  # the same for ranks 1, 2, … of a torchrun run
        "config": to_container(cfg),
        "info": info,
    }, path)


def export_encoder(path: Path, cfg: DictConfig, encoder: nn.Module, info: dict, step: int) -> None:
    """The online encoder f_θ as safetensors, with what :func:`mmbyol.load_encoder` needs to rebuild it."""
    state = {k: v.detach().cpu().contiguous() for k, v in unwrap(encoder).state_dict().items()}
    metadata = {"mmbyol": json.dumps({
        "modality": cfg.modality,
        "encoder": OmegaConf.to_container(cfg.encoder),
        "info": info,
        "plugins": list(cfg.plugins),
        "step": step,
    })}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- metrics


@torch.no_grad()
def effective_rank(features: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalized singular values."""
    singular = torch.linalg.svdvals(features.float())
    p = singular / singular.sum().clamp_min(1e-12) + 1e-7
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def projection_std(z: torch.Tensor) -> float:
    """Std over the batch of l2-normalized projections: ≈ 1/√d when healthy, → 0 when collapsed."""
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())


def collapsed(z_std: float, rank: float, dim: int) -> bool:
    return z_std < 0.2 / math.sqrt(dim) or rank < 2.0


def _step_of(line: str) -> float:
    """The step of a metrics line; infinity for a line a kill cut short (it is dropped)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step. On resume, lines past the restored
    step are dropped so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_step: int | None):
        if resume_step is not None and path.exists():
            keep = [line for line in path.read_text().splitlines() if _step_of(line) <= resume_step]
            path.write_text("".join(line + "\n" for line in keep))
        elif path.exists():
            path.unlink()
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")


class InterruptFlag:
    """The first Ctrl-C asks the loop to stop after the current step (and save); a second one
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading_main():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to abort now)")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# ------------------------------------------------------------------------------ loop


def train_step(model, views: ViewPair, batch, generator, optimizer, lr: float, tau: float, autocast, labels=None):
    """One BYOL step: two views, the symmetric loss, the optimizer step, the target update
    (``labels`` only for ``objective=supervised``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    view1, view2 = views(batch, generator)
    with autocast():
        loss, outputs = model(view1, view2, labels=labels, return_outputs=True)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    unwrap(model).update_target(tau)
    return loss.detach(), outputs


def train(cfg: DictConfig) -> Path:
    """Train BYOL as configured; returns the run directory (see DESIGN §4 for its layout). Under
    ``torchrun`` every process calls this, each training on its slice of the global batch."""
    ranks = distributed.launched_ranks()
    device = resolve_device(cfg.device, ranks)
    distributed.init(ranks, device)
    try:
        return _train(cfg, ranks, device)
    finally:
        distributed.close(ranks)


def _open_run(cfg: DictConfig) -> tuple[Path, dict[str, Any] | None]:
    """The run directory and the checkpoint state to resume from (``None``: a fresh run)."""
    run_dir = resume_run_dir(cfg) or default_run_dir(cfg.modality)
    checkpoint_path = run_dir / "checkpoints" / "last.pt"
    resume_from = None
    if cfg.resume == "auto" and checkpoint_path.exists():
        resume_from = checkpoint_path
    elif cfg.resume not in (None, "auto"):
        resume_from = Path(cfg.resume)
    elif cfg.resume is None and checkpoint_path.exists():
        raise ConfigError(f"{run_dir} already holds a run (its checkpoint {checkpoint_path}). Continue it with "
                          f"resume=auto, or train into a new run.dir; mmbyol never overwrites a run.")
    for stale in checkpoint_path.parent.glob("*.tmp"):  # a save cut short by a kill; last.pt is intact
        stale.unlink()
    return run_dir, load_checkpoint(resume_from, cfg.modality) if resume_from else None


def _train(cfg: DictConfig, ranks: Ranks, device: torch.device) -> Path:
    modality = get_modality(cfg.modality)
    # Rank 0 decides where the run lives and reads the checkpoint; the others get both from it
    # (several machines need not share a file system).
    run_dir, state = distributed.broadcast(_open_run(cfg) if ranks.main else None, ranks)
    cfg = copy.deepcopy(cfg)  # the caller's config stays as it was
    cfg.run.dir = str(run_dir)
    checkpoint_path = run_dir / "checkpoints" / "last.pt"

    torch.manual_seed(cfg.seed)
    if ranks.local_rank != 0:
        distributed.barrier(ranks)  # one process per machine prepares a missing data set
    dataset = build_dataset(cfg, "train")
    if ranks.local_rank == 0:
        distributed.barrier(ranks)
    batch_size = cfg.data.batch_size
    if len(dataset) < batch_size:
        raise DataError(f"The training set has {len(dataset)} items, fewer than data.batch_size={batch_size}. "
                        f"Lower data.batch_size or add data.")
    if batch_size % ranks.world:
        raise ConfigError(f"data.batch_size={batch_size} is the global batch and must split evenly over the "
                          f"{ranks.world} processes; use a multiple of {ranks.world}.")
    info = state["info"] if state is not None else dataset.info  # a resumed run keeps its statistics
    steps_per_epoch = len(dataset) // batch_size
    total_steps = cfg.trainer.max_steps or cfg.trainer.epochs * steps_per_epoch
    warmup_steps = min(round(cfg.optim.warmup_epochs * steps_per_epoch), total_steps)
    base_lr = cfg.optim.lr * batch_size / 256

    encoder = build_encoder(cfg.modality, cfg.encoder, info)
    model = build_model(cfg, encoder, len(getattr(dataset, "classes", []))).to(device)
    if modality.channels_last:  # faster convolutions on CUDA and on CPU (oneDNN) alike
        model = model.to(memory_format=torch.channels_last)
    views = build_views(cfg.modality, to_container(cfg.augment)["view1"], to_container(cfg.augment)["view2"]).to(device)
    optimizer = build_optimizer(cfg.optim.name, model, base_lr, cfg.optim.weight_decay,
                                cfg.optim.momentum, cfg.optim.trust_coefficient, cfg.optim.predictor_lr_scale)
    generator = torch.Generator(device=device).manual_seed(rank_seed(cfg.seed, ranks.rank))
    if ranks.rank:
        torch.manual_seed(rank_seed(cfg.seed, ranks.rank))  # dropout masks differ between ranks
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        restore_rank_state(state, ranks, cfg, views, generator, device)
        log.info("resuming %s from step %d of %d", run_dir, step, total_steps)
    model = distributed.wrap(model, ranks, device)

    if ranks.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        metrics = MetricsLog(run_dir / "metrics.jsonl", step if state is not None else None)
    forward_model = torch.compile(model) if cfg.trainer.compile else model
    autocast = autocast_context(cfg, device)

    def save(step: int) -> None:
        distributed.check_in_step(model, ranks, step)
        states = distributed.gather(rank_state(views, generator, device), ranks)
        if ranks.main:
            save_checkpoint(checkpoint_path, cfg, step, model, optimizer, states, info)

    log.info("training %s/%s on %s%s in %s: %d items, %d steps of %d (%d per epoch) → %s",
             cfg.modality, cfg.data.name, device, f" × {ranks.world} processes" if ranks.distributed else "",
             resolve_precision(cfg.trainer.precision, device), len(dataset), total_steps, batch_size,
             steps_per_epoch, run_dir)

    skipped_total, items_read, interval_loss, interval_samples, interval_steps = 0, 0, 0.0, 0, 0
    interval_start = time.perf_counter()
    collapse_warnings = 0
    bar = tqdm(total=total_steps, initial=step, disable=not (cfg.trainer.progress and ranks.main), desc="mmbyol",
               dynamic_ncols=True, mininterval=1.0)
    with InterruptFlag() as interrupt, logging_redirect_tqdm(loggers=[log]):
        while step < total_steps:
            epoch, start = divmod(step, steps_per_epoch)
            loader = make_loader(dataset, modality, cfg, epoch, start, device, ranks)
            for inputs, labels, skipped in loader:
                if ranks.distributed:  # every rank must take the step, or none
                    skipped, empty = distributed.sum_over_ranks([skipped, inputs is None], ranks, device)
                    skipped, inputs = int(skipped), None if empty else inputs
                items_read += batch_size
                if skipped:
                    skipped_total += skipped
                    log.warning("skipped %d unreadable item(s) at step %d (%d so far)", skipped, step, skipped_total)
                    if skipped_total > items_read / 2:
                        raise DataError(f"{skipped_total} of the {items_read} training items read so far were "
                                        f"unreadable (the warnings above name them): this is not the data set "
                                        f"it should be. Check data.root, or remove the broken files.")
                lr = lr_schedule(step, total_steps, base_lr, warmup_steps)
                tau = tau_schedule(step, total_steps, cfg.model.tau_base)
                if inputs is None:
                    step += 1
                    continue
                batch = modality.prepare(inputs, device, info)
                if cfg.objective == "supervised":
                    if (labels < 0).any():
                        raise DataError(f"objective=supervised met unlabelled items in {cfg.data.name!r}; "
                                        f"it needs every training item labelled.")
                    labels = labels.to(device, non_blocking=True)
                loss, outputs = train_step(forward_model, views, batch, generator, optimizer, lr, tau, autocast,
                                           labels if cfg.objective == "supervised" else None)
                # the mean loss over ranks; a Ctrl-C seen by any rank stops them all at this step
                loss_sum, stop = distributed.sum_over_ranks([float(loss), interrupt.requested], ranks, device)
                loss_value, interrupt.requested = loss_sum / ranks.world, bool(stop)
                step += 1
                if not math.isfinite(loss_value):
                    kept = f"the last good checkpoint is {checkpoint_path}" if checkpoint_path.exists() else "no checkpoint was written yet"
                    raise TrainingDiverged(
                        f"The loss became {loss_value} at step {step} (epoch {epoch}); the run is stopped and "
                        f"{kept}. Lower optim.lr (now {cfg.optim.lr}) or use trainer.precision=fp32, then "
                        f"continue with: mmbyol train run.dir={run_dir} resume=auto optim.lr=..."
                    )
                interval_loss += loss_value
                interval_samples += len(labels) * ranks.world
                interval_steps += 1
                bar.update(1)
                end_of_interval = step % cfg.trainer.log_every == 0 or step == total_steps
                if ranks.main and end_of_interval:
                    elapsed = time.perf_counter() - interval_start
                    record = {
                        "step": step, "epoch": epoch, "loss": interval_loss / interval_steps, "tau": tau, "lr": lr,
                        "z_std": projection_std(outputs["z"]), "rank": effective_rank(outputs["h"]),
                        "samples_per_s": interval_samples / max(elapsed, 1e-9), "skipped": skipped_total,
                    }
                    metrics.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", tau=f"{tau:.4f}", lr=f"{lr:.3g}",
                                    rate=f"{record['samples_per_s']:.0f}/s", refresh=False)
                    if collapsed(record["z_std"], record["rank"], outputs["z"].shape[1]):
                        if collapse_warnings % 20 == 0:
                            log.warning(
                                "COLLAPSE WARNING at step %d: the projections are nearly constant (z_std %.4f, "
                                "healthy ≈ %.4f; effective rank %.1f). The representation is degenerating: check "
                                "the augmentations, raise model.tau_base, or lower optim.lr.",
                                step, record["z_std"], 1 / math.sqrt(outputs["z"].shape[1]), record["rank"])
                        collapse_warnings += 1
                if end_of_interval:
                    interval_loss, interval_samples, interval_steps = 0.0, 0, 0
                    interval_start = time.perf_counter()
                end_of_epoch = step % steps_per_epoch == 0
                if step % cfg.trainer.checkpoint_every == 0 or end_of_epoch or step == total_steps or interrupt.requested:
                    save(step)
                if interrupt.requested:
                    bar.close()
                    log.warning("interrupted at step %d; checkpoint saved to %s. Continue with: "
                                "mmbyol train run.dir=%s resume=auto", step, checkpoint_path, run_dir)
                    raise KeyboardInterrupt
                if step >= total_steps:
                    break
    bar.close()
    if ranks.main:
        export_encoder(run_dir / "encoder.safetensors", cfg, unwrap(model).online_encoder, info, step)
    if skipped_total:
        log.warning("%d unreadable item(s) were skipped in total", skipped_total)
    log.info("done: %d steps; encoder exported to %s", step, run_dir / "encoder.safetensors")
    distributed.barrier(ranks)
    return run_dir
