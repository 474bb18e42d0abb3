"""Where and how a process computes: the device, the precision, the CPU memory setting, Ctrl-C.
Training, evaluation, ``mmbyol views`` and the benchmarks all take their device from here."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import signal
import sys
import threading
from functools import partial
from typing import Any

import torch

from .distributed import ONE_PROCESS, Ranks
from .errors import ConfigError, DataError, Stopped

log = logging.getLogger("mmbyol")


def resolve_device(name: str, ranks: Ranks = ONE_PROCESS) -> torch.device:
    """The device of ``device=NAME``; under ``torchrun`` each process takes ``cuda:LOCAL_RANK``.
    A CPU device also sets the process up to compute on it (:func:`keep_freed_memory`)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name} is not a device: use device=auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device={name} but CUDA is not available here; use device=cpu or device=auto.")
    if device.type not in ("cpu", "cuda"):
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError):  # torch's words for a backend it was not built with
            raise ConfigError(f"device={name} is not available in this PyTorch build or on this machine; use "
                              f"device=cpu or device=auto.") from None
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
    32 MB (a convolution's activations easily are) afresh and unmaps it when freed, so each step
    would page-fault it all in again (docs/performance.md). The setting is process-wide, made
    once; False where there is no glibc."""
    return device.type == "cpu" and sys.platform.startswith("linux") and _glibc_keep_freed_memory()


@functools.cache
def _glibc_keep_freed_memory() -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU that supports it, or a CPU with
    AVX512-BF16 or AMX. Other CPUs emulate bf16, and autocast there is several times slower than
    fp32, not faster (docs/performance.md)."""
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


def out_of_memory(error: torch.OutOfMemoryError, device: torch.device | str, doing: str, lower: str) -> ConfigError:
    """A device that ran out of memory, in one paragraph: torch's account of it, without its advice
    on the allocator, and the setting to lower."""
    said = str(error).split(" Including non-PyTorch memory")[0].split(" If reserved but unallocated")[0].strip()
    return ConfigError(f"{device} ran out of memory {doing} ({said.rstrip('.')}). Lower {lower}.")


def autocast_context(precision: str, device: torch.device):
    """A context manager factory: bf16 autocast, or nothing, as ``precision`` resolves on ``device``."""
    if resolve_precision(precision, device) == "bf16":
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


# Ctrl-C, and what SLURM (``--signal=USR1@SECONDS``, then SIGTERM) and Kubernetes send before pre-emption
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


@contextlib.contextmanager
def stopped_by_signals():
    """SIGTERM and SIGUSR1 (a scheduler's stop) raise :class:`Stopped`, as Ctrl-C raises
    KeyboardInterrupt, instead of ending the process where it stands: a command's cleanups run (the
    staging folder of a data set or an export being written is removed). A training loop's
    :class:`InterruptFlag` takes them over while it runs, to stop after a step and save."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS if signum != signal.SIGINT}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class InterruptFlag:
    """Ctrl-C, SIGTERM or SIGUSR1 asks the loop to stop after the current step and save; a second
    Ctrl-C interrupts at once. ``signum`` is the first signal received; ``stopping`` is what the
    warning for it says will happen.

    A command that waits on threads uses it to raise the stop where it chooses
    (:meth:`raise_if_requested`): raised by the handler itself, the exception can land inside
    ``threading``'s lock handling and leave a RuntimeError and a traceback in place of the stop."""

    def __init__(self, stopping: str = "stopping after this step and saving a checkpoint"):
        self.requested = False
        self.signum: int | None = None
        self.stopping = stopping
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self.signum = True, signum
            if signum == signal.SIGINT:
                log.warning("Ctrl-C: %s (Ctrl-C again to abort now)", self.stopping)
            else:
                log.warning("%s: %s", signal.Signals(signum).name, self.stopping)

    def raise_if_requested(self) -> None:
        """Raise :class:`Stopped` with the signal, if one came."""
        if self.requested:
            raise Stopped(self.signum)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
