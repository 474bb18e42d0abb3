"""Token-level augmentations as batched on-device ops: masking, deletion, a span crop, a local
shuffle, and the encoder's dropout as a view (SimCSE). Each keeps the rows' ``[CLS] … [SEP]
[PAD]…`` form."""

from __future__ import annotations

from typing import Any

import torch

from ...augment import Augmentation, Float, Int, Interval, uniform
from ...registry import register_augmentation
from .frontend import content_mask


def keep_tokens(batch: dict[str, Any], keep: torch.Tensor) -> dict[str, Any]:
    """The batch with only the positions in ``keep`` (special tokens always kept), moved to the
    front in their order and padded at the end: rows keep the ``[CLS] … [SEP] [PAD]…`` form."""
    ids, attention, special = batch["input_ids"], batch["attention_mask"], batch["special_tokens_mask"]
    n, length = ids.shape
    keep = (keep | special) & attention.bool()
    target = torch.where(keep, keep.long().cumsum(dim=1) - 1, length)  # dropped positions go to a spare column
    out_ids = ids.new_full((n, length + 1), batch["pad_token_id"]).scatter_(1, target, ids)[:, :length]
    out_special = special.new_zeros(n, length + 1).scatter_(1, target, special)[:, :length]
    out_attention = (torch.arange(length, device=ids.device) < keep.sum(dim=1, keepdim=True)).to(attention.dtype)
    return {**batch, "input_ids": out_ids, "attention_mask": out_attention, "special_tokens_mask": out_special}


def content_index(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(content mask, index of each content token among its row's content tokens, content length)."""
    content = content_mask(batch)
    return content, content.long().cumsum(dim=1) - 1, content.sum(dim=1)


class _RateAugmentation(Augmentation):
    """An augmentation with one ``rate`` in [0, 1] (in [0, 1) unless ``rate_may_be_one``)."""

    rate_may_be_one = False

    def __init__(self, rate: float, p: float = 1.0):
        super().__init__(p)
        if not (0.0 <= rate <= 1.0 if self.rate_may_be_one else 0.0 <= rate < 1.0):
            raise ValueError(f"rate must lie in [0, 1{']' if self.rate_may_be_one else ')'}, got {rate}")
        self.rate = rate

    def extra_repr(self) -> str:
        return f"rate={self.rate}, p={self.p}"


@register_augmentation("text", "token_mask")
class TokenMask(_RateAugmentation):
    """Each token (special tokens aside) replaced by the mask token with probability ``rate``
    (BERT's masking, as a view)."""

    search_space = {"rate": Float(0.05, 0.5), "p": Float(0.0, 1.0)}

    rate_may_be_one = True

    def __init__(self, rate: float = 0.15, p: float = 1.0):
        super().__init__(rate, p)

    def apply(self, x: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        ids = x["input_ids"]
        chosen = content_mask(x) & (torch.rand(ids.shape, generator=generator, device=ids.device) < self.rate)
        return {**x, "input_ids": ids.masked_fill(chosen, x["mask_token_id"])}


@register_augmentation("text", "token_delete")
class TokenDelete(_RateAugmentation):
    """Each token (special tokens aside) deleted with probability ``rate``; the rest close up.
    A row never loses all its tokens: when every one was drawn, one of them stays."""

    search_space = {"rate": Float(0.05, 0.4), "p": Float(0.0, 1.0)}

    def __init__(self, rate: float = 0.1, p: float = 1.0):
        super().__init__(rate, p)

    def apply(self, x: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        content = content_mask(x)
        score = torch.rand(content.shape, generator=generator, device=content.device)
        keep = content & (score >= self.rate)
        # the highest-scored token of a row that would be emptied stays
        empty = ~keep.any(dim=1) & content.any(dim=1)
        best = score.masked_fill(~content, -1.0).argmax(dim=1)
        keep[empty, best[empty]] = True
        return keep_tokens(x, keep)


@register_augmentation("text", "span_crop")
class SpanCrop(Augmentation):
    """A contiguous span of the tokens, ``scale`` ~ U(low, high) of them (at least one), at a
    random place: the text's random crop."""

    search_space = {"scale": Interval(0.2, 1.0), "p": Float(0.0, 1.0)}

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0), p: float = 1.0):
        super().__init__(p)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.scale = tuple(scale)

    def apply(self, x: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        content, index, total = content_index(x)
        n = len(total)
        span = (uniform(n, *self.scale, generator, total.device) * total).ceil().clamp(min=1)
        span = span.minimum(total.clamp(min=1))
        start = (torch.rand(n, generator=generator, device=total.device) * (total - span + 1)).floor()
        keep = content & (index >= start[:, None]) & (index < (start + span)[:, None])
        return keep_tokens(x, keep)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, p={self.p}"


@register_augmentation("text", "local_shuffle")
class LocalShuffle(Augmentation):
    """Tokens shuffled locally: no token moves more than ``window`` places (Lample et al. 2018:
    sort by index + U(0, window + 1))."""

    search_space = {"window": Int(2, 6), "p": Float(0.0, 1.0)}

    def __init__(self, window: int = 3, p: float = 1.0):
        super().__init__(p)
        if window < 0:
            raise ValueError(f"window must be non-negative, got {window}")
        self.window = window

    def apply(self, x: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        ids = x["input_ids"]
        content, index, _ = content_index(x)
        length = ids.shape[1]
        position = torch.arange(length, device=ids.device, dtype=torch.float).expand(ids.shape)
        first = content.float().argmax(dim=1, keepdim=True).float()  # where the row's tokens start
        noise = torch.rand(ids.shape, generator=generator, device=ids.device) * (self.window + 1)
        key = torch.where(content, first + index + noise, position)
        after = ~content & (position > first)  # trailing special tokens and padding stay behind
        key = torch.where(after, position + 2 * length + self.window, key)
        order = key.argsort(dim=1, stable=True)
        return {**x, "input_ids": ids.gather(1, order)}

    def extra_repr(self) -> str:
        return f"window={self.window}, p={self.p}"


@register_augmentation("text", "dropout")
class Dropout(_RateAugmentation):
    """SimCSE's minimal view (Gao et al. 2021): the tokens unchanged, the encoder's dropout at
    ``rate`` for this view (on the embeddings and after every sub-layer, an independent mask per
    token). The encoder applies no dropout to a view without it."""

    search_space = {"rate": Float(0.0, 0.3)}

    def __init__(self, rate: float = 0.1, p: float = 1.0):
        super().__init__(rate, p)

    def apply(self, x: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        return {**x, "dropout": torch.full_like(x["dropout"], self.rate)}
