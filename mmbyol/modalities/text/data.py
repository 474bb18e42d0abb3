"""Text data sets: WordNet's noun definitions labelled by topic, and a user's text files (plain
lines, JSONL or CSV). Items are strings; a training split's ``info`` holds the run's tokenizer."""

from __future__ import annotations

import csv
import io
import json
import logging
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ...config import DataConfig
from ...errors import DataError
from ...registry import register_dataset
from ..hf import open_labelled
from .tokenizer import checkpoint_max_length, load_tokenizer, tokenizer_info, train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class TextDataConfig(DataConfig):
    name: str = "wordnet-glosses"
    # tokens per example, special tokens included; longer ones are truncated. null: the limit of the
    # checkpoint at data.tokenizer (sentence-transformers' max_seq_length, else model_max_length)
    max_length: int | None = 64
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
        max_length = self.cfg.max_length or checkpoint_max_length(self.cfg.tokenizer)
        if not self.training:
            return {"max_length": max_length}
        if self.cfg.tokenizer:
            tokenizer = load_tokenizer(self.cfg.tokenizer)
        else:
            tokenizer = train_tokenizer(self.texts, self.cfg.vocab_size, self.cfg.tokenizer_model, self.cfg.lowercase)
        return tokenizer_info(tokenizer, max_length)


# WordNet's lexicographer files (lexnames(5WN)) that make the ten classes, in a fixed order.
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
                        f"(`make data` in a clone does), or point data.root at a folder holding data.noun.")
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
    records are skipped and counted in the log, with the first lines of each kind."""
    if not path.exists():
        raise DataError(f"Text file {path} does not exist.")
    suffix = path.suffix.lower()
    texts, labels = [], []
    skipped: dict[str, list[int]] = {"empty": [], "undecodable": [], "broken": [], "textless": []}  # line numbers
    numbered = []  # (line number, text) of every line that decodes
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            numbered.append((number, raw.decode("utf-8-sig" if number == 1 else "utf-8")))
        except UnicodeDecodeError:
            skipped["undecodable"].append(number)
    if suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO("\n".join(line for _, line in numbered)),
                                delimiter="\t" if suffix == ".tsv" else ",")
        if text_column not in (reader.fieldnames or []):
            raise DataError(
                f"{path} has no column {text_column!r} (its columns: {', '.join(reader.fieldnames or [])}). "
                f"Set data.text_column."
            )
        records = [(numbered[reader.line_num - 1][0], row) for row in reader]  # a row's last line
    elif suffix == ".jsonl":
        records = []
        for number, line in numbered:
            if not line.strip():
                skipped["empty"].append(number)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append((number, record))
            else:
                skipped["broken"].append(number)
    else:
        records = [(number, {text_column: line}) for number, line in numbered]
    for number, record in records:
        text = record.get(text_column)
        if not isinstance(text, str):
            skipped["textless"].append(number)
        elif not text.strip():
            skipped["empty"].append(number)
        else:
            texts.append(" ".join(text.split()))
            label = record.get(label_column)
            labels.append(None if label is None or label == "" else str(label))
    kinds = {"empty": "empty", "undecodable": "undecodable, not UTF-8,", "broken": "broken, not a JSON object,",
             "textless": f"without a string under {text_column!r} (data.text_column)"}
    counted = [f"{len(lines)} {kinds[kind]} at {_line_numbers(lines)}" for kind, lines in skipped.items() if lines]
    if counted:
        log.warning("%s: skipped %s", path, "; ".join(counted))
    return texts, labels


def _line_numbers(lines: list[int]) -> str:
    """``line 3`` or ``lines 3, 8, 9, …``: the first three."""
    shown = ", ".join(str(n) for n in sorted(lines)[:3]) + (", …" if len(lines) > 3 else "")
    return f"line {shown}" if len(lines) == 1 else f"lines {shown}"


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
    if cfg.test is not None and not Path(cfg.test).exists():  # said before training, not when evaluating after it
        raise DataError(f"data.test={cfg.test} does not exist (evaluation reads it). Correct the path, or leave "
                        f"data.test unset to train without it.")
    texts, names = read_text_file(path, cfg.text_column, cfg.label_column)
    train_names = names if split == "train" else read_text_file(Path(cfg.train), cfg.text_column, cfg.label_column)[1]
    classes = sorted({n for n in train_names if n is not None})
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({n for n in names if n is not None and n not in index})
    if unknown:
        raise DataError(f"{path} has labels the training file {cfg.train} never uses: {', '.join(unknown[:5])}.")
    labels = [index[n] if n is not None else -1 for n in names]
    return Texts(texts, labels, classes, cfg, split == "train")


@register_dataset("text", "hf-dataset")
def hf_dataset(cfg: TextDataConfig, split: str) -> Texts:
    """A Hugging Face dataset at ``data.root`` (a ``save_to_disk`` folder or Parquet files,
    ``mmbyol.modalities.hf``): the text column (``data.text_column``) and, where there is one, the
    label column (``data.label_column``; a ``ClassLabel`` keeps its names). Empty texts are skipped
    and counted."""
    dataset, labels, classes = open_labelled(cfg.root, split, cfg.text_column, cfg.label_column)
    rows = [(str(text), label) for text, label in zip(dataset[cfg.text_column], labels) if text and str(text).strip()]
    if len(rows) < len(labels):
        log.warning("%s (%s): skipped %d empty texts", cfg.root, split, len(labels) - len(rows))
    return Texts([text for text, _ in rows], [label for _, label in rows], classes, cfg, split == "train")
