"""``data.name=hf-dataset``: Hugging Face datasets saved to disk or as Parquet, text and audio,
read with the datasets library and trained and evaluated through the CLI."""

import io
import json

import numpy as np
import pytest
import soundfile

from mmbyol import cli
from mmbyol.config import load_config
from mmbyol.data import build_dataset
from mmbyol.errors import DataError

from .test_audio import AUDIO_TINY
from .test_text import CORPUS, TEXT_TINY

datasets = pytest.importorskip("datasets")


def text_splits():
    """CORPUS as train and test splits with a ClassLabel (odd lines 'b', even 'a')."""
    labels = datasets.ClassLabel(names=["a", "b"])
    features = datasets.Features({"sentence": datasets.Value("string"), "topic": labels})
    rows = [{"sentence": line, "topic": i % 2} for i, line in enumerate(CORPUS)]
    return datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows * 2, features=features),
        "validation": datasets.Dataset.from_list(rows[:6], features=features),
    })


def wav_bytes(frequency, seconds, rate):
    t = np.arange(int(rate * seconds)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.3 * np.sin(2 * np.pi * frequency * t), rate, format="WAV")
    return buffer.getvalue()


def audio_split(n, seed):
    rng = np.random.default_rng(seed)
    kinds = ["low", "high"]
    rows = [{"audio": {"bytes": wav_bytes((300, 2000)[i % 2] * (1 + 0.1 * rng.random()), 0.6, (22050, 8000)[i % 2]),
                       "path": None},
             "kind": kinds[i % 2]} for i in range(n)]
    return datasets.Dataset.from_list(rows).cast_column("audio", datasets.Audio(decode=False))


TEXT = [*TEXT_TINY, "data.name=hf-dataset", "data.text_column=sentence", "data.label_column=topic"]
AUDIO = [*AUDIO_TINY, "data.name=hf-dataset", "data.label_column=kind", "data.batch_size=4"]


def train_and_eval(options, run_dir):
    assert cli.main(["train", *options, f"run.dir={run_dir}"]) == 0
    assert cli.main(["eval", str(run_dir), "eval.labels_per_class=2", "eval.l2_grid=[0.01]"]) == 0
    return json.loads((run_dir / "eval.json").read_text())


def test_text_saved_to_disk_reads_class_names_and_validation_for_test(tmp_path):
    text_splits().save_to_disk(str(tmp_path / "ds"))
    cfg = load_config([*TEXT, f"data.root={tmp_path / 'ds'}"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert (len(train), len(test), train.classes) == (2 * len(CORPUS), 6, ["a", "b"])
    assert train[1] == (CORPUS[1], 1) and test.texts == CORPUS[:6]
    result = train_and_eval([*TEXT, f"data.root={tmp_path / 'ds'}"], tmp_path / "run")
    assert result["n_test"] == 6 and 0 <= result["linear_acc"] <= 1


def test_text_parquet_in_the_hub_layout_with_string_labels(tmp_path):
    for split, dataset in text_splits().items():
        dataset = dataset.cast_column("topic", datasets.Value("string")).map(
            lambda row: {"topic": "xy"[int(row["topic"])]})
        (tmp_path / "data").mkdir(exist_ok=True)
        dataset.to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    cfg = load_config([*TEXT, f"data.root={tmp_path}"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert train.classes == ["x", "y"] and train.labels[:2] == [0, 1] and len(test) == 6
    train_and_eval([*TEXT, f"data.root={tmp_path}"], tmp_path / "run")


def test_audio_saved_to_disk_decodes_bytes_of_any_rate_with_soundfile(tmp_path):
    datasets.DatasetDict({"train": audio_split(12, 0), "test": audio_split(6, 1)}).save_to_disk(str(tmp_path / "ds"))
    cfg = load_config([*AUDIO, f"data.root={tmp_path / 'ds'}"])
    train = build_dataset(cfg, "train")
    wave, label = train[1]
    assert wave.shape == (round(cfg.data.clip_seconds * 16000),) and label == 0 and train.classes == ["high", "low"]
    assert abs(float(wave[: 9600].abs().max()) - 0.3) < 0.02  # the 8 kHz clip resampled to 16 kHz, not silent
    result = train_and_eval([*AUDIO, f"data.root={tmp_path / 'ds'}"], tmp_path / "run")
    assert result["n_test"] == 6


def test_audio_parquet_and_its_errors(tmp_path):
    audio_split(8, 0).to_parquet(str(tmp_path / "train.parquet"))
    cfg = load_config([*AUDIO, f"data.root={tmp_path}"])
    assert len(build_dataset(cfg, "train")) == 8
    with pytest.raises(DataError, match="no Parquet files for the test split"):
        build_dataset(cfg, "test")
    with pytest.raises(DataError, match="no column sound; its columns are audio, kind"):
        build_dataset(load_config([*AUDIO, f"data.root={tmp_path}", "data.audio_column=sound"]), "train")
    audio_split(4, 0).save_to_disk(str(tmp_path / "single"))
    with pytest.raises(DataError, match="holds one Dataset, the training split"):
        build_dataset(load_config([*AUDIO, f"data.root={tmp_path / 'single'}"]), "test")
