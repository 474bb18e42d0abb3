"""Text: sentences as token ids, a BERT-style ``transformers`` encoder with mean pooling, and
token-level augmentations as batched on-device ops.

The data path: a data set item is a string; ``prepare`` tokenizes a batch with the run's
tokenizer (kept in the run's ``info``, so evaluation and exported encoders use the very same
one), pads it to its longest row and moves it to the device as a mapping
``{input_ids, attention_mask, special_tokens_mask, dropout}`` plus the batch constants
``pad_token_id`` and ``mask_token_id``. Every row reads ``[CLS] tokens… [SEP] [PAD]…`` (or the
tokenizer's own special tokens); the augmentations change the tokens between the special ones
and keep that form. ``dropout`` is each row's dropout rate inside the encoder (SimCSE's view
noise), which the ``dropout`` augmentation sets.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..augment import Augmentation, uniform
from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..registry import register_augmentation, register_dataset, register_encoder, register_modality
from .base import Modality

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


# ----------------------------------------------------------------------------------- data


@dataclass
class TextDataConfig(DataConfig):
    name: str = "wordnet-glosses"
    max_length: int = 64  # tokens per example, special tokens included; longer ones are truncated
    # the tokenizer: a local Hugging Face tokenizer directory (or tokenizer.json); null = train one
    # on the training split (saved with the run)
    tokenizer: str | None = None
    tokenizer_model: str = "wordpiece"  # wordpiece | bpe, when one is trained
    vocab_size: int = 8000  # when one is trained
    lowercase: bool = True  # when one is trained
    # text-file: files of one example per line, or JSONL/CSV with a text column and an optional label
    train: str | None = None
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    # wordnet-glosses: examples per class (balanced) and the fraction of them held out for test
    per_class: int = 2000
    test_fraction: float = 0.2


class Texts(Dataset):
    """Strings with labels (-1 when unlabelled). ``info`` holds the tokenizer: for a training
    split (``training``) the one at ``data.tokenizer``, or one trained on these texts on first
    use; evaluation reads the run's own from the exported encoder."""

    def __init__(self, texts: list[str], labels: list[int], classes: list[str], cfg: TextDataConfig, training: bool):
        self.texts, self.labels, self.classes = texts, labels, classes
        self.cfg, self.training = cfg, training

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int):
        return self.texts[index], self.labels[index]

    @cached_property
    def info(self) -> dict[str, Any]:
        if not self.training:
            return {"max_length": self.cfg.max_length}
        if self.cfg.tokenizer:
            tokenizer = load_tokenizer(self.cfg.tokenizer)
        else:
            tokenizer = train_tokenizer(self.texts, self.cfg.vocab_size, self.cfg.tokenizer_model, self.cfg.lowercase)
        return tokenizer_info(tokenizer, self.cfg.max_length)


# WordNet's lexicographer files (lexnames(5WN)) that make the ten classes, in the order.
WORDNET_CLASSES = {"animal": 5, "plant": 20, "food": 13, "person": 18, "artifact": 6, "location": 15,
                   "substance": 27, "body": 8, "communication": 10, "act": 4}
WORDNET_ROOT = "/usr/share/wordnet"


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())


def read_wordnet_glosses(root: str | Path) -> dict[str, list[str]]:
    """Noun definitions per class from WordNet's ``data.noun``: the gloss up to its first quoted
    example (the headword, which names the label, is never kept), whitespace collapsed;
    definitions shared by two classes are dropped, repeats within a class kept once."""
    path = Path(root) / "data.noun"
    if not path.exists():
        raise DataError(f"WordNet's noun data {path} is missing. Install it with `apt-get install wordnet-base` "
                        f"(the README's set-up does), or point data.root at a folder holding data.noun.")
    by_number = {number: name for name, number in WORDNET_CLASSES.items()}
    label: dict[str, str | None] = {}  # lower-cased definition → its class (None: more than one)
    spelling: dict[str, str] = {}  # lower-cased definition → its first spelling
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or " | " not in line:  # the licence header
            continue
        fields, _, gloss = line.partition(" | ")
        name = by_number.get(int(fields.split()[1]))
        if name is None:
            continue
        definition = " ".join(gloss.split('; "')[0].split('"')[0].split()).strip(" ;")
        if not definition:
            continue
        key = definition.lower()
        spelling.setdefault(key, definition)
        label[key] = name if label.get(key, name) == name else None
    classes: dict[str, list[str]] = {name: [] for name in WORDNET_CLASSES}
    for key, name in label.items():
        if name is not None:
            classes[name].append(spelling[key])
    return classes


