"""A ``transformers`` BERT encoder, mean-pooled over its tokens, whose dropout rate is set per
batch row by the ``dropout`` augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...registry import register_encoder


class _Rates:
    """The dropout rate of each row of the batch being encoded, shared by an encoder's dropout
    layers (a plain object: not a module, not saved)."""

    value: torch.Tensor | None = None


class RowDropout(nn.Module):
    """Dropout with a rate per batch row, read from the encoder's current batch. ``p`` is 0 so
    code that reads a dropout module's ``p`` (``transformers``' attention) applies none."""

    p = 0.0

    def __init__(self, rates: _Rates):
        super().__init__()
        self.rates = rates

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rate = self.rates.value
        if not self.training or rate is None:
            return x
        rate = rate.to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        keep = torch.rand_like(x) >= rate
        return x * keep / (1 - rate)


class TextEncoder(nn.Module):
    """A ``transformers`` encoder, its token features mean-pooled over non-padding tokens →
    ``(B, hidden)``. Its dropout is the batch's (the ``dropout`` augmentation), none otherwise."""

    def __init__(self, model: nn.Module, info: dict[str, Any]):
        super().__init__()
        self.model = model
        self.info = info
        self.out_dim = model.config.hidden_size
        self._rates = _Rates()
        for module in list(model.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, nn.Dropout):
                    setattr(module, child_name, RowDropout(self._rates))

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        attention = batch["attention_mask"]
        length = max(int(attention.sum(dim=1).max()), 1)  # padding past the longest row is dropped
        ids, attention = batch["input_ids"][:, :length], attention[:, :length]
        self._rates.value = batch.get("dropout") if self.training else None
        try:
            return self.pooled(ids, attention)
        finally:
            self._rates.value = None

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The model's last hidden state mean-pooled over the attention mask: the features, from
        token ids as Hugging Face tokenizers give them (the ONNX export's graph)."""
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weight = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)

    def save_pretrained(self, path: str | Path) -> Path:
        """The encoder and its tokenizer in Hugging Face format: ``AutoModel.from_pretrained(path)``
        and ``AutoTokenizer.from_pretrained(path)`` load them (mean-pool the last hidden state
        over the attention mask to get this encoder's features)."""
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        path = Path(path)
        self.model.save_pretrained(path)
        tokenizer = Tokenizer.from_str(self.info["tokenizer"])
        names = {k: tokenizer.id_to_token(self.info[f"{k}_token_id"]) for k in ("pad", "mask")}
        extra = {
            f"{k}_token": t
            for k, *cands in (("cls", "[CLS]", "<s>"), ("sep", "[SEP]", "</s>"), ("unk", "[UNK]", "<unk>"))
            if (t := next((c for c in cands if tokenizer.token_to_id(c) is not None), None))
        }
        # the model's positions, not the training length: a pretrained start keeps its 512
        PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=self.model.config.max_position_embeddings,
                                pad_token=names["pad"], mask_token=names["mask"], **extra).save_pretrained(path)
        return path


@register_encoder("text", "bert")
def bert(info: dict[str, Any], layers: int = 4, hidden: int = 256, heads: int = 4, intermediate: int = 1024,
         pretrained: str | None = None, max_positions: int | None = None) -> TextEncoder:
    """A BERT encoder built from a config (``layers`` × ``hidden`` wide, ``heads`` attention
    heads, feed-forward ``intermediate``, ``max_positions`` position embeddings, by default
    ``data.max_length``: the longest input it can read) and randomly initialized, or — with ``pretrained=PATH``
    — any local ``transformers`` encoder checkpoint (its own sizes; then use its tokenizer too,
    ``data.tokenizer=PATH``). Nothing is downloaded."""
    from transformers import AutoModel, BertConfig, BertModel

    if pretrained is not None:
        if not Path(pretrained).is_dir():
            raise ValueError(f"encoder.pretrained={pretrained} is not a folder (a local Hugging Face checkpoint)")
        try:
            model = AutoModel.from_pretrained(pretrained, local_files_only=True, add_pooling_layer=False)
        except TypeError:  # models without a pooling layer option
            model = AutoModel.from_pretrained(pretrained, local_files_only=True)
        if model.config.vocab_size < info["vocab_size"]:
            raise ValueError(f"encoder.pretrained has a vocabulary of {model.config.vocab_size} tokens, the tokenizer "
                             f"{info['vocab_size']}: set data.tokenizer={pretrained} to use the model's own tokenizer")
        if info["max_length"] > model.config.max_position_embeddings:
            raise ValueError(f"data.max_length={info['max_length']} exceeds the model's "
                             f"{model.config.max_position_embeddings} positions")
    else:
        if max_positions is not None and max_positions < info["max_length"]:
            raise ValueError(f"encoder.max_positions={max_positions} is less than data.max_length={info['max_length']}")
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        config = BertConfig(vocab_size=info["vocab_size"], hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=intermediate,
                            max_position_embeddings=max_positions or info["max_length"], type_vocab_size=1,
                            pad_token_id=info["pad_token_id"], hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
        model = BertModel(config, add_pooling_layer=False)
    return TextEncoder(model, info)
