"""Data-parallel training under ``torchrun`` (docs/design.md): one process per device, every rank
training on its slice of each global batch, gradients averaged by DistributedDataParallel and
BatchNorm statistics taken over the global batch. Outside ``torchrun`` everything here is a
no-op, so the training loop reads the same either way."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import TrainingDiverged

log = logging.getLogger("mmbyol")


@dataclass(frozen=True)
class Ranks:
    """Where this process sits: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 alone writes logs, metrics, checkpoints and the exported encoder."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


ONE_PROCESS = Ranks()


def launched_ranks() -> Ranks:
    """The ranks ``torchrun`` set in the environment (a single process without it)."""
    env = os.environ
    return Ranks(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                 int(env.get("LOCAL_WORLD_SIZE", 1)))


def init(ranks: Ranks, device: torch.device) -> None:
    """Join the process group ``torchrun`` started: NCCL on CUDA, gloo on CPU. Ranks other than 0
    log errors only, so a run prints one log."""
    if not ranks.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    if not ranks.main:
        log.setLevel(logging.ERROR)


def close(ranks: Ranks) -> None:
    """Destroy the process group. Free the DDP model first: its Reducer holds the group, and a
    group freed last from there is destroyed holding the GIL, which gloo's threads may be waiting
    for to release a finished collective's tensors: a rank then hangs at exit (pytorch#56297)."""
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def broadcast(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ranks.distributed:
        return [value]
    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out


def sum_over_ranks(values: list[float], ranks: Ranks, device: torch.device) -> list[float]:
    """Element-wise sums over ranks of a few scalars (one collective)."""
    if not ranks.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


# ----------------------------------------------------------------------- BatchNorm


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm with statistics over the global batch, for CPU processes (the gloo test):
    ``torch.nn.SyncBatchNorm`` runs on accelerators only. Mean and variance are summed over the
    ranks with autograd-aware all-reduces, so the backward pass is that of BatchNorm over the
    global batch too. Outside training, or in one process, it is plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of 2 or more dimensions (got {input.dim()})")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        x = input.float()
        dims = [0, *range(2, x.dim())]
        count = x.new_tensor(x.numel() / x.shape[1]).expand(x.shape[1])
        local = torch.stack([count, x.sum(dims), x.square().sum(dims)])
        count, total, total_sq = dist_nn.all_reduce(local)
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), momentum)
        shape = [1, -1] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer of ``model`` normalizing over the global batch, weights and running
    statistics kept: ``torch.nn.SyncBatchNorm`` on accelerators, :class:`CPUSyncBatchNorm` on CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.__class__ = CPUSyncBatchNorm  # same attributes: only the forward changes
    return model


def wrap(model: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """``model`` with global-batch BatchNorm, in DistributedDataParallel (as it is, in one process).
    Rank 0's initial weights are broadcast to all ranks."""
    if not ranks.distributed:
        return model
    model = sync_batchnorm(model, device)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@torch.no_grad()
def check_in_step(model: nn.Module, ranks: Ranks, step: int) -> None:
    """Raise if the ranks' weights have drifted apart: a checksum per tensor, compared to rank
    0's. DDP keeps them identical; a difference means a bug (or a rank fed other weights)."""
    if not ranks.distributed:
        return
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    sums = torch.stack([t.double().sum() for t in tensors] + [t.double().abs().sum() for t in tensors])
    everyone = [torch.empty_like(sums) for _ in range(ranks.world)]
    dist.all_gather(everyone, sums)
    for rank, other in enumerate(everyone[1:], start=1):
        if not torch.allclose(other, everyone[0], rtol=1e-6, atol=1e-6):
            raise TrainingDiverged(f"At step {step} the weights of rank {rank} differ from rank 0's: the ranks are "
                                   f"out of step. This is a bug in the distributed set-up; please report it.")
