"""Bad data through a real training run, per modality: what can be read is read (any channel
layout, sample rate, encoding), what cannot is skipped and counted, and a data set with nothing
usable in it stops with a message that says what to do."""

import json

import numpy as np
import pytest
import soundfile
from PIL import Image

from mmbyol.config import load_config
from mmbyol.errors import DataError
from mmbyol.train import train

from ..conftest import TINY
from ..modalities.test_text import TEXT_TINY

FAST = ["trainer.max_steps=1", "trainer.log_every=1", "trainer.progress=false", "device=cpu",
        "model.hidden_dim=64", "model.projection_dim=32", "optim.warmup_epochs=0"]


def last_record(run_dir) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


# ---------------------------------------------------------------------------------- image


def write_images(folder, count: int, mode: str = "RGB", suffix: str = ".png", seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"{mode.replace(';', '')}-{seed}-{i}{suffix}")


def test_images_of_every_mode_train_and_broken_files_are_skipped_and_counted(tmp_path, tally):
    root = tmp_path / "images"
    write_images(root / "train" / "a", 6)
    write_images(root / "train" / "b", 6, seed=1)
    readable = [("RGBA", ".png"), ("L", ".png"), ("LA", ".png"), ("P", ".png"), ("I;16", ".png"), ("CMYK", ".jpg"),
                ("1", ".bmp")]
    for mode, suffix in readable:
        write_images(root / "train" / "a", 1, mode, suffix, seed=2)
    good_png = next((root / "train" / "a").glob("RGB-*.png")).read_bytes()
    (root / "train" / "b" / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (root / "train" / "b" / "empty.png").write_bytes(b"")
    (root / "train" / "b" / "not-an-image.jpg").write_bytes(b"<html>404</html>")
    tally["bad inputs tried"] += len(readable) + 3
    run = train(load_config([*FAST, "data.name=image-folder", f"data.root={root}", "data.image_size=32",
                             "data.batch_size=22", f"run.dir={tmp_path / 'run'}"]))
    assert last_record(run)["skipped"] == 3  # 12 + 7 odd modes trained on, 3 broken files counted


def test_an_image_folder_with_no_images_says_so(tmp_path, tally):
    (tmp_path / "images" / "train" / "a").mkdir(parents=True)
    (tmp_path / "images" / "train" / "a" / "notes.txt").write_text("no pictures here")
    tally["bad inputs tried"] += 1
    with pytest.raises(DataError, match=r"No image files \(.*\.jpg.*\) under .*train: it holds 1 \.txt\. Expected"):
        train(load_config([*FAST, "data.name=image-folder", f"data.root={tmp_path / 'images'}",
                           f"run.dir={tmp_path / 'run'}"]))


def test_a_mostly_unreadable_data_set_stops_instead_of_training_on_nothing(tmp_path, tally):
    root = tmp_path / "images"
    write_images(root / "train" / "a", 4)
    for i in range(12):
        (root / "train" / "a" / f"broken-{i}.png").write_bytes(b"\x89PNG broken")
    tally["bad inputs tried"] += 12
    with pytest.raises(DataError, match="12 of the 16 training items.*unreadable.*data.root"):
        train(load_config([*FAST, "data.name=image-folder", f"data.root={root}", "data.image_size=32",
                           "data.batch_size=16", f"run.dir={tmp_path / 'run'}"]))


# ---------------------------------------------------------------------------------- audio


def tone(rate: int, seconds: float = 0.6, channels: int = 1, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * frequency * t)] * channels, axis=1).astype(np.float32)


AUDIO = [*FAST, "modality=audio", "data.name=audio-folder", "encoder.name=byola_cnn_small", "encoder.d=64"]


def test_audio_of_any_rate_and_layout_trains_and_broken_files_are_skipped_and_counted(tmp_path, tally):
    root = tmp_path / "sounds" / "train"
    for label, frequency in enumerate((300, 1200)):
        for i in range(5):
            (root / f"c{label}").mkdir(parents=True, exist_ok=True)
            wave = tone(16000, frequency=frequency * (1 + 0.05 * i))
            soundfile.write(str(root / f"c{label}" / f"{i}.wav"), wave, 16000)
    readable = {"stereo-44k.wav": (44100, 2, "WAV"), "8k.wav": (8000, 1, "WAV"), "4ch-48k.flac": (48000, 4, "FLAC"),
                "22k.ogg": (22050, 1, "OGG"), "short-0.1s.wav": (16000, 1, "WAV")}
    for name, (rate, channels, kind) in readable.items():
        seconds = 0.1 if "short" in name else 0.6
        soundfile.write(str(root / "c0" / name), tone(rate, seconds, channels), rate, format=kind)
    nan = tone(16000)
    nan[100:200] = np.nan
    soundfile.write(str(root / "c1" / "nan-samples.wav"), nan, 16000, subtype="FLOAT")
    soundfile.write(str(root / "c1" / "zero-length.wav"), np.zeros((0, 1), np.float32), 16000)
    (root / "c1" / "empty.flac").write_bytes(b"")
    (root / "c1" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    tally["bad inputs tried"] += len(readable) + 4
    run = train(load_config([*AUDIO, f"data.root={root.parent}", "data.batch_size=19", f"run.dir={tmp_path / 'run'}"]))
    record = last_record(run)
    assert record["skipped"] == 4 and np.isfinite(record["loss"])  # the NaN clip never reached the loss


def test_an_audio_folder_of_only_broken_files_says_so(tmp_path, tally):
    root = tmp_path / "sounds" / "train" / "c0"
    root.mkdir(parents=True)
    for i in range(4):
        (root / f"{i}.wav").write_bytes(b"not audio")
    tally["bad inputs tried"] += 4
    with pytest.raises(DataError, match="None of the audio files.*could be read"):
        train(load_config([*AUDIO, f"data.root={root.parent.parent}", "data.batch_size=2",
                           f"run.dir={tmp_path / 'run'}"]))


# ----------------------------------------------------------------------------------- text


def test_text_with_bad_encodings_and_blank_lines_trains_on_what_is_readable(tmp_path, caplog, tally):
    lines = [f"example sentence number {i} about topic {i % 3}".encode() for i in range(20)]
    lines[3] = "caf\xe9 au lait, latin-1".encode("latin-1")  # not UTF-8
    lines[7] = b"\xff\xfe\x00b\x00a\x00d"  # UTF-16 bytes
    lines[11] = b"   "
    lines[12] = b""
    lines[15] = "naïve café, ünïcödé ✓".encode()  # fine
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    tally["bad inputs tried"] += 4
    with caplog.at_level("WARNING"):
        run = train(load_config([*TEXT_TINY, "trainer.max_steps=1", "trainer.log_every=1", f"data.train={path}",
                                 f"run.dir={tmp_path / 'run'}"]))
    assert "2 empty" in caplog.text and "2 undecodable" in caplog.text
    assert np.isfinite(last_record(run)["loss"])


def test_a_text_file_with_nothing_in_it_says_so(tmp_path, tally):
    path = tmp_path / "blank.txt"
    path.write_bytes(b"\n   \n\xff\xfe\n")
    tally["bad inputs tried"] += 1
    with pytest.raises(DataError, match="train split.*is empty.*data.train=.*blank.txt"):
        train(load_config([*TEXT_TINY, f"data.train={path}", f"run.dir={tmp_path / 'run'}"]))


def test_fashion_mnist_from_a_folder_without_it_names_the_package(tmp_path, tally):
    tally["bad inputs tried"] += 1
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        train(load_config([*TINY, f"data.root={tmp_path}", f"run.dir={tmp_path / 'run'}"]))
