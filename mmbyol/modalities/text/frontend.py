"""Strings → the token batch on the device, and back to text for ``mmbyol views``. The batch is
the mapping described in the package's docstring."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base import ROW_LABELS
from .tokenizer import run_tokenizer


def content_mask(batch: dict[str, Any]) -> torch.Tensor:
    """The positions holding real tokens: neither special nor padding."""
    return batch["attention_mask"].bool() & ~batch["special_tokens_mask"]


def collate_texts(inputs: list[str]) -> list[str]:
    return list(inputs)


def prepare_text(texts: list[str], device: torch.device, info: dict[str, Any]) -> dict[str, Any]:
    """Strings → the token batch (see the module docstring) on ``device``."""
    encodings = run_tokenizer(info).encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    attention = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    special = torch.tensor([e.special_tokens_mask for e in encodings], dtype=torch.bool)
    return {
        "input_ids": ids.to(device, non_blocking=True),
        "attention_mask": attention.to(device, non_blocking=True),
        "special_tokens_mask": (special & attention.bool()).to(device, non_blocking=True),
        "dropout": torch.zeros(len(texts), device=device),
        "pad_token_id": info["pad_token_id"],
        "mask_token_id": info["mask_token_id"],
    }


class TextFrontEnd(nn.Module):
    """``prepare_text`` as a module: a list of strings → the token batch on the module's device."""

    def __init__(self, info: dict[str, Any]):
        super().__init__()
        self.info = info
        self.register_buffer("anchor", torch.empty(0), persistent=False)  # its device is the module's

    def forward(self, texts: list[str]) -> dict[str, Any]:
        return prepare_text(texts, self.anchor.device, self.info)


def decode(batch: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """The rows of a token batch as text: [CLS]/[SEP] and padding left out, masks shown as [MASK]."""
    tokenizer = run_tokenizer(info)
    keep = content_mask(batch).tolist()
    return [tokenizer.decode([i for i, k in zip(ids, row) if k], skip_special_tokens=False)
            for ids, row in zip(batch["input_ids"].tolist(), keep)]


def write_text_views(original: dict, view1: dict, view2: dict, path: Path, info: dict[str, Any],
                     labels: Sequence[str] = ROW_LABELS) -> None:
    """Each example as original / view 1 / view 2 (or ``labels``) decoded back to text, printed and
    written to ``path``."""
    blocks = []
    width = max(len(label) for label in labels) + 1
    names = [f"{label}:".ljust(width) for label in labels]
    dropout1, dropout2 = view1["dropout"].tolist(), view2["dropout"].tolist()
    for i, (text, one, two) in enumerate(zip(decode(original, info), decode(view1, info), decode(view2, info))):
        blocks.append(
            f"[{i}] {names[0]} {text}\n    {names[1]} {one}"
            + (f"   (dropout {dropout1[i]:g})" if dropout1[i] else "")
            + f"\n    {names[2]} {two}"
            + (f"   (dropout {dropout2[i]:g})" if dropout2[i] else "")
        )
    report = "\n".join(blocks) + "\n"
    print(report, end="")
    Path(path).write_text(report)
