import contextlib
import io
import json
import math
import os
import shutil
import signal
import time

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from mmbyol.augment import build_augmentation, build_views
from mmbyol.checkpoint import load_checkpoint
from mmbyol.config import load_config, to_container
from mmbyol.data import build_dataset, collate_items, evenly_spaced, prepare_views
from mmbyol.errors import DataError, Stopped
from mmbyol.modalities.audio import spoken_digits
from mmbyol.modalities.audio.data import load_audio
from mmbyol.modalities.audio.frontend import log_mel, prepare_audio
from mmbyol.modalities.audio.noise import clip_noise
from mmbyol.modalities.audio.spoken_digits import ACCENTS, DIGITS, SPOKEN_DIGITS_VERSION, VOICE_VARIANTS
from mmbyol.modalities.base import TwoViews, build_encoder, get_modality
from mmbyol.monitor import Monitor
from mmbyol.registry import AUGMENTATIONS
from mmbyol.runtime import stopped_by_signals

from ..conftest import cli, train_interrupted

INFO = {"sample_rate": 16000, "clip_samples": 15200, "n_fft": 1024, "hop_length": 160, "n_mels": 64,
        "f_min": 60.0, "f_max": 7800.0, "mean": -10.0, "std": 5.0}
AUDIO_AUGMENTATIONS = ["mixup", "random_resize_crop", "random_linear_fader", "gain", "time_mask", "freq_mask", "noise",
                      "denoise"]
# Small and fast: the narrow encoder, tiny heads, a few steps on the tiny folder below.
AUDIO_TINY = [
    "modality=audio", "data.name=audio-folder", "data.batch_size=8", "trainer.max_steps=4",
    "trainer.progress=false", "trainer.checkpoint_every=2", "trainer.log_every=2", "model.hidden_dim=64",
    "model.projection_dim=32", "optim.warmup_epochs=0", "device=cpu", "encoder.name=byola_cnn_small", "encoder.d=64",
]


def write_tone(path, frequency, seconds, rate=22050, channels=2, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * frequency * t) + 0.01 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.stack([wave] * channels, axis=1), rate)


@pytest.fixture(scope="module")
def tone_folder(tmp_path_factory):
    """train/ and test/ of four 'classes' (tones), stereo at 22.05 kHz, 0.5 to 1.4 s long."""
    root = tmp_path_factory.mktemp("tones")
    for split, count in (("train", 10), ("test", 5)):
        for label, frequency in enumerate((250, 600, 1500, 3500)):
            for i in range(count):
                write_tone(root / split / f"c{label}" / f"{i}.wav", frequency * (1 + 0.02 * i), 0.5 + 0.1 * i, seed=i)
    return root


def snr_db(speech, noise):
    """The SNR in dB of ``noise`` against the power of the whole clip ``speech``, as the set defines it."""
    return 10 * math.log10(float(speech.pow(2).mean() / noise.pow(2).mean()))


def spectrograms(n=8, seed=0):
    return torch.randn(n, 1, 64, 96, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------- front end


def test_log_mel_matches_torchaudio_and_puts_a_tone_in_its_mel_bin():
    t = torch.arange(15200) / 16000
    tone = torch.sin(2 * math.pi * 1000 * t).unsqueeze(0)
    ours = log_mel(tone, INFO, torch.device("cpu"))
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, hop_length=160, n_mels=64, f_min=60, f_max=7800)
    reference = mel(tone)
    assert ours.shape == (1, 1, 64, 96)
    torch.testing.assert_close(ours[:, 0], (reference + torch.finfo().eps).log())
    fbanks = torchaudio.functional.melscale_fbanks(513, 60.0, 7800.0, 64, 16000)  # (freq bins, mels)
    expected = int(fbanks[round(1000 / 16000 * 1024)].argmax())
    assert int(ours[0, 0].mean(dim=1).argmax()) == expected


def test_prepare_normalizes_with_the_given_statistics():
    waves = torch.randn(2, 15200)
    prepared = get_modality("audio").prepare(waves, torch.device("cpu"), INFO)
    torch.testing.assert_close(prepared, (log_mel(waves, INFO, torch.device("cpu")) + 10.0) / 5.0)
    with pytest.raises(DataError, match="statistics"):
        get_modality("audio").prepare(waves, torch.device("cpu"), {k: v for k, v in INFO.items() if k != "mean"})


def test_load_audio_mixes_down_and_resamples(tmp_path):
    write_tone(tmp_path / "a.wav", 440, 1.0, rate=22050, channels=2)
    wave = load_audio(tmp_path / "a.wav", 16000)
    assert wave.shape == (16000,) and wave.dtype == torch.float32
    spectrum = torch.fft.rfft(wave).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s at 16 kHz: bin k is k Hz


# ---------------------------------------------------------------------- augmentations


def test_the_byol_a_augmentations_are_registered():
    assert set(AUDIO_AUGMENTATIONS) <= set(AUGMENTATIONS.names("audio"))


