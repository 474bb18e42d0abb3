"""What a run reports while it trains: ``metrics.jsonl`` (and TensorBoard), the progress bar and
the collapse monitor (the std of the normalized projections and RankMe, the effective rank)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .checkpoint import atomic_write_text
from .errors import ConfigError

log = logging.getLogger("mmbyol")


@torch.no_grad()
def effective_rank(features: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalized singular values."""
    singular = torch.linalg.svdvals(features.float())
    p = singular / singular.sum().clamp_min(1e-12) + 1e-7
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def effective_rank_error(features: torch.Tensor, draws: int = 100, seed: int = 0) -> float:
    """RankMe's standard error over the items it is measured on: its spread over ``draws``
    bootstrap resamples of the rows, as another draw of the items would move it. A generator of
    its own, so no global random numbers are drawn."""
    if draws < 2:
        raise ValueError(f"draws={draws}: a spread needs at least 2 resamples")
    generator, n, values = torch.Generator().manual_seed(seed), len(features), []
    for _ in range(draws):
        rows, counts = torch.randint(n, (n,), generator=generator).unique(return_counts=True)
        # a resample's singular values are its distinct rows' weighted by √(times drawn): fewer rows to decompose
        values.append(effective_rank(features[rows] * counts.sqrt().unsqueeze(1)))
    return float(torch.tensor(values).std())


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
            atomic_write_text(path, "".join(line + "\n" for line in keep))  # a kill here loses no line
        elif path.exists():
            path.unlink()
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")


class TensorBoardLog:
    """Every number of a record as a TensorBoard scalar (``RUN_DIR/tensorboard``); on resume, the
    events past the restored step are dropped, as :class:`MetricsLog` drops its lines."""

    def __init__(self, path: Path, resume_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("trainer.loggers names tensorboard, which is not installed: pip install tensorboard "
                              "(it comes with mmbyol), or drop it from trainer.loggers.") from None
        self.writer = SummaryWriter(str(path), purge_step=resume_step)

    def write(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                group = "monitor" if key.startswith("monitor_") else "train"
                self.writer.add_scalar(f"{group}/{key.removeprefix('monitor_')}", value, record["step"])

    def close(self) -> None:
        self.writer.close()


class TrainingLog:
    """The numbers of a training run, every ``log_every`` steps, at the monitor's steps and at the
    last: the mean loss over the interval, τ, lr, the collapse monitor on the last batch,
    samples/s and the monitor's measurement, to the ``loggers`` (``metrics.jsonl``, TensorBoard)
    and the progress bar, with a loud warning when the projections collapse. Only the main
    process (``main``) writes; a context manager, so log lines and the bar share the terminal."""

    def __init__(self, run_dir: Path, step: int, total_steps: int, log_every: int, resumed: bool, main: bool,
                 progress: bool, loggers: Sequence[str] = ("jsonl",)):
        self.total_steps, self.log_every, self.main = total_steps, log_every, main
        resume_step = step if resumed else None
        self.sinks: list[Any] = []
        if main and "jsonl" in loggers:
            self.sinks.append(MetricsLog(run_dir / "metrics.jsonl", resume_step))
        if main and "tensorboard" in loggers:
            self.sinks.append(TensorBoardLog(run_dir / "tensorboard", resume_step))
        self.bar = tqdm(total=total_steps, initial=step, disable=not (progress and main), desc="mmbyol",
                        dynamic_ncols=True, mininterval=1.0)
        self.collapse_warnings, self.knn = 0, None
        self._new_interval()

    def _new_interval(self) -> None:
        self.loss, self.samples, self.steps = 0.0, 0, 0
        self.started = time.perf_counter()

    def __enter__(self):
        self._redirect = logging_redirect_tqdm()  # the root logger's console handler, which mmbyol's lines reach
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.close()
        for sink in self.sinks:
            if hasattr(sink, "close"):
                sink.close()
        return self._redirect.__exit__(*exc)

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def start(self, monitor: dict[str, float]) -> None:
        """The monitor's measurement of the untrained encoder, as the line of step 0."""
        if self.main:
            self.write({"step": 0, **monitor})
            self._show(monitor)
        self._new_interval()  # the measurement is not training time

    def step(self, step: int, epoch: int, loss: float, samples: int, tau: float, lr: float,
             outputs: dict[str, torch.Tensor], skipped: int, monitor: dict[str, float] | None = None) -> None:
        """Count the step just taken (``step`` steps done); write a record at the interval's end,
        or with the monitor's measurement at this step."""
        self.loss, self.samples, self.steps = self.loss + loss, self.samples + samples, self.steps + 1
        self.bar.update(1)
        if step % self.log_every and step != self.total_steps and monitor is None:
            return
        if self.main:
            # the monitor's time is not training time
            elapsed = time.perf_counter() - self.started - (monitor or {}).get("monitor_seconds", 0.0)
            record = {
                "step": step, "epoch": epoch, "loss": self.loss / self.steps, "tau": tau, "lr": lr,
                "z_std": projection_std(outputs["z"]), "rank": effective_rank(outputs["h"]),
                "samples_per_s": self.samples / max(elapsed, 1e-9), "skipped": skipped,
                **(monitor or {}),
            }
            self.write(record)
            self._show(record)
            self._watch_collapse(record, outputs["z"].shape[1])
        self._new_interval()

    def _show(self, record: dict[str, Any]) -> None:
        shown = {"loss": f"{record['loss']:.4f}", "tau": f"{record['tau']:.4f}", "lr": f"{record['lr']:.3g}",
                 "rate": f"{record['samples_per_s']:.0f}/s"} if "loss" in record else {}
        if "monitor_knn" in record:
            self.knn = f"{100 * record['monitor_knn']:.1f}%"
        if self.knn:
            shown["knn"] = self.knn
        self.bar.set_postfix(shown, refresh=False)

    def _watch_collapse(self, record: dict[str, Any], dim: int) -> None:
        if not collapsed(record["z_std"], record["rank"], dim):
            return
        if self.collapse_warnings % 20 == 0:  # loud, but not on every line of a collapsed run
            log.warning("COLLAPSE WARNING at step %d: the projections are nearly constant (z_std %.4f, healthy ≈ "
                        "%.4f; effective rank %.1f). The representation is degenerating: check the augmentations, "
                        "raise model.tau_base, or lower optim.lr.",
                        record["step"], record["z_std"], 1 / math.sqrt(dim), record["rank"])
        self.collapse_warnings += 1
