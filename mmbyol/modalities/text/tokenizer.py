"""The run's tokenizer: trained on the training split with ``tokenizers`` (WordPiece or
byte-level BPE), or a local Hugging Face one, kept whole in the run's ``info``."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ...errors import ConfigError, DataError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


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
        lower = [normalizers.Lowercase()] if lowercase else []
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), *lower])
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


def checkpoint_max_length(path: str | Path | None) -> int:
    """The longest input a checkpoint folder is meant for: sentence-transformers'
    ``max_seq_length``, else its tokenizer's ``model_max_length``, else its position count."""
    folder = Path(path) if path else None
    if folder is not None and folder.is_file():
        folder = folder.parent
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length"),
                      ("config.json", "max_position_embeddings")) if folder is not None else ():
        file = folder / name
        value = json.loads(file.read_text()).get(key) if file.is_file() else None
        if isinstance(value, int) and 0 < value < 100_000:  # transformers writes 1e30 for "no limit"
            return value
    raise DataError(f"data.max_length=null takes the limit of the checkpoint at data.tokenizer, but {path} records "
                    f"none: set data.max_length=N")


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