@register_dataset("text", "wordnet-glosses")
def wordnet_glosses(cfg: TextDataConfig, split: str) -> Texts:
    """WordNet noun definitions labelled by lexicographer file (animal, plant, food, person,
    artifact, location, substance, body, communication, act): ``data.per_class`` per class,
    chosen and split (``data.test_fraction`` held out) by a fixed hash of the text, so the set
    and the split are the same everywhere."""
    if not 0 < cfg.test_fraction < 1:
        raise DataError(f"data.test_fraction must lie strictly between 0 and 1, got {cfg.test_fraction}.")
    glosses = read_wordnet_glosses(cfg.root or WORDNET_ROOT)
    texts, labels = [], []
    for label, name in enumerate(WORDNET_CLASSES):
        chosen = sorted(glosses[name], key=lambda t: (_stable_hash(t), t))[: cfg.per_class]
        n_test = round(len(chosen) * cfg.test_fraction)
        part = chosen[n_test:] if split == "train" else chosen[:n_test]
        texts += part
        labels += [label] * len(part)
    if split == "train":  # interleave the classes, so data.limit keeps them all
        order = sorted(range(len(texts)), key=lambda i: (_stable_hash("order/" + texts[i]), i))
        texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    return Texts(texts, labels, list(WORDNET_CLASSES), cfg, split == "train")


def read_text_file(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str | None]]:
    """Examples of a text file: plain lines (``.txt`` and anything else), JSON lines (``.jsonl``)
    or CSV with a header (``.csv``, ``.tsv``). Empty examples, undecodable lines and broken
    records are skipped and counted in the log."""
    if not path.exists():
        raise DataError(f"Text file {path} does not exist.")
    suffix = path.suffix.lower()
    texts, labels, skipped = [], [], {"empty": 0, "undecodable": 0, "broken": 0}
    decoded = []
    for raw in path.read_bytes().splitlines():
        try:
            decoded.append(raw.decode("utf-8-sig" if not decoded else "utf-8"))
        except UnicodeDecodeError:
            skipped["undecodable"] += 1
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO("\n".join(decoded)), delimiter="\t" if suffix == ".tsv" else ",")
        if text_column not in (reader.fieldnames or []):
            raise DataError(f"{path} has no column {text_column!r} (its columns: {', '.join(reader.fieldnames or [])}). "
                            f"Set data.text_column.")
        records = list(reader)
    elif suffix == ".jsonl":
        records = []
        for line in decoded:
            if not line.strip():
                skipped["empty"] += 1
                continue
            try:
                record = json.loads(line)
                records.append(record if isinstance(record, dict) else {text_column: None})
            except json.JSONDecodeError:
                skipped["broken"] += 1
    else:
        records = [{text_column: line} for line in decoded]
    for record in records:
        text = record.get(text_column)
        if not isinstance(text, str) or not text.strip():
            skipped["empty" if text is None or isinstance(text, str) else "broken"] += 1
            continue
        texts.append(" ".join(text.split()))
        label = record.get(label_column)
        labels.append(None if label is None or label == "" else str(label))
    if any(skipped.values()):
        log.warning("%s: skipped %s", path, ", ".join(f"{n} {kind}" for kind, n in skipped.items() if n))
    return texts, labels


@register_dataset("text", "text-file")
def text_file(cfg: TextDataConfig, split: str) -> Texts:
    """``data.train`` / ``data.test``: one example per line, or JSONL/CSV records with a text
    column (``data.text_column``) and an optional label (``data.label_column``). Classes are the
    training file's labels, sorted."""
    if cfg.train is None:
        raise DataError("text-file needs data.train=FILE (one example per line, or .jsonl/.csv with a "
                        "'text' column and an optional 'label'); evaluation also needs data.test=FILE.")
    path = Path(cfg.train if split == "train" else cfg.test or "")
    if split == "test" and cfg.test is None:
        raise DataError("Evaluating a text-file run needs labelled test data: data.test=FILE.")
    texts, names = read_text_file(path, cfg.text_column, cfg.label_column)
    train_names = names if split == "train" else read_text_file(Path(cfg.train), cfg.text_column, cfg.label_column)[1]
    classes = sorted({n for n in train_names if n is not None})
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({n for n in names if n is not None and n not in index})
    if unknown:
        raise DataError(f"{path} has labels the training file {cfg.train} never uses: {', '.join(unknown[:5])}.")
    labels = [index[n] if n is not None else -1 for n in names]
    return Texts(texts, labels, classes, cfg, split == "train")


