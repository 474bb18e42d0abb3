"""Loss functions, pure and separately tested."""

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalized MSE ``2 − 2·cos(p, z)``, averaged over the batch (BYOL eq. 2).

    Computed in float32 whatever the autocast dtype: the cosine of nearly equal vectors is
    where bf16 loses the signal.
    """
    prediction = F.normalize(prediction.float(), dim=-1)
    target = F.normalize(target.float(), dim=-1)
    return (2 - 2 * (prediction * target).sum(dim=-1)).mean()


def info_nce_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent / InfoNCE with in-batch negatives (SimCLR): each view must pick out its partner
    among the other ``2N − 2`` projections of the batch.

    Under ``torch.distributed`` the batch is the global one: every rank's projections are gathered
    with their gradients, this rank's ``2n`` views are the queries, and the loss is scaled so that the
    ranks' mean (what DistributedDataParallel's gradient averaging takes) is the mean over all ``2N``
    queries, also when the ranks hold different numbers of items."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _global_info_nce(z1, z2, temperature)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own negative
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def _global_info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    world, rank, n = dist.get_world_size(), dist.get_rank(), z1.shape[0]
    sizes = torch.zeros(world, dtype=torch.long, device=z1.device)
    sizes[rank] = n
    dist.all_reduce(sizes)
    most = int(sizes.max())
    # all_gather needs one shape: pad each rank's rows to the largest, then keep the real ones
    pad = (0, 0, 0, most - n)
    g1 = torch.cat(dist_nn.all_gather(F.pad(z1.float(), pad)))
    g2 = torch.cat(dist_nn.all_gather(F.pad(z2.float(), pad)))
    real = (torch.arange(most, device=z1.device) < sizes[:, None]).flatten()
    keys = F.normalize(torch.cat([g1[real], g2[real]]), dim=-1)
    total, offset = int(sizes.sum()), int(sizes[:rank].sum())
    mine = torch.arange(offset, offset + n, device=z1.device)
    queries = torch.cat([mine, mine + total])
    logits = keys[queries] @ keys.T / temperature
    logits[torch.arange(2 * n, device=z1.device), queries] = float("-inf")  # a view is not its own negative
    partner = torch.cat([mine + total, mine])
    return F.cross_entropy(logits, partner, reduction="sum") * world / (2 * total)