@pytest.mark.parametrize("name", AUDIO_AUGMENTATIONS)
def test_p_zero_is_the_identity(name):
    augmentation = build_augmentation("audio", {"name": name, "p": 0.0})
    x = spectrograms()
    for _ in range(2):  # twice: mixup has a memory after the first batch
        assert torch.equal(augmentation(x, torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("name", AUDIO_AUGMENTATIONS)
def test_p_one_changes_every_sample_and_keeps_the_shape(name):
    options = {"max_width": 30} if "mask" in name else {}
    augmentation = build_augmentation("audio", {"name": name, "p": 1.0, **options})
    generator = torch.Generator().manual_seed(0)
    augmentation(spectrograms(seed=1), generator)  # fills mixup's memory
    x = spectrograms(n=64)
    out = augmentation(x, generator)
    assert out.shape == x.shape
    changed = (out - x).abs().flatten(1).amax(dim=1) > 1e-4
    # a mask may draw width 0 now and then; every other augmentation changes every sample
    assert changed.float().mean() > (0.9 if "mask" in name else 0.999)


@pytest.mark.parametrize("name", AUDIO_AUGMENTATIONS)
def test_two_samples_get_different_random_parameters(name):
    augmentation = build_augmentation("audio", {"name": name, "p": 1.0})
    generator = torch.Generator().manual_seed(0)
    augmentation(spectrograms(seed=1), generator)
    x = spectrograms(n=1).expand(16, -1, -1, -1).contiguous()
    out = augmentation(x, generator)
    assert len({tuple(row.flatten().round(decimals=4).tolist()) for row in out}) >= 14


def test_mixup_with_ratio_zero_is_the_identity():
    mixup = build_augmentation("audio", {"name": "mixup", "ratio": 0.0})
    generator = torch.Generator().manual_seed(0)
    for seed in range(3):
        x = spectrograms(seed=seed)
        assert torch.equal(mixup(x, generator), x)
    assert int(mixup.filled) == 24


def test_mixup_mixes_in_the_power_domain_with_remembered_inputs():
    mixup = build_augmentation("audio", {"name": "mixup", "ratio": 1.0, "memory_size": 4})
    generator = torch.Generator().manual_seed(0)
    background = torch.full((4, 1, 2, 3), 2.0)
    assert torch.equal(mixup(background, generator), background)  # nothing remembered yet
    x = torch.zeros(4, 1, 2, 3)
    out = mixup(x, generator)
    # log((1 − λ)·e^0 + λ·e^2) for some λ in [0, 1]: between 0 and 2, one λ per sample
    assert (out >= 0).all() and (out <= 2 + 1e-6).all()
    assert (out.flatten(1).std(dim=1) < 1e-5).all()
    assert int(mixup.filled) == 4 and torch.equal(mixup.memory.float(), x)  # a ring of the last 4 inputs


def test_mixup_memory_survives_a_checkpoint_round_trip():
    augment = to_container(load_config(["modality=audio"]).augment)
    views = build_views("audio", augment["view1"], augment["view2"])
    generator = torch.Generator().manual_seed(0)
    for seed in range(3):
        x = spectrograms(seed=seed)
        views(x, x, generator)
    buffer = io.BytesIO()
    torch.save({"views": views.state_dict(), "rng": generator.get_state()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored = build_views("audio", augment["view1"], augment["view2"])
    restored.load_state_dict(saved["views"])
    memory = restored.view1.augmentations[0].memory
    assert memory.shape == (2048, 1, 64, 96) and torch.equal(memory, views.view1.augmentations[0].memory)
    x = spectrograms(seed=9)
    expected = views(x, x, generator)
    got = restored(x, x, torch.Generator().set_state(saved["rng"]))
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_random_resize_crop_at_scale_one_without_canvas_is_the_identity():
    crop = build_augmentation("audio", {"name": "random_resize_crop", "virtual_crop_scale": [1.0, 1.0],
                                         "freq_scale": [1.0, 1.0], "time_scale": [1.0, 1.0]})
    x = spectrograms()
    torch.testing.assert_close(crop(x, torch.Generator().manual_seed(0)), x)


def test_linear_fader_adds_a_straight_ramp_over_time():
    fader = build_augmentation("audio", {"name": "random_linear_fader", "gain": 1.0})
    x = spectrograms()
    ramp = fader(x, torch.Generator().manual_seed(0)) - x
    assert torch.allclose(ramp, ramp[:, :, :1, :].expand_as(ramp), atol=1e-5)  # the same for every mel bin
    assert torch.allclose(ramp.diff(n=2, dim=-1), torch.zeros(()), atol=1e-5)  # linear in time
    assert ramp.abs().max() <= 1.0 + 1e-5


def test_noise_raises_the_floor_per_sample_and_never_lowers_the_input():
    noise = build_augmentation("audio", {"name": "noise", "level": [-1.0, 0.0], "grain": 0.0, "tilt": 0.0})
    x = spectrograms()
    y = noise(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and (y >= x - 1e-6).all()
    # without grain or tilt the floor is flat: cells far below it sit on it (logaddexp → the floor)
    floor = y.amin(dim=(1, 2, 3))
    mean = x.mean(dim=(1, 2, 3))
    assert ((floor >= mean - 1.0 - 1e-4) & (floor <= mean + math.log(2) + 1e-4)).all()
    assert floor.unique().numel() == len(x)  # an independent level per sample
    quiet = build_augmentation("audio", {"name": "noise", "level": [-60.0, -60.0]})
    assert torch.allclose(quiet(x, torch.Generator().manual_seed(0)), x, atol=1e-5)  # a floor far below: identity


def test_denoise_subtracts_the_mean_level_down_to_the_floor_and_never_raises_the_input():
    x = spectrograms()
    identity = build_augmentation("audio", {"name": "denoise", "strength": [0.0, 0.0]})
    assert torch.equal(identity(x, torch.Generator()), x)
    y = build_augmentation("audio", {"name": "denoise", "floor": 0.05})(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and (y <= x).all() and (y >= x + math.log(0.05) - 1e-5).all()
    # strength 1 on a stationary bin (its level everywhere) takes it to the floor; a cell 6 above
    # its bin's level loses what the level's power is worth: log(1 − e^−6)
    full = build_augmentation("audio", {"name": "denoise", "strength": [1.0, 1.0], "floor": 0.05})
    x = torch.zeros(1, 1, 2, 4)
    x[0, 0, 1] = torch.tensor([-2.0, -2.0, -2.0, 6.0])  # level 0: the loud cell sits 6 above it
    y = full(x, torch.Generator())
    torch.testing.assert_close(y[0, 0, 0], torch.full((4,), math.log(0.05)))
    torch.testing.assert_close(y[0, 0, 1, 3], torch.tensor(6.0 + math.log(1 - math.exp(-6.0))))
    torch.testing.assert_close(y[0, 0, 1, :3], torch.full((3,), -2.0 + math.log(0.05)))  # below the level: the floor


@pytest.mark.parametrize("name,axis", [("time_mask", -1), ("freq_mask", -2)])
def test_masks_zero_a_band_no_wider_than_max_width(name, axis):
    mask = build_augmentation("audio", {"name": name, "max_width": 10})
    x = spectrograms(n=32) + 100.0  # nothing is 0 before masking
    zeroed = mask(x, torch.Generator().manual_seed(0)) == 0
    band = zeroed.all(dim=-2 if axis == -1 else -1).squeeze(1)  # (n, size) lanes zeroed whole
    assert torch.equal(zeroed.any(dim=-2 if axis == -1 else -1).squeeze(1), band)
    assert (band.sum(dim=1) <= 10).all() and band.sum() > 0


def test_encoders_map_spectrograms_to_features():
    for name, d in (("byola_cnn", 2048), ("byola_cnn_small", 512)):
        encoder = build_encoder("audio", {"name": name}, INFO).eval()
        assert encoder(spectrograms(n=2)).shape == (2, d) and encoder.out_dim == d
    assert build_encoder("audio", {"name": "byola_cnn", "d": 256}, INFO)(spectrograms(n=2)).shape == (2, 256)


def test_pooling_before_the_relu_gives_byol_a_order_bit_for_bit():
    import copy

    encoder = build_encoder("audio", {"name": "byola_cnn_small", "dropout": 0.0}, INFO)
    reference = copy.deepcopy(encoder)  # BYOL-A's order: conv, BN, ReLU, max-pool
    for block in range(3):
        f = reference.features
        f[4 * block + 2], f[4 * block + 3] = f[4 * block + 3], f[4 * block + 2]
    assert isinstance(reference.features[2], torch.nn.ReLU) and isinstance(encoder.features[2], torch.nn.MaxPool2d)
    x = spectrograms(n=8)
    ours, theirs = encoder(x), reference(x)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    assert torch.equal(ours, theirs)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(encoder.parameters(), reference.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(encoder.buffers(), reference.buffers()))  # BN running stats


# ------------------------------------------------------------------------ data sets


def test_audio_folder_items_are_fixed_length_and_deterministic_per_epoch(tone_folder):
    cfg = load_config(["modality=audio", "data.name=audio-folder", f"data.root={tone_folder}"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert len(train) == 40 and len(test) == 20 and train.classes == ["c0", "c1", "c2", "c3"]
    assert {"mean", "std"} <= set(train.info) and train.info["clip_samples"] == 15200
    item, label = train[0]
    assert item.shape == (15200,) and label == 0
    torch.manual_seed(123)  # evaluation reads the same windows, whatever the global seed
    assert all(torch.equal(train[i][0], build_dataset(cfg, "train")[i][0]) for i in range(8))
    train.set_epoch(0)
    first = [train[i][0] for i in range(8)]
    train.set_epoch(1)
    other = [train[i][0] for i in range(8)]
    train.set_epoch(0)
    again = [train[i][0] for i in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))  # a new epoch, new crop positions
    assert torch.equal(test[3][0], test[3][0])


def test_evaluation_reads_a_clip_from_its_start_and_pads_a_short_one_at_its_end(tone_folder):
    """As BYOL-A's evaluation package reads test clips; a centred window cut the start off a word."""
    cfg = load_config(["modality=audio", "data.name=audio-folder", f"data.root={tone_folder}"])
    clips = build_dataset(cfg, "train")  # read as evaluation reads it: training has not called set_epoch
    lengths = {index: len(load_audio(path, 16000)) for index, path in enumerate(clips.files)}
    long, short = max(lengths, key=lengths.get), min(lengths, key=lengths.get)
    assert lengths[long] > 15200 > lengths[short]
    assert torch.equal(clips[long][0], load_audio(clips.files[long], 16000)[:15200])
    wave = load_audio(clips.files[short], 16000)
    assert torch.equal(clips[short][0][: len(wave)], wave) and not clips[short][0][len(wave):].any()


def test_corrupt_and_empty_files_are_skipped_and_counted(tmp_path, tone_folder):
    root = tmp_path / "data"
    shutil.copytree(tone_folder, root)
    (root / "train" / "c0" / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (root / "train" / "c1" / "empty.wav").write_bytes(b"")
    soundfile.write(str(root / "train" / "c2" / "zero-length.wav"), np.zeros((0, 1)), 16000)
    cfg = load_config([*AUDIO_TINY, f"data.root={root}", "data.batch_size=43", "trainer.max_steps=1"])
    dataset = build_dataset(cfg, "train")
    inputs, labels, skipped = collate_items([dataset[i] for i in range(len(dataset))], get_modality("audio").collate)
    assert skipped == 3 and len(inputs) == len(labels) == 40
    from mmbyol.train import train

    run = train(load_config([*AUDIO_TINY, f"data.root={root}", f"run.dir={tmp_path / 'run'}",
                             "data.batch_size=43", "trainer.max_steps=1", "trainer.log_every=1"]))
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped"] == 3


def test_audio_folder_groups_files_by_the_folder_below_their_class(tmp_path):
    for path in ("train/yes/anna/1.wav", "train/yes/anna/2.wav", "train/yes/ben/1.wav", "train/no/3.wav",
                 "test/yes/1.wav"):
        write_tone(tmp_path / path, 300, 0.2)
    cfg = load_config(["modality=audio", "data.name=audio-folder", f"data.root={tmp_path}"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert train.groups == ["no/3.wav", "anna", "anna", "ben"]  # classes sorted: no, yes; a loose file is its own
    assert test.groups is None  # no folders below the classes: nothing to hold apart
    monitor = Monitor(train, get_modality("audio"), train.info, torch.device("cpu"), contextlib.nullcontext,
                      4, 4, 200, 0.1)
    # "yes" holds anna's clips in memory and asks about ben's, whom the memory never heard
    assert monitor.memory.tolist() == [True, True, True, False] and monitor.queries.tolist() == [False] * 3 + [True]


def test_audio_folder_reads_val_as_the_test_split(tmp_path):
    for path in ("train/yes/1.wav", "train/no/2.wav", "val/yes/3.wav", "val/no/4.wav"):
        write_tone(tmp_path / path, 300, 0.2)
    test = build_dataset(load_config(["modality=audio", "data.name=audio-folder", f"data.root={tmp_path}"]), "test")
    assert len(test) == 2 and test.classes == ["no", "yes"]


def test_audio_folder_without_root_or_test_split_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        build_dataset(load_config(["modality=audio", "data.name=audio-folder"]), "train")
    write_tone(tmp_path / "flat" / "a.wav", 440, 1.0)
    cfg = load_config(["modality=audio", "data.name=audio-folder", f"data.root={tmp_path / 'flat'}"])
    assert build_dataset(cfg, "train")[0][1] == -1  # unlabelled
    with pytest.raises(DataError, match="test/CLASS"):
        build_dataset(cfg, "test")


def test_audio_folder_without_audio_names_what_it_holds_instead(tmp_path):
    for path in ("train/cat/a.png", "train/dog/b.jpg", "test/cat/c.png"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    cfg = load_config(["modality=audio", "data.name=audio-folder", f"data.root={tmp_path}"])
    with pytest.raises(DataError, match=r"No audio files \(.*\.wav\) under .*train: it holds 1 \.(jpg|png), 1 \."):
        build_dataset(cfg, "train")


def test_audio_folder_names_an_unreadable_file_once_however_often_it_is_read(tmp_path, caplog):
    write_tone(tmp_path / "train" / "yes" / "a.wav", 440, 0.5)
    (tmp_path / "train" / "yes" / "broken.wav").write_bytes(b"RIFF junk")
    dataset = build_dataset(load_config(["modality=audio", "data.name=audio-folder", f"data.root={tmp_path}"]), "train")
    for epoch in range(3):
        dataset.set_epoch(epoch)
        assert [dataset[i] is None for i in range(2)] == [False, True]
    assert sum("broken.wav" in record.message for record in caplog.records) == 1


def fake_spoken_digits(root, per_folder=2):
    """The prepared layout of spoken-digits with a few tones in place of speech."""
    for accent in ACCENTS:
        for word in DIGITS:
            for i in range(per_folder):
                write_tone(root / accent / word / f"m1-s{120 + i}-p50.wav", 300, 0.6, rate=16000, channels=1, seed=i)
    (root / "manifest.json").write_text(json.dumps({"version": SPOKEN_DIGITS_VERSION, "sample_rate": 16000}))


def test_spoken_digits_splits_by_accent(tmp_path):
    fake_spoken_digits(tmp_path)
    cfg = load_config(["modality=audio", f"data.root={tmp_path}"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    accent = lambda path: path.relative_to(tmp_path).parts[0]  # noqa: E731
    train_accents, test_accents = {accent(p) for p in train.files}, {accent(p) for p in test.files}
    assert not train_accents & test_accents
    assert test_accents == set(cfg.data.test_accents) and len(train_accents) == 6
    assert len(train) == 6 * 10 * 2 and train.classes == DIGITS
    assert train.groups == [accent(p) for p in train.files]
    with pytest.raises(DataError, match="test_accents"):
        build_dataset(load_config(["modality=audio", f"data.root={tmp_path}", "data.test_accents=[en-mars]"]), "train")


def test_spoken_digits_by_voice_splits_by_word(tmp_path):
    for accent in ACCENTS[:3]:
        for word in DIGITS:
            for i, voice in enumerate(VOICE_VARIANTS):  # the third accent's voices are one voice
                write_tone(tmp_path / accent / word / f"{voice}-s120-p50.wav", 300 + 50 * i * (accent != ACCENTS[2]),
                           0.3, rate=16000, channels=1)
    assert spoken_digits.unvoiced_accents(tmp_path) == [ACCENTS[2]]
    (tmp_path / "manifest.json").write_text(json.dumps({"version": SPOKEN_DIGITS_VERSION, "sample_rate": 16000}))
    cfg = load_config(["modality=audio", f"data.root={tmp_path}", "data.label=voice", "data.snr_db=null"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    word = lambda path: path.relative_to(tmp_path).parts[1]  # noqa: E731
    assert {word(p) for p in test.files} == {"seven", "eight", "nine"}
    assert {word(p) for p in train.files} == set(DIGITS[:7])
    assert train.classes == VOICE_VARIANTS and len(train) == 2 * 7 * 5 and len(test) == 2 * 3 * 5
    for data in (train, test):  # the label is the voice the file was spoken in
        assert [VOICE_VARIANTS[label] for label in data.labels] == [p.name.split("-")[0] for p in data.files]
        assert data.groups == [word(p) for p in data.files]  # the monitor holds words out, as the test does
    with pytest.raises(DataError, match="test_words"):
        build_dataset(load_config(["modality=audio", f"data.root={tmp_path}", "data.label=voice",
                                   f"data.test_words=[{','.join(DIGITS)}]"]), "train")
    with pytest.raises(DataError, match="word or voice"):
        build_dataset(load_config(["modality=audio", f"data.root={tmp_path}", "data.label=speaker"]), "train")


def test_spoken_digits_noise_has_the_drawn_snr_and_is_fixed_per_clip(tmp_path):
    fake_spoken_digits(tmp_path, per_folder=1)
    noisy = build_dataset(load_config(["modality=audio", f"data.root={tmp_path}", "data.snr_db=[-5,10]"]), "test")
    clean = build_dataset(load_config(["modality=audio", f"data.root={tmp_path}", "data.snr_db=null"]), "test")
    snrs = []
    for index in range(len(noisy)):
        path = noisy.files[index]
        speech = load_audio(path, 16000)
        noise = noisy[index][0] - clean[index][0]
        snrs.append(snr_db(speech, noise))
        assert snrs[-1] == pytest.approx(noisy.snr(path), abs=1e-3)
    assert min(snrs) >= -5 and max(snrs) <= 10 and max(snrs) - min(snrs) > 3
    # the noise is kept after the first read; what is kept is what a first read makes
    kept = [noisy[index][0] for index in range(len(noisy))]
    clip_noise.cache_clear()
    assert all(torch.equal(kept[index], noisy[index][0]) for index in range(len(noisy)))


def test_noise_per_view_gives_each_view_of_a_training_clip_its_own_fresh_noise(tmp_path):
    fake_spoken_digits(tmp_path, per_folder=1)
    options = ["modality=audio", f"data.root={tmp_path}", "data.snr_db=[-5,10]"]
    per_view = build_dataset(load_config(options), "train")  # the default
    fixed = build_dataset(load_config([*options, "data.noise_per_view=false"]), "train")
    clean = build_dataset(load_config([*options, "data.snr_db=null"]), "train")  # no noise to redraw
    # before training starts (statistics, evaluation) an item is the set's own noisy clip
    assert torch.equal(per_view[3][0], fixed[3][0])
    for dataset in (fixed, per_view, clean):
        dataset.set_epoch(0)
    snrs = []
    for index in range(len(per_view)):
        item, label = per_view[index]
        assert isinstance(item, TwoViews) and label == fixed[index][1]
        views = torch.stack(item)
        assert views.shape == (2, per_view.length)
        speech = load_audio(per_view.files[index], 16000)
        noises = views - clean[index][0]  # the same crop of the same clean clip under each view
        snrs += [snr_db(speech, n) for n in noises]
        assert not torch.allclose(noises[0], noises[1], atol=1e-3)
        assert torch.equal(views, torch.stack(per_view[index][0]))  # fixed by (seed, epoch, index)
    assert min(snrs) >= -5 - 1e-3 and max(snrs) <= 10 + 1e-3 and max(snrs) - min(snrs) > 3
    per_view.set_epoch(1)
    assert not torch.equal(views, torch.stack(per_view[len(per_view) - 1][0]))  # drawn afresh each epoch
    assert fixed[0][0].shape == clean[0][0].shape == (per_view.length,)  # one window per item
    assert not torch.equal(fixed[0][0], clean[0][0])


def test_view_snr_db_sets_the_views_noise_and_leaves_the_sets_own_alone(tmp_path):
    fake_spoken_digits(tmp_path, per_folder=1)
    options = ["modality=audio", f"data.root={tmp_path}", "data.snr_db=[-5,10]"]
    views_apart = build_dataset(load_config([*options, "data.view_snr_db=[20,25]"]), "train")
    default = build_dataset(load_config(options), "train")
    clean = build_dataset(load_config([*options, "data.snr_db=null"]), "train")
    assert torch.equal(views_apart[0][0], default[0][0])  # what evaluation reads: the set's noise
    views_apart.set_epoch(0)
    clean.set_epoch(0)
    for index in range(len(views_apart)):
        speech = load_audio(views_apart.files[index], 16000)
        for noise in torch.stack(views_apart[index][0]) - clean[index][0]:
            assert 20 - 1e-3 <= snr_db(speech, noise) <= 25 + 1e-3


def test_a_waveform_per_view_is_collated_and_prepared_view_by_view():
    samples = INFO["clip_samples"]
    items = [(TwoViews(torch.randn(samples), torch.randn(samples)), label) for label in range(3)]
    batch, labels, skipped = collate_items(items, get_modality("audio").collate)
    assert isinstance(batch, TwoViews) and batch.view1.shape == (3, samples) and labels.tolist() == [0, 1, 2]
    x1, x2 = prepare_views(get_modality("audio"), batch, torch.device("cpu"), INFO)
    for view, prepared in ((0, x1), (1, x2)):
        expected = prepare_audio(torch.stack([item[0][view] for item in items]), torch.device("cpu"), INFO)
        assert torch.equal(prepared, expected)


def test_spoken_digits_without_espeak_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(spoken_digits.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        build_dataset(load_config(["modality=audio", f"data.root={tmp_path / 'none'}"]), "train")


def test_a_stop_while_clips_are_made_is_raised_where_the_command_waits_and_leaves_no_folder(tmp_path, monkeypatch,
                                                                                            caplog):
    """The signal only marks the stop: the command raises it between its waits for the clips, never
    inside the thread pool's locks, where it once became a RuntimeError and a traceback."""
    made = []

    def synthesize(job, sample_rate):
        made.append(job)
        if len(made) == 20:
            os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.002)

    monkeypatch.setattr(spoken_digits.shutil, "which", lambda name: "/usr/bin/espeak-ng")
    monkeypatch.setattr(spoken_digits, "_synthesize", synthesize)
    with stopped_by_signals(), pytest.raises(Stopped) as stopped:
        build_dataset(load_config(["modality=audio", f"data.root={tmp_path / 'digits'}"]), "train")
    assert stopped.value.signum == signal.SIGUSR1
    assert "SIGUSR1: stopping; the clips begun are finished" in caplog.text
    clips = len(ACCENTS) * len(DIGITS) * len(VOICE_VARIANTS) * len(spoken_digits.SPEEDS) * len(spoken_digits.PITCHES)
    assert 20 <= len(made) < clips and list(tmp_path.iterdir()) == []  # the rest not made, the staging folder gone


def test_spoken_digits_never_replaces_a_folder_of_other_files(tmp_path, monkeypatch):
    """Making the set replaces data.root whole: a folder of the user's own recordings (data.name
    forgotten) is refused before anything is synthesized, and nothing in it is touched."""
    mine = tmp_path / "sounds"
    write_tone(mine / "dog" / "bark.wav", 300, 0.3, rate=16000, channels=1)
    (mine / "manifest.json").write_text(json.dumps({"version": 1, "note": "my own manifest"}))
    monkeypatch.setattr(spoken_digits, "_synthesize", lambda *args: pytest.fail("nothing may be synthesized"))
    for root in (mine, mine / "manifest.json"):
        with pytest.raises(DataError, match="data.name=audio-folder|is a file"):
            build_dataset(load_config(["modality=audio", f"data.root={root}"]), "train")
    assert sorted(p.name for p in mine.iterdir()) == ["dog", "manifest.json"] and (mine / "dog" / "bark.wav").exists()
    old = tmp_path / "old-set"  # an earlier version of the set is no user's folder: it is made again
    fake_spoken_digits(old, per_folder=1)
    (old / "manifest.json").write_text(json.dumps({"version": 0, "sample_rate": 16000}))
    (old / ".DS_Store").write_bytes(b"")  # a hidden file a file browser left
    assert spoken_digits._manifest(old) is not None and spoken_digits._only_a_set(old)
    (old / "notes.txt").write_text("mine")
    assert not spoken_digits._only_a_set(old)  # with a file of someone's beside it, it is not


def test_espeak_synthesis_writes_16_khz_mono(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: `make test` installs it (apt-get install espeak-ng).")
    out = tmp_path / "seven.wav"
    spoken_digits._synthesize(("en-gb-scotland", "f2", 170, 50, "seven", out), 16000)
    data, rate = soundfile.read(str(out))
    assert rate == 16000 and data.ndim == 1 and 0.3 < len(data) / rate < 2.0 and np.abs(data).max() > 0.05


# ---------------------------------------------------------------------------- training


def test_resume_after_half_the_steps_equals_straight_training(tmp_path, tone_folder, monkeypatch):
    """Random crops, dropout and mixup's memory all come back exactly after an interruption."""
    import importlib

    train_module = importlib.import_module("mmbyol.train")
    options = [*AUDIO_TINY, f"data.root={tone_folder}", "trainer.max_steps=8"]  # two epochs of 5 batches, and some
    straight = train_module.train(load_config([*options, f"run.dir={tmp_path / 'straight'}"]))
    train_interrupted(load_config([*options, f"run.dir={tmp_path / 'resumed'}"]), 6, monkeypatch)  # in epoch 2
    train_module.train(load_config([*options, f"run.dir={tmp_path / 'resumed'}", "resume=auto"]))
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 8
    for key, value in [*a["model"].items(), *a["views"].items()]:
        assert torch.equal(value, {**b["model"], **b["views"]}[key]), key


def test_training_on_spoken_digits_feeds_each_view_its_own_noisy_copy(tmp_path, monkeypatch):
    import importlib

    train_module = importlib.import_module("mmbyol.train")
    fake_spoken_digits(tmp_path / "data", per_folder=1)
    seen = []
    real_views = train_module.ViewPair.forward
    monkeypatch.setattr(train_module.ViewPair, "forward",
                        lambda self, x1, x2, g: seen.append((x1, x2)) or real_views(self, x1, x2, g))
    options = [*AUDIO_TINY, "data.name=spoken-digits", f"data.root={tmp_path / 'data'}", "trainer.max_steps=2",
               f"run.dir={tmp_path / 'run'}"]
    train_module.train(load_config(options))
    assert len(seen) == 2 and all(x1.shape == x2.shape == (8, 1, 64, 96) for x1, x2 in seen)
    assert not torch.equal(*seen[0])


def test_views_picture_the_originals_as_evaluated_and_the_views_as_trained(tmp_path, monkeypatch):
    """``mmbyol views``: its first row is what evaluation reads (from the start, the set's own noise),
    the views come from what training reads: a random crop of each clip, under a noise of its own."""
    import dataclasses

    import mmbyol.augment as augment_module
    import mmbyol.views as views_module
    from mmbyol import cli

    fake_spoken_digits(tmp_path / "data", per_folder=1)
    seen, pictured = [], []
    real_views = augment_module.ViewPair.forward
    monkeypatch.setattr(augment_module.ViewPair, "forward",
                        lambda self, x1, x2, g: seen.append((x1, x2)) or real_views(self, x1, x2, g))
    picturing = dataclasses.replace(get_modality("audio"),
                                    render_views=lambda original, *rest: pictured.append(original))
    monkeypatch.setattr(views_module, "get_modality", lambda name: picturing)
    options = ["modality=audio", f"data.root={tmp_path / 'data'}", "device=cpu"]
    assert cli.main(["views", *options, "n=3", f"out={tmp_path / 'views.png'}"]) == 0
    dataset = build_dataset(load_config(options), "train")
    shown = evenly_spaced(dataset, 3)
    original = prepare_audio(torch.stack([shown[i][0] for i in range(3)]), torch.device("cpu"), dataset.info)
    assert torch.allclose(pictured[0], original)
    (x1, x2), = seen
    assert x1.shape == x2.shape == original.shape and not torch.equal(x1, x2)


@pytest.mark.slow
def test_train_eval_and_views_through_the_cli(tmp_path, tone_folder):
    run_dir = tmp_path / "run"
    result = cli("train", *AUDIO_TINY, f"data.root={tone_folder}", f"run.dir={run_dir}")
    assert result.stdout.strip() == str(run_dir)
    metrics = json.loads(cli("eval", str(run_dir), "eval.labels_per_class=2", "eval.l2_grid=[0.01]").stdout
                         .splitlines()[-1])
    assert {"linear_acc", "knn_acc", "linear_acc_2"} <= set(metrics) and metrics["n_test"] == 20
    assert metrics["linear_acc"] > 0.5  # four tones, clearly apart

    from mmbyol import load_encoder

    encoder = load_encoder(run_dir)
    info = encoder.metadata["info"]
    assert info["mean"] == json.loads(json.dumps(info))["mean"]  # statistics travel with the export
    batch = get_modality("audio").prepare(torch.randn(3, info["clip_samples"]), torch.device("cpu"), info)
    assert encoder(batch).shape == (3, 64)

    out = tmp_path / "views.png"
    cli("views", "modality=audio", "data.name=audio-folder", f"data.root={tone_folder}", f"out={out}", "n=4",
            "device=cpu")
    from PIL import Image

    with Image.open(out) as image:
        assert image.width > 4 * 96 and image.height > 3 * 64


TONES = {"dog": 300, "rain": 700, "siren": 1500}  # a class: a tone, so a probe can tell them apart


def speech_commands_miniature(root):
    """Speech Commands v2 as its archive unpacks: WORD/SPEAKER_nohash_N.wav, the two lists, the noise folder."""
    lists = {"validation": [], "testing": []}
    for word, frequency in TONES.items():
        for speaker in range(6):
            name = f"{word}/{speaker:08x}_nohash_0.wav"
            write_tone(root / name, frequency, 1.0, rate=16000, channels=1, seed=speaker)
            if speaker == 4:
                lists["validation"].append(name)
            elif speaker == 5:
                lists["testing"].append(name)
    write_tone(root / "_background_noise_" / "white_noise.wav", 50, 1.0, rate=16000, channels=1)
    for name, files in lists.items():
        (root / f"{name}_list.txt").write_text("\n".join(files) + "\n")


def esc50_miniature(root):
    """ESC-50 as its repository holds it: audio/*.wav and meta/esc50.csv (5 folds)."""
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for target, (category, frequency) in enumerate(TONES.items()):
        for fold in range(1, 6):
            name = f"{fold}-{1000 + target}-A-{target}.wav"
            write_tone(root / "audio" / name, frequency, 1.0, rate=44100, channels=1, seed=fold)
            lines.append(f"{name},{fold},{target},{category},False,{1000 + target},A")
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")


def urbansound8k_miniature(root):
    """UrbanSound8K as it unpacks: audio/foldK/*.wav and metadata/UrbanSound8K.csv (10 folds)."""
    lines = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
    for class_id, (name, frequency) in enumerate(TONES.items()):
        for fold in range(1, 11):
            file = f"{100 + fold}-{class_id}-0-0.wav"
            write_tone(root / "audio" / f"fold{fold}" / file, frequency, 0.8, rate=22050, seed=fold)
            lines.append(f"{file},{100 + fold},0.0,0.8,1,{fold},{class_id},{name}")
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "UrbanSound8K.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name, miniature, options, sizes, groups", [
    ("speech-commands", speech_commands_miniature, [], (12, 3), 4),  # speakers 0-3 train, 5 tests, 4 validates
    ("esc50", esc50_miniature, ["data.fold=2"], (12, 3), 3),  # one source recording per class
    ("urbansound8k", urbansound8k_miniature, ["data.fold=10"], (27, 3), 9),  # one recording per fold
])
def test_a_standard_layout_reads_its_splits_and_trains_and_evaluates_through_the_cli(tmp_path, name, miniature,
                                                                                     options, sizes, groups):
    miniature(tmp_path / "data")
    data = [f"data.name={name}", f"data.root={tmp_path / 'data'}", *options]
    cfg = load_config(["modality=audio", *data])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert (len(train), len(test)) == sizes and train.classes == test.classes == list(TONES)
    assert not set(train.files) & set(test.files) and len(set(train.groups)) == groups
    run_dir = tmp_path / "run"
    cli("train", *AUDIO_TINY, *data, "data.batch_size=6", "trainer.max_steps=2", f"run.dir={run_dir}")
    metrics = json.loads(cli("eval", str(run_dir), "eval.l2_grid=[0.01]").stdout.splitlines()[-1])
    assert metrics["n_test"] == 3 and 0 <= metrics["linear_acc"] <= 1


def test_a_fold_outside_the_set_says_which_folds_there_are(tmp_path):
    esc50_miniature(tmp_path)
    cfg = load_config(["modality=audio", "data.name=esc50", f"data.root={tmp_path}", "data.fold=6"])
    with pytest.raises(DataError, match="folds 1 to 5"):
        build_dataset(cfg, "train")
    with pytest.raises(DataError, match="meta/esc50.csv"):
        build_dataset(load_config(["modality=audio", "data.name=esc50", f"data.root={tmp_path / 'audio'}"]), "test")
