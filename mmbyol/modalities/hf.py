"""Hugging Face ``datasets`` as users keep them, read offline with the ``datasets`` library: a
folder written by ``save_to_disk`` (one ``Dataset``, or a ``DatasetDict`` of splits) or Parquet
files (one file, or a folder in the Hub's layout, ``[data/]SPLIT-00000-of-00001.parquet``). The
text and audio modalities' ``hf-dataset`` data sets take their columns from here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .base import HELD_OUT_FOLDERS

INSTALL = "pip install datasets"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(f"data.name=hf-dataset reads with the datasets library: {INSTALL}") from None
    datasets.disable_progress_bars()
    return datasets


def _parquet_files(root: Path, split: str) -> list[Path]:
    for name in [split] if split == "train" else HELD_OUT_FOLDERS:
        found = sorted(p for p in root.rglob("*.parquet") if p.stem == name or p.stem.startswith(f"{name}-"))
        if found:
            return found
    return []


def open_split(root: str | Path | None, split: str, columns: list[str]):
    """The ``split`` ("train" or "test"; test falls back to validation, valid, val) of the data set
    at ``root`` as a ``datasets.Dataset``, checked to hold ``columns``."""
    if root is None:
        raise DataError("data.name=hf-dataset needs data.root=PATH: a folder from Dataset.save_to_disk or "
                        "DatasetDict.save_to_disk, or Parquet files (a file, or a folder of SPLIT-*.parquet).")
    datasets, path = _datasets(), Path(root).expanduser()
    if not path.exists():
        raise DataError(f"data.root={path} does not exist.")
    held_out = "the test split (or validation)"
    if path.is_file() or (path.is_dir() and not (path / "dataset_dict.json").exists()
                          and not (path / "state.json").exists()):
        if path.is_file():
            files = [path] if split == "train" else []
        else:
            files = _parquet_files(path, split)
        if not files:
            raise DataError(f"{path} has no Parquet files for {held_out if split != 'train' else 'the train split'}: "
                            f"name them train-*.parquet and test-*.parquet (or point data.root at a folder from "
                            f"save_to_disk)." if path.is_dir() else
                            f"{path} is one Parquet file, the training split; evaluation needs {held_out}: put "
                            f"train-*.parquet and test-*.parquet in a folder and point data.root at it.")
        dataset = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    else:
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as error:
            raise DataError(f"{path} cannot be read by datasets.load_from_disk: {error}") from None
        if isinstance(loaded, datasets.DatasetDict):
            names = [split] if split == "train" else HELD_OUT_FOLDERS
            name = next((n for n in names if n in loaded), None)
            if name is None:
                raise DataError(f"{path} holds the splits {', '.join(loaded)}, not "
                                f"{'train' if split == 'train' else held_out}.")
            dataset = loaded[name]
        elif split == "train":
            dataset = loaded
        else:
            raise DataError(f"{path} holds one Dataset, the training split; evaluation needs {held_out}: save a "
                            f"DatasetDict (e.g. dataset.train_test_split(test_size=0.2).save_to_disk(PATH)).")
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise DataError(f"{path} ({split}) has no column {', '.join(missing)}; its columns are "
                        f"{', '.join(dataset.column_names)}. Set data.text_column / data.audio_column / "
                        f"data.label_column.")
    return dataset


def open_labelled(root: str | Path | None, split: str, column: str, label_column: str):
    """The ``split`` with its ``column`` (see :func:`open_split`), and its labels as class numbers
    with the class names: a ``ClassLabel``'s own names, else the training split's values, sorted
    (the training split is read for them only then); -1 for every item when there is no label
    column: ``(dataset, labels, classes)``."""
    dataset = open_split(root, split, [column])
    if label_column not in dataset.column_names:
        return dataset, [-1] * len(dataset), []
    values = dataset[label_column]
    feature = dataset.features[label_column]
    if hasattr(feature, "names"):  # ClassLabel
        return dataset, [int(v) for v in values], list(feature.names)
    reference = values if split == "train" else open_split(root, "train", [column, label_column])[label_column]
    classes = sorted({str(v) for v in reference})
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({str(v) for v in values} - set(index))
    if unknown:
        raise DataError(f"The test split's labels {unknown[:5]} do not occur in the training split.")
    return dataset, [index[str(v)] for v in values], classes