# ------------------------------------------------------------------------------ tokenizer


def train_tokenizer(texts: list[str], vocab_size: int, model: str = "wordpiece", lowercase: bool = True):
    """A WordPiece (BERT's) or byte-level BPE tokenizer trained on ``texts`` with ``tokenizers``;
    it adds [CLS] … [SEP] around every example. Its ids are canonical: the special tokens first,
    then the rest in sorted order. (``tokenizers`` breaks ties between equally frequent merges in
    hash-map order, huggingface/tokenizers#1794, so a few tokens of the vocabulary's tail may
    differ between two trainings on the same texts; a run keeps the one it trained.)"""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if model == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    elif model == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else []))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        raise ConfigError(f"data.tokenizer_model={model!r} is not a choice. Choose one of: wordpiece, bpe.")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer = _canonical_ids(tokenizer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tokenizer


def _canonical_ids(tokenizer):
    """The same tokenizer with its vocabulary renumbered: special tokens keep their ids, the
    others follow in sorted order (the trainer numbers them in hash-map order)."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    special = sorted((index, token) for token, index in vocab.items() if token in SPECIAL_TOKENS)
    assert [index for index, _ in special] == list(range(len(special)))  # the trainer puts them first
    rest = sorted(token for token in vocab if token not in SPECIAL_TOKENS)
    data["model"]["vocab"] = {token: index for index, token in enumerate([t for _, t in special] + rest)}
    return Tokenizer.from_str(json.dumps(data))


def load_tokenizer(path: str | Path):
    """A local Hugging Face tokenizer: a ``tokenizer.json`` file, or a directory holding one (or
    any tokenizer ``transformers`` can load offline, e.g. a BERT ``vocab.txt``)."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if file.is_file():
        return Tokenizer.from_file(str(file))
    if not path.is_dir():
        raise DataError(f"data.tokenizer={path} is neither a tokenizer.json file nor a tokenizer directory.")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True).backend_tokenizer
    except Exception as error:
        raise DataError(f"Cannot load a tokenizer from {path} ({str(error).splitlines()[0][:200]}). It needs a "
                        f"tokenizer.json or the files of a Hugging Face fast tokenizer.") from None


def _special_token(tokenizer, *candidates: str) -> int | None:
    for token in candidates:
        index = tokenizer.token_to_id(token)
        if index is not None:
            return index
    return None


def tokenizer_info(tokenizer, max_length: int) -> dict[str, Any]:
    """What a run keeps of its tokenizer: the whole tokenizer as JSON and the ids the encoder
    and the augmentations need."""
    pad = _special_token(tokenizer, "[PAD]", "<pad>")
    mask = _special_token(tokenizer, "[MASK]", "<mask>")
    if pad is None or mask is None:
        raise DataError("The tokenizer needs a padding token ([PAD] or <pad>) and a mask token ([MASK] or <mask>).")
    return {"tokenizer": tokenizer.to_str(), "vocab_size": tokenizer.get_vocab_size(), "max_length": max_length,
            "pad_token_id": pad, "mask_token_id": mask}


