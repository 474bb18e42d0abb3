"""The run directory on disk: where a run lives, its checkpoint (written atomically, loaded with
``weights_only=True``), each rank's random streams, and the exported encoder."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save as to_safetensors
from torch import nn

from .config import to_container
from .distributed import Ranks
from .errors import CheckpointError, ConfigError, search_folder_hint

log = logging.getLogger("mmbyol")

CHECKPOINT_FORMAT = 1


# ------------------------------------------------------------------------ run directory


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


def folder_for_run(run_dir: Path) -> Path:
    """``run_dir``, unless it names a file (the error says so)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run.dir={run_dir} is a file; a run directory is a folder. Name a new folder.")
    return run_dir


def check_fresh_run_folder(run_dir: Path) -> None:
    """A fresh run goes into a new folder, an empty one (hidden files aside), or the folder of a run
    cut short before its first checkpoint; never over a finished run or files of the user's."""
    if not run_dir.is_dir():
        return
    if (run_dir / "encoder.safetensors").exists():
        raise ConfigError(f"{run_dir} holds a finished run (encoder.safetensors) whose checkpoint is gone, so it "
                          f"cannot be continued; mmbyol never overwrites a run. Train into a new run.dir.")
    if not _written_by_a_run(run_dir):
        refuse_a_folder_of_files(run_dir, "run", search_folder_hint(run_dir))


def refuse_a_folder_of_files(folder: Path, what: str, hint: str = "") -> None:
    """A ConfigError naming what ``folder`` holds (hidden files aside), if anything: a new ``what``
    (run, search) writes into no folder of the user's."""
    held = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if held:
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise ConfigError(f"run.dir={folder} holds files that are not a {what}'s ({shown}); a new {what} goes into "
                          f"a new or empty folder, so that nothing of yours is overwritten. Name a new folder, "
                          f"e.g. run.dir={folder / what}.{hint}")


def _written_by_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir/config.yaml`` is the config a run wrote there: a config of ours whose
    ``run.dir`` names this folder (a config saved by hand names none, or another)."""
    from yaml import YAMLError  # omegaconf's own reader

    path = run_dir / "config.yaml"
    try:
        saved = OmegaConf.load(path)
        named = saved.run.dir
    except (YAMLError, ValueError, OSError, AttributeError):  # missing, not YAML or not ours
        return False
    return isinstance(named, str) and Path(named).resolve().name == run_dir.resolve().name


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


def open_run(cfg: DictConfig) -> tuple[Path, dict[str, Any] | None]:
    """The run directory and the checkpoint state to resume from (``None``: a fresh run). A
    directory that already holds a run is never trained into afresh."""
    run_dir = folder_for_run(resume_run_dir(cfg) or default_run_dir(cfg.modality))
    last = checkpoint_path(run_dir)
    resume_from = None
    if cfg.resume == "auto" and last.exists():
        resume_from = last
    elif cfg.resume not in (None, "auto"):
        resume_from = Path(cfg.resume)
    elif cfg.resume is None and last.exists():
        raise ConfigError(f"{run_dir} already holds a run (its checkpoint {last}). Continue it with "
                          f"resume=auto, or train into a new run.dir; mmbyol never overwrites a run.")
    if not last.exists():
        check_fresh_run_folder(run_dir)
    for stale in last.parent.glob("*.tmp"):  # a save cut short by a kill; last.pt is intact
        stale.unlink()
    return run_dir, load_checkpoint(resume_from, cfg.modality) if resume_from else None


# --------------------------------------------------------------------------- checkpoints


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        else:
            return module


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A file to write in place of ``path``: a temporary one beside it (named with the process id,
    as several processes may write one report), flushed to disk and renamed over ``path`` when the
    block ends. A failed write leaves ``path`` as it was and removes the temporary file, which on a
    full disk would hold the space that is lacking."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`replacing`: never a torn file."""
    with replacing(path) as file:
        torch.save(obj, file)


def atomic_write_text(path: Path, text: str) -> None:
    """``path`` holds ``text`` whole, or what it held before (:func:`replacing`)."""
    with replacing(path) as file:
        file.write(text.encode())


def unwritable(path: Path, error: Exception, what: str, run_dir: Path) -> CheckpointError:
    """The error for a run's file that could not be written: why, the space left, and how to go on.
    torch reports a full disk as "unexpected pos", so the free space is said whatever the cause."""
    detail = (error.strerror or str(error)) if isinstance(error, OSError) else str(error).splitlines()[0]
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    last = checkpoint_path(run_dir)
    kept = "The last checkpoint is intact." if last.exists() else "No checkpoint was written before."
    return CheckpointError(f"Could not write the {what} {path} ({detail}); its disk has {free / 2**20:,.0f} MiB "
                           f"free. {kept} Make room, then continue with: mmbyol train run.dir={run_dir} resume=auto")


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


def save_checkpoint(path: Path, cfg: DictConfig, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    states: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """The full state of a run. ``states``: :func:`rank_state` of every rank, in rank order (one
    entry in one process)."""
    state = {
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
    }
    try:
        atomic_save(state, path)
    except (OSError, RuntimeError) as error:  # torch's writer raises RuntimeError for a failed write
        raise unwritable(path, error, "checkpoint", path.parent.parent) from error


# ------------------------------------------------------------------- random streams per rank


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s random streams (``seed`` itself for rank 0 of a fresh run)."""
    return seed + 1_000_003 * rank + 7_919 * step


def rank_state(views: nn.Module, generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """What differs between ranks: the augmentations' state (e.g. a mixup memory) and the RNGs."""
    return {
        "views": {k: v.cpu() for k, v in views.state_dict().items()},
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": [torch.cuda.get_rng_state(device)] if device.type == "cuda" else [],
            "augment": generator.get_state(),
        },
    }


def restore_rank_state(state: dict[str, Any], ranks: Ranks, seed: int, views: nn.Module,
                       generator: torch.Generator, device: torch.device) -> None:
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
        fresh = rank_seed(seed, ranks.rank, state["step"])
        torch.manual_seed(fresh)
        generator.manual_seed(fresh)
        if own is not None:
            log.warning("rank %d resumes with fresh random streams: the checkpoint's were saved on another device "
                        "type; the run goes on, not bit-identical to an uninterrupted one", ranks.rank)


# ------------------------------------------------------------------------------- export


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
    try:
        with replacing(path) as file:
            file.write(to_safetensors(state, metadata=metadata))
    except OSError as error:
        raise unwritable(path, error, "encoder", path.parent) from error