@lru_cache(maxsize=4)
def _tokenizer(serialized: str, max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(serialized)
    tokenizer.enable_truncation(max_length)
    pad = _special_token(tokenizer, "[PAD]", "<pad>")
    tokenizer.enable_padding(pad_id=pad, pad_token=tokenizer.id_to_token(pad))
    return tokenizer


def run_tokenizer(info: dict[str, Any]):
    """The run's tokenizer, truncating to ``max_length`` and padding to the longest example."""
    if "tokenizer" not in info:
        raise DataError("Text batches are tokenized with the run's tokenizer; pass the info of the training data "
                        "set (or the exported encoder's metadata['info']).")
    return _tokenizer(info["tokenizer"], info["max_length"])


# ------------------------------------------------------------------------------ front end


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


def decode(batch: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """The rows of a token batch as text: [CLS]/[SEP] and padding left out, masks shown as [MASK]."""
    tokenizer = run_tokenizer(info)
    keep = content_mask(batch).tolist()
    return [tokenizer.decode([i for i, k in zip(ids, row) if k], skip_special_tokens=False)
            for ids, row in zip(batch["input_ids"].tolist(), keep)]


def write_text_views(original: dict, view1: dict, view2: dict, path: Path, info: dict[str, Any]) -> None:
    """Each example as original / view 1 / view 2 decoded back to text, printed and written to ``path``."""
    blocks = []
    dropout1, dropout2 = view1["dropout"].tolist(), view2["dropout"].tolist()
    for i, (text, one, two) in enumerate(zip(decode(original, info), decode(view1, info), decode(view2, info))):
        blocks.append(f"[{i}] original: {text}\n    view 1:   {one}" + (f"   (dropout {dropout1[i]:g})" if dropout1[i] else "")
                      + f"\n    view 2:   {two}" + (f"   (dropout {dropout2[i]:g})" if dropout2[i] else ""))
    report = "\n".join(blocks) + "\n"
    print(report, end="")
    Path(path).write_text(report)


register_modality(Modality(
    name="text",
    data_config=TextDataConfig,
    collate=collate_texts,
    prepare=prepare_text,
    render_views=write_text_views,
    views_file="views.txt",
    description="sentences as token ids (a BERT-style transformers encoder)",
))


# ---------------------------------------------------------------------- augmentations


def content_mask(batch: dict[str, Any]) -> torch.Tensor:
    """The positions holding real tokens: neither special nor padding."""
    return batch["attention_mask"].bool() & ~batch["special_tokens_mask"]


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

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0), p: float = 1.0):
        super().__init__(p)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.scale = tuple(scale)

    def apply(self, x: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        content, index, total = content_index(x)
        n = len(total)
        span = (uniform(n, *self.scale, generator, total.device) * total).ceil().clamp(min=1).minimum(total.clamp(min=1))
        start = (torch.rand(n, generator=generator, device=total.device) * (total - span + 1)).floor()
        keep = content & (index >= start[:, None]) & (index < (start + span)[:, None])
        return keep_tokens(x, keep)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, p={self.p}"


@register_augmentation("text", "local_shuffle")
class LocalShuffle(Augmentation):
    """Tokens shuffled locally: no token moves more than ``window`` places (Lample et al. 2018:
    sort by index + U(0, window + 1))."""

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

    def __init__(self, rate: float = 0.1, p: float = 1.0):
        super().__init__(rate, p)

    def apply(self, x: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        return {**x, "dropout": torch.full_like(x["dropout"], self.rate)}


# ------------------------------------------------------------------------------- encoders


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
            tokens = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
        finally:
            self._rates.value = None
        weight = attention.unsqueeze(-1).to(tokens.dtype)
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
        extra = {f"{k}_token": t for k, *cands in (("cls", "[CLS]", "<s>"), ("sep", "[SEP]", "</s>"), ("unk", "[UNK]", "<unk>"))
                 if (t := next((c for c in cands if tokenizer.token_to_id(c) is not None), None))}
        PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=self.info["max_length"],
                                pad_token=names["pad"], mask_token=names["mask"], **extra).save_pretrained(path)
        return path


@register_encoder("text", "bert")
def bert(info: dict[str, Any], layers: int = 4, hidden: int = 256, heads: int = 4, intermediate: int = 1024,
         pretrained: str | None = None) -> TextEncoder:
    """A BERT encoder built from a config (``layers`` × ``hidden`` wide, ``heads`` attention
    heads, feed-forward ``intermediate``) and randomly initialized, or — with ``pretrained=PATH``
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
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        config = BertConfig(vocab_size=info["vocab_size"], hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, intermediate_size=intermediate,
                            max_position_embeddings=info["max_length"], type_vocab_size=1,
                            pad_token_id=info["pad_token_id"], hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
        model = BertModel(config, add_pooling_layer=False)
    return TextEncoder(model, info)
