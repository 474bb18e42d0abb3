import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbyol import load_encoder
from mmbyol.config import load_config
from mmbyol.data import build_dataset, evenly_spaced
from mmbyol.errors import ConfigError, DataError
from mmbyol.evaluate import load_eval_config
from mmbyol.modalities.base import build_encoder
from mmbyol.modalities.timeseries import SeriesFrontEnd, prepare_series
from mmbyol.modalities.timeseries.data import packaged_ucr_folders, read_ts, resample

from ..conftest import REPO, cli

TS_TINY = ["modality=timeseries", "data.batch_size=16", "trainer.max_steps=6", "trainer.progress=false",
           "trainer.log_every=2", "model.hidden_dim=64", "model.projection_dim=32", "device=cpu",
           "encoder.channels=[16, 32, 16]"]


def write_ts(path, series, labels, classes, header_extra=""):
    """A ``.ts`` file as the archive writes it: channels separated by ':', the label last."""
    lines = ["# a comment", "% an ARFF comment", "@problemName Tiny", "@timeStamps false", "@missing true",
             f"@univariate {'true' if series[0].shape[0] == 1 else 'false'}", f"@dimensions {series[0].shape[0]}",
             "@equalLength false", f"@classLabel true {' '.join(classes)}", header_extra, "@data"]
    for x, label in zip(series, labels):
        channels = [",".join("?" if math.isnan(v) else f"{v:.5f}" for v in channel) for channel in x]
        lines.append(":".join(channels) + f":{label}")
    path.write_text("\n".join(line for line in lines if line) + "\n")


def two_shapes(n, length_range, seed, channels=2):
    """Series of two classes: a sine (class a) or a square wave (class b), random phase and length."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(n):
        length = int(rng.integers(*length_range))
        t = np.linspace(0, 4 * np.pi, length) + rng.uniform(0, 2 * np.pi)
        wave = np.sin(t) if i % 2 == 0 else np.sign(np.sin(t))
        series.append(np.stack([wave * (c + 1) + 0.1 * rng.standard_normal(length) for c in range(channels)]))
        labels.append("a" if i % 2 == 0 else "b")
    return series, labels


def write_tiny_archive(root):
    """A miniature archive: ROOT/Tiny/Tiny_TRAIN.ts (48 series) and Tiny_TEST.ts (20), two channels,
    lengths 20-39. Returns ROOT."""
    (root / "Tiny").mkdir()
    for split, n, seed in (("TRAIN", 48, 0), ("TEST", 20, 1)):
        series, labels = two_shapes(n, (20, 40), seed)
        write_ts(root / "Tiny" / f"Tiny_{split}.ts", series, labels, ["a", "b"])
    return root


@pytest.fixture(scope="module")
def ucr_root(tmp_path_factory):
    return write_tiny_archive(tmp_path_factory.mktemp("ucr"))


def test_read_ts_reads_channels_labels_variable_lengths_and_missing_values(tmp_path):
    x = [np.array([[1.0, 2.0, 3.0], [4.0, float("nan"), 6.0]]), np.array([[7.0, 8.0], [9.0, 10.0]])]
    write_ts(tmp_path / "a.ts", x, ["2", "10"], ["2", "10"])
    ts = read_ts(tmp_path / "a.ts")
    (tmp_path / "bom.ts").write_text((tmp_path / "a.ts").read_text(), encoding="utf-8-sig")  # as some editors save
    assert read_ts(tmp_path / "bom.ts").labels == ts.labels
    assert ts.classes == ["2", "10"] and ts.labels == ["2", "10"]
    assert ts.series[0].shape == (2, 3) and np.isnan(ts.series[0][1, 1]) and ts.series[1].shape == (2, 2)
    assert ts.series[1].tolist() == [[7.0, 8.0], [9.0, 10.0]]


def test_read_ts_refuses_what_it_cannot_read(tmp_path):
    (tmp_path / "stamps.ts").write_text("@timeStamps true\n@data\n(0,1),(1,2):a\n")
    with pytest.raises(DataError, match="time stamps"):
        read_ts(tmp_path / "stamps.ts")
    (tmp_path / "bad.ts").write_text("@dimensions 2\n@classLabel true a\n@data\n1,2:3,x:a\n")
    with pytest.raises(DataError, match="bad.ts:4: a value is not a number"):
        read_ts(tmp_path / "bad.ts")
    (tmp_path / "dims.ts").write_text("@dimensions 2\n@classLabel true a\n@data\n1,2:a\n")
    with pytest.raises(DataError, match="1 channels, the header says @dimensions 2"):
        read_ts(tmp_path / "dims.ts")


def test_resample_drops_missing_steps_at_the_end_and_interpolates_linearly():
    nan = float("nan")
    x = torch.tensor([[[0.0, 1.0, 2.0, nan], [0.0, 2.0, 4.0, nan]],  # 3 steps
                      [[3.0, nan, nan, nan], [nan, nan, nan, nan]],  # 1 step
                      [[1.0, nan, 5.0, 7.0], [2.0, 4.0, nan, nan]]])  # 4 steps, a gap inside
    out = resample(x, 5)
    assert out[0].tolist() == [[0.0, 0.5, 1.0, 1.5, 2.0], [0.0, 1.0, 2.0, 3.0, 4.0]]
    assert out[1, 0].tolist() == [3.0] * 5 and out[1, 1].isnan().all()
    assert out[2, 0, 0] == 1.0 and out[2, 0, 4] == 7.0 and out[2, 0, 1:3].isnan().all()  # next to the gap
    assert out[2, 1, :2].tolist() == [2.0, 3.5] and out[2, 1, 3:].isnan().all()
    same = resample(x, 4)  # a series of the length already: as it was, NaN where it was
    assert torch.equal(same[2].nan_to_num(-1), x[2].nan_to_num(-1))


def test_the_front_end_makes_raw_series_what_the_data_set_gave_the_encoder(tmp_path):
    """Raw series of their own lengths, padded with NaN, become the data set's items, normalized."""
    series = [np.random.default_rng(i).normal(size=(2, n)).astype(np.float32) for i, n in enumerate((9, 14, 20, 5))]
    longest = 20
    padded = np.stack([np.pad(s, ((0, 0), (0, longest - s.shape[1])), constant_values=np.nan) for s in series])
    np.save(tmp_path / "x.npy", padded)
    cfg = load_config(["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / 'x.npy'}",
                       "data.length=12"])
    dataset = build_dataset(cfg, "train")
    front_end = SeriesFrontEnd(dataset.info)
    expected = front_end(dataset.x)
    assert torch.equal(front_end(torch.from_numpy(padded)), expected)
    assert torch.equal(front_end(torch.from_numpy(series[1])[None]), expected[1:2])  # one series, unpadded
    assert torch.equal(prepare_series(dataset.x, torch.device("cpu"), dataset.info), expected)
    with pytest.raises(ValueError, match="expected series .batch, 2 channels, steps.*got shape .4, 3, 20."):
        front_end(torch.zeros(4, 3, 20))
    with pytest.raises(DataError, match="Give the encoder data with 2 channels"):  # one paragraph at the CLI
        front_end(torch.zeros(4, 1, 20))
    with pytest.raises(DataError, match=r"looks like \(batch, steps, channels\): give series.transpose\(1, 2\)"):
        front_end(torch.zeros(4, 20, 2))


def test_ucr_from_a_copy_of_the_archive_resamples_to_the_longest_training_series(ucr_root):
    cfg = load_config(["modality=timeseries", f"data.root={ucr_root}", "data.set=Tiny"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert len(train) == 48 and len(test) == 20 and train.classes == test.classes == ["a", "b"]
    x, label = train[0]
    longest = max(len(line.split(":")[0].split(",")) for line in
                  (ucr_root / "Tiny" / "Tiny_TRAIN.ts").read_text().splitlines() if not line.startswith(("@", "#")))
    assert x.shape == (2, longest) and test[0][0].shape == (2, longest) and label == 0
    info = train.info
    assert info["channels"] == 2 and info["length"] == longest and len(info["mean"]) == len(info["std"]) == 2
    batch = prepare_series(torch.stack([train[i][0] for i in range(48)]), torch.device("cpu"), info)
    assert torch.allclose(batch.mean(dim=(0, 2)), torch.zeros(2), atol=1e-4)
    assert torch.allclose(batch.std(dim=(0, 2)), torch.ones(2), atol=1e-2)
    fixed = build_dataset(load_config(["modality=timeseries", f"data.root={ucr_root}", "data.set=Tiny",
                                       "data.length=64"]), "test")
    assert fixed[0][0].shape == (2, 64)


def test_ucr_reads_the_2018_univariate_archives_tsv_files(tmp_path):
    """NAME/NAME_TRAIN.tsv: the label first, then the values, tab-separated, shorter series padded
    with NaN; the classes in numeric order."""
    (tmp_path / "Tsv").mkdir()
    for split, n in (("TRAIN", 12), ("TEST", 6)):
        series, labels = two_shapes(n, (15, 25), seed=len(split), channels=1)
        rows = [[("10" if label == "a" else "2"), *(f"{v:.4f}" for v in s[0]), *["NaN"] * (24 - s.shape[1])]
                for s, label in zip(series, labels)]
        (tmp_path / "Tsv" / f"Tsv_{split}.tsv").write_text("\n".join("\t".join(row) for row in rows) + "\n")
    cfg = load_config(["modality=timeseries", f"data.root={tmp_path}", "data.set=Tsv"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert (len(train), len(test), train.classes) == (12, 6, ["2", "10"])
    assert [train[i][1] for i in range(4)] == [1, 0, 1, 0]  # series 0 is an "a", labelled 10
    assert train.x.shape[1:] == (1, 24) and torch.isfinite(train.x).all()  # the NaN ends dropped, resampled


def test_ucr_names_the_sets_it_has(ucr_root, tmp_path):
    cfg = load_config(["modality=timeseries", f"data.root={ucr_root}", "data.set=Tinny"])
    with pytest.raises(DataError, match="no set 'Tinny'.*Did you mean 'Tiny'. Available: Tiny"):
        build_dataset(cfg, "train")
    with pytest.raises(DataError, match="no set 'tiny'.*Did you mean 'Tiny'"):  # names are case-sensitive
        build_dataset(load_config(["modality=timeseries", f"data.root={ucr_root}", "data.set=tiny"]), "train")
    with pytest.raises(DataError, match="No UCR/UEA sets found.*pip install aeon"):
        build_dataset(load_config(["modality=timeseries", f"data.root={tmp_path}"]), "train")
    (tmp_path / "Reg").mkdir()  # a regression set is named apart, as one it cannot read
    for split in ("TRAIN", "TEST"):
        (tmp_path / "Reg" / f"Reg_{split}.ts").write_text("@problemName Reg\n@targetLabel true\n@data\n1,2,3:0.5\n")
    with pytest.raises(DataError, match=r"Available: none \(regression sets, which it cannot read: Reg\)\."):
        build_dataset(load_config(["modality=timeseries", f"data.root={tmp_path}", "data.set=Tinny"]), "train")


@pytest.mark.skipif(not packaged_ucr_folders(), reason="no package with UCR/UEA sets installed (pip install aeon)")
def test_a_set_the_installed_packages_lack_names_the_package_not_installed(monkeypatch):
    from mmbyol.modalities.timeseries import data as timeseries_data

    monkeypatch.setattr(timeseries_data, "UCR_PACKAGES", ("aeon", "no_such_ucr_package"))
    with pytest.raises(DataError, match=r"no set 'PLAID' in the installed packages \(aeon; no_such_ucr_package ships "
                                        r"others: pip install no_such_ucr_package\)\. Available: .*JapaneseVowels"):
        build_dataset(load_config(["modality=timeseries", "data.set=PLAID"]), "train")


@pytest.mark.skipif(not packaged_ucr_folders(), reason="no package with UCR/UEA sets installed (pip install aeon)")
def test_ucr_reads_the_development_sets_from_the_installed_package():
    for name, n_train, n_test, channels, length, classes in (("JapaneseVowels", 270, 370, 12, 26, 9),
                                                             ("GunPoint", 50, 150, 1, 150, 2),
                                                             ("OSULeaf", 200, 242, 1, 427, 6)):
        cfg = load_config(["modality=timeseries", f"data.set={name}"])
        train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
        assert (len(train), len(test), len(train.classes)) == (n_train, n_test, classes)
        assert train[0][0].shape == (channels, length) and torch.isfinite(train.x).all()


def test_array_files_in_every_format(tmp_path):
    series, labels = two_shapes(12, (30, 31), seed=0, channels=3)
    x = np.stack(series).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array(labels))
    np.savez(tmp_path / "d.npz", x=x, y=np.array(labels))
    torch.save({"x": torch.from_numpy(x), "y": torch.tensor([0 if s == "a" else 1 for s in labels])}, tmp_path / "d.pt")
    rows = ["label," + ",".join(f"t{i}" for i in range(30))]
    rows += [f"{label}," + ",".join(f"{v:.4f}" for v in s[0]) for s, label in zip(series, labels)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    for train, extra, channels, classes in (("x.npy", ["data.train_labels=" + str(tmp_path / "y.npy")], 3, ["a", "b"]),
                                            ("d.npz", [], 3, ["a", "b"]), ("d.pt", [], 3, ["0", "1"]),
                                            ("d.csv", [], 1, ["a", "b"])):
        cfg = load_config(["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / train}", *extra])
        dataset = build_dataset(cfg, "train")
        assert len(dataset) == 12 and dataset.classes == classes and dataset[0][0].shape == (channels, 30)
        assert [dataset[i][1] for i in range(4)] == [0, 1, 0, 1]
    unlabelled = build_dataset(load_config(["modality=timeseries", "data.name=array-file",
                                            f"data.train={tmp_path / 'x.npy'}"]), "train")
    assert unlabelled.classes == [] and unlabelled[0][1] == -1


def test_a_label_of_its_own_for_every_series_is_warned_of(tmp_path, caplog):
    """The series file given as the labels file reads as one label a line, each a row of numbers: a
    class for every series, which nothing can learn from."""
    series = np.random.default_rng(0).normal(size=(12, 1, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", series)
    np.savetxt(tmp_path / "x.csv", series[:, 0], delimiter=",")
    (tmp_path / "y.txt").write_text("walk\nrun\n" * 6)
    base = ["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / 'x.npy'}", "data.batch_size=4"]
    with caplog.at_level("WARNING"):
        mistaken = build_dataset(load_config([*base, f"data.train_labels={tmp_path / 'x.csv'}"]), "train")
        assert len(mistaken.classes) == 12
        assert "each of the 12 training series has a label of its own" in caplog.text
        assert "is that the labels file?" in caplog.text
        caplog.clear()
        assert build_dataset(load_config([*base, f"data.train_labels={tmp_path / 'y.txt'}"]), "train").classes == [
            "run", "walk"]
        assert not caplog.text


def test_channels_last_arrays_are_read_as_said_and_a_likely_mistake_is_warned_of(tmp_path, caplog):
    """(items, steps, channels), as Keras and sensor pipelines store series, read with data.channels_last=true
    gives the items the same series stored (items, channels, steps) give; read without it, the series would be
    40 channels of 3 steps, which is warned of, unless data.channels_last=false says it is meant."""
    series, labels = two_shapes(6, (40, 41), seed=0, channels=3)
    first = np.stack(series).astype(np.float32)  # (6, 3, 40)
    last = first.transpose(0, 2, 1).copy()
    np.save(tmp_path / "first.npy", first)
    np.savez(tmp_path / "last.npz", x=last, y=np.array(labels))
    torch.save({"x": torch.from_numpy(last), "y": labels}, tmp_path / "last.pt")
    torch.save({"x": [torch.from_numpy(s.T.copy()) for s in series], "y": labels}, tmp_path / "ragged.pt")
    base = ["modality=timeseries", "data.name=array-file", "data.batch_size=4"]  # 6 series fill a batch
    expected = build_dataset(load_config([*base, f"data.train={tmp_path / 'first.npy'}"]), "train").x
    for name in ("last.npz", "last.pt", "ragged.pt"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            meant = build_dataset(load_config([*base, f"data.train={tmp_path / name}", "data.channels_last=true"]),
                                  "train")
            assert torch.equal(meant.x, expected) and meant.classes == ["a", "b"]
            assert not caplog.text
            build_dataset(load_config([*base, f"data.train={tmp_path / name}"]), "train")
            assert "read as series of 40 channels × 3 steps" in caplog.text
            assert "set data.channels_last=true" in caplog.text
            caplog.clear()
            as_stored = build_dataset(load_config([*base, f"data.train={tmp_path / name}",
                                                   "data.channels_last=false"]), "train")
            assert as_stored.x.shape[1] == 40 and not caplog.text
    univariate = build_dataset(load_config([*base, f"data.train={tmp_path / 'first.npy'}", "data.channels_last=true",
                                            "data.length=40"]), "train")  # (items, channels, steps) said to be last
    assert univariate.x.shape == (6, 40, 40)
    np.save(tmp_path / "plain.npy", first[:, 0])  # (items, steps): one channel, whatever the key says
    plain = build_dataset(load_config([*base, f"data.train={tmp_path / 'plain.npy'}", "data.channels_last=true"]),
                          "train")
    assert torch.equal(plain.x, expected[:, :1])


def test_long_recordings_are_cut_into_windows_labelled_and_grouped_by_their_series(tmp_path, caplog):
    x = np.arange(3 * 2 * 100, dtype=np.float32).reshape(3, 2, 100)
    x[1, :, 45:] = np.nan  # a recording of 45 steps, padded
    x[2, :, 25:] = np.nan  # 25 steps: shorter than a window
    np.savez(tmp_path / "long.npz", x=x, y=np.array(["walk", "run", "sit"]))
    base = ["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / 'long.npz'}", "data.window=30"]
    with caplog.at_level("WARNING"):
        windows = build_dataset(load_config([*base, "data.stride=15"]), "train")
    # recording 0: starts 0, 15, …, 60 (the steps after 90 left out); recording 1: start 0, then 15 ends at 45
    assert len(windows) == 5 + 2 and windows.groups == [0] * 5 + [1] * 2
    assert [windows[i][1] for i in range(len(windows))] == [windows.classes.index("walk")] * 5 + [
        windows.classes.index("run")] * 2
    assert windows.x.shape == (7, 2, 30) and torch.equal(windows[1][0], torch.from_numpy(x[0, :, 15:45]))
    assert "1 of 3 series are shorter than data.window=30 steps" in caplog.text
    apart = build_dataset(load_config(base), "train")  # no stride: windows side by side
    assert len(apart) == 3 + 1 and torch.equal(apart[2][0], torch.from_numpy(x[0, :, 60:90]))
    caplog.clear()
    with caplog.at_level("WARNING"):  # 3 series cannot fill a batch: the warning points to the windows
        build_dataset(load_config(base[:-1]), "train")
    assert "3 series, fewer than a batch of 32. If they are long recordings, data.window=STEPS" in caplog.text
    with pytest.raises(DataError, match=r"no series is as long as data.window=101 steps \(the longest has 100\)"):
        build_dataset(load_config([*base[:-1], "data.window=101"]), "train")
    with pytest.raises(ConfigError, match="data.stride=15 needs data.window"):
        build_dataset(load_config([*base[:-1], "data.stride=15"]), "train")
    with pytest.raises(ConfigError, match="data.window must be at least 1"):
        load_config([*base[:-1], "data.window=0"])


def test_a_stream_labelled_step_by_step_gives_windows_of_one_label_each(tmp_path, caplog):
    x = np.arange(2 * 100 * 3, dtype=np.float32).reshape(2, 100, 3)  # two recordings, steps by channels
    y = np.array([["sit"] * 40 + ["walk"] * 35 + ["sit"] * 25, ["run"] * 100])  # annotated step by step
    x[1, 70:] = np.nan  # the second recording has 70 steps
    np.savez(tmp_path / "stream.npz", x=x, y=y)
    base = ["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / 'stream.npz'}",
            "data.channels_last=true", "data.window=20"]
    with caplog.at_level("WARNING"):
        windows = build_dataset(load_config([*base, "data.stride=10"]), "train")
    # recording 0: starts 0-80 by 10; 30 (steps 30-49), 60 and 70 cross a change; recording 1: starts 0-50
    starts = [0, 10, 20, 40, 50, 80]
    assert windows.classes == ["run", "sit", "walk"] and len(windows) == len(starts) + 6
    names = [windows.classes[windows[i][1]] for i in range(len(windows))]
    assert names == ["sit"] * 3 + ["walk"] * 2 + ["sit"] + ["run"] * 6
    assert all(torch.equal(windows[i][0], torch.from_numpy(x[0, s : s + 20].T)) for i, s in enumerate(starts))
    assert "3 of 15 windows span a change of label and are left out" in caplog.text
    assert windows.groups == [0] * 6 + [1] * 6  # the monitor holds recordings apart
    assert windows.origins == [(0, 0)] * 3 + [(0, 1)] * 2 + [(0, 2)] + [(1, 0)] * 6  # each stretch a whole
    assert evenly_spaced(windows, 4).origins == [windows.origins[i] for i in (0, 3, 6, 9)]  # eval.test_limit
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)  # the same as a label file beside a .npy
    apart = build_dataset(load_config([*base[:3], f"data.train={tmp_path / 'x.npy'}",
                                       f"data.train_labels={tmp_path / 'y.npy'}", *base[3:]]), "train")
    assert [apart.classes[apart[i][1]] for i in range(len(apart))] == ["sit", "sit", "walk", "sit", "run", "run", "run"]
    with pytest.raises(DataError, match="labels are one per step, 100 a series. Cut the series into windows with "
                                        "data.window=STEPS"):
        build_dataset(load_config(base[:-1]), "train")
    np.savez(tmp_path / "hot.npz", x=x, y=np.eye(3)[[0, 1]])  # one-hot rows are still no labels per step
    with pytest.raises(DataError, match=r"shape \(2, 3\), neither one label per series nor one per step \(100 "):
        build_dataset(load_config([*base[:2], f"data.train={tmp_path / 'hot.npz'}", *base[3:]]), "train")


def test_a_pt_file_may_hold_series_of_different_lengths_as_a_list(tmp_path):
    series, labels = two_shapes(8, (20, 40), seed=0, channels=2)
    torch.save({"x": [torch.from_numpy(s).float() for s in series], "y": labels}, tmp_path / "ragged.pt")
    torch.save([torch.from_numpy(s[0]).float() for s in series], tmp_path / "univariate.pt")
    base = ["modality=timeseries", "data.name=array-file"]
    ragged = build_dataset(load_config([*base, f"data.train={tmp_path / 'ragged.pt'}"]), "train")
    longest = max(s.shape[1] for s in series)
    assert ragged.classes == ["a", "b"] and [ragged[i][1] for i in range(4)] == [0, 1, 0, 1]
    assert ragged.x.shape == (8, 2, longest) and torch.isfinite(ragged.x).all()
    plain = build_dataset(load_config([*base, f"data.train={tmp_path / 'univariate.pt'}"]), "train")
    assert plain.x.shape == (8, 1, longest) and plain.classes == []
    torch.save({"x": "series"}, tmp_path / "text.pt")
    with pytest.raises(DataError, match=r"a list of .\[channels,\] steps. tensors"):
        build_dataset(load_config([*base, f"data.train={tmp_path / 'text.pt'}"]), "train")


def test_delimited_files_take_their_labels_by_header_or_position(tmp_path, caplog):
    rows = [["3", "0.5", "1.5", "2.5"], ["1", "1.0", "", "3.0"], ["3", "0.0", "?", "NaN"]]
    (tmp_path / "plain.tsv").write_text("\n".join("\t".join(r) for r in rows) + "\n")
    (tmp_path / "named.csv").write_text("t0,t1,kind,t2\n" + "\n".join(",".join([r[1], r[2], r[0], r[3]])
                                                                   for r in rows) + "\n")
    base = ["modality=timeseries", "data.name=array-file", "data.length=3"]
    for name, column in (("plain.tsv", "0"), ("named.csv", "kind"), ("named.csv", "2"), ("plain.tsv", "-4")):
        dataset = build_dataset(load_config([*base, f"data.train={tmp_path / name}", f"data.label_column={column}"]),
                                "train")
        assert dataset.classes == ["1", "3"] and [dataset[i][1] for i in range(3)] == [1, 0, 1]
        assert dataset[0][0].tolist() == [[0.5, 1.5, 2.5]] and dataset[1][0][0, 1].isnan()
    with caplog.at_level("INFO"):  # a headerless file with the default column: every column a step, and said so
        unlabelled = build_dataset(load_config([*base, f"data.train={tmp_path / 'plain.tsv'}", "data.length=4"]),
                                   "train")
    assert unlabelled.classes == [] and unlabelled[0][0].tolist() == [[3.0, 0.5, 1.5, 2.5]]
    assert "no column header, so no labels" in caplog.text and "data.label_column=POSITION" in caplog.text
    with pytest.raises(DataError, match="data.label_column=4, but the rows have 4 columns"):
        build_dataset(load_config([*base, f"data.train={tmp_path / 'plain.tsv'}", "data.label_column=4"]), "train")
    (tmp_path / "excel.csv").write_text("label,t0,t1\nb,0.5,1.5\na,1.0,2.0\n", encoding="utf-8-sig")  # a BOM first
    assert build_dataset(load_config([*base, f"data.train={tmp_path / 'excel.csv'}"]), "train").classes == ["a", "b"]
    (tmp_path / "names.csv").write_text("b,0.5,1.5\na,1.0,2.0\n")  # labels as names, no header: no row lost
    named = build_dataset(load_config([*base, f"data.train={tmp_path / 'names.csv'}", "data.label_column=0"]), "train")
    assert named.classes == ["a", "b"] and len(named) == 2 and named[0][1] == 1
    (tmp_path / "gap.tsv").write_text("3\t0.5\t1.5\n\t1.0\t2.0\n")
    with pytest.raises(DataError, match="gap.tsv:2: no label in column 0"):
        build_dataset(load_config([*base, f"data.train={tmp_path / 'gap.tsv'}", "data.label_column=0"]), "train")


def test_array_file_errors_say_what_to_do(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 10), dtype=np.float32))
    one_hot = np.eye(2)[[0, 1, 0, 1]]
    np.savez(tmp_path / "hot.npz", x=np.zeros((4, 10)), y=one_hot)
    torch.save({"x": torch.zeros(4, 10), "y": torch.from_numpy(one_hot)}, tmp_path / "hot.pt")
    np.save(tmp_path / "hot.npy", one_hot)
    for train, extra in (("hot.npz", []), ("hot.pt", []), ("x.npy", [f"data.train_labels={tmp_path / 'hot.npy'}"])):
        with pytest.raises(DataError, match=r"labels are an array of shape \(4, 2\).*y.argmax\(axis=1\)"):
            build_dataset(load_config(["modality=timeseries", "data.name=array-file", "data.batch_size=4",
                                       f"data.train={tmp_path / train}", *extra]), "train")
    np.savez(tmp_path / "column.npz", x=np.zeros((4, 10)), y=np.array([[0], [1], [0], [1]]))  # (n, 1): one each
    column = build_dataset(load_config(["modality=timeseries", "data.name=array-file", "data.batch_size=4",
                                        f"data.train={tmp_path / 'column.npz'}"]), "train")
    assert column.classes == ["0", "1"] and column.labels == [0, 1, 0, 1]
    (tmp_path / "y.txt").write_text("a\nb\na\n")
    base = ["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / 'x.npy'}"]
    with pytest.raises(DataError, match="4 series but 3 labels"):
        build_dataset(load_config([*base, f"data.train_labels={tmp_path / 'y.txt'}"]), "train")
    with pytest.raises(DataError, match="set data.test=FILE"):
        build_dataset(load_config(base), "test")
    (tmp_path / "y4.txt").write_text("a\nb\na\nb\n")
    (tmp_path / "t.txt").write_text("a\nc\na\nb\n")
    with pytest.raises(DataError, match="label 'c' is not a class of the training split"):
        build_dataset(load_config([*base, f"data.train_labels={tmp_path / 'y4.txt'}", f"data.test={tmp_path / 'x.npy'}",
                                   f"data.test_labels={tmp_path / 't.txt'}"]), "test")
    with pytest.raises(DataError, match="needs data.train=FILE"):
        build_dataset(load_config(["modality=timeseries", "data.name=array-file"]), "train")
    with pytest.raises(DataError, match="Label file .*nope.txt does not exist"):
        build_dataset(load_config([*base, f"data.train_labels={tmp_path / 'nope.txt'}"]), "train")
    for key in ("test", "test_labels"):  # said before training, not when evaluating after it
        with pytest.raises(DataError, match=f"data.{key}=.*nope.npy does not exist"):
            build_dataset(load_config([*base, f"data.test={tmp_path / 'x.npy'}",
                                       f"data.{key}={tmp_path / 'nope.npy'}"]), "train")


@pytest.mark.parametrize("name, write, message", [
    ("ragged.npy", lambda p: np.save(p, np.array([np.zeros(3), np.zeros(4)], dtype=object)),
     "array of Python objects.*padded with NaN"),
    ("ragged.npz", lambda p: np.savez(p, x=np.array([np.zeros(3), np.zeros(4)], dtype=object)),
     "array of Python objects"),
    ("words.npy", lambda p: np.save(p, np.array([["a", "b"], ["c", "d"]])), "the series are not numbers"),
    ("junk.npy", lambda p: p.write_bytes(b"not an array"), "is not a NumPy file"),
    ("cut.npz", lambda p: p.write_bytes(b"PK\x03\x04" + bytes(40)), "is not a NumPy file numpy can read"),
    ("junk.pt", lambda p: p.write_bytes(b"not a tensor"), "torch.load reads with weights_only=True"),
])
def test_unreadable_array_files_say_what_is_wrong(tmp_path, name, write, message):
    write(tmp_path / name)
    with pytest.raises(DataError, match=message):
        build_dataset(load_config(["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / name}"]),
                      "train")


def test_series_with_infinite_values_are_skipped_and_counted(tmp_path, caplog):
    x = np.random.default_rng(0).normal(size=(6, 2, 10)).astype(np.float32)
    x[1, 0, 3], x[4, 1, 0], x[5, 0, 2] = np.inf, -np.inf, np.nan  # the NaN is a missing value, kept
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(6) % 2)
    cfg = load_config(["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / 'x.npy'}",
                       f"data.train_labels={tmp_path / 'y.npy'}"])
    with caplog.at_level("WARNING"):
        dataset = build_dataset(cfg, "train")
    assert "skipping 2 series with infinite values" in caplog.text
    assert len(dataset) == 4 and [dataset[i][1] for i in range(4)] == [0, 0, 1, 1]  # series 0, 2, 3, 5
    assert torch.equal(dataset[1][0], torch.from_numpy(x[2]))
    assert all(math.isfinite(v) for v in dataset.info["mean"] + dataset.info["std"])


@pytest.mark.parametrize("name, options", [("fcn", {}), ("resnet1d", {}), ("dilated_cnn", {}),
                                           ("patch_transformer", {"patch": 8})])
def test_encoders_take_any_length(name, options):
    encoder = build_encoder("timeseries", {"name": name, **options}, {"channels": 3, "length": 29}).eval()
    for length in (29, 7, 100):
        assert encoder(torch.randn(4, 3, length)).shape == (4, encoder.out_dim)


@pytest.mark.parametrize("name", ["fcn", "resnet1d"])
def test_pooling_over_time(name):
    info = {"channels": 2, "length": 20}
    torch.manual_seed(0)
    mean = build_encoder("timeseries", {"name": name, "channels": [4, 6], "kernels": [3, 3]}, info).eval()
    torch.manual_seed(0)
    both = build_encoder("timeseries", {"name": name, "channels": [4, 6], "kernels": [3, 3], "pool": "meanmax"},
                         info).eval()
    x = torch.randn(5, 2, 20)
    maps = (mean.features if name == "fcn" else mean.blocks)(x)
    assert both.out_dim == 12 and mean.out_dim == 6
    torch.testing.assert_close(mean(x), maps.mean(dim=-1))
    torch.testing.assert_close(both(x), torch.cat([maps.mean(dim=-1), maps.amax(dim=-1)], dim=1))
    # a pattern's presence anywhere: max pooling is unchanged when the series is shifted in time
    # (zeros on both sides, so the padding sees the same neighbourhood)
    spike = torch.zeros(1, 2, 20)
    spike[..., 6] = 3.0
    maxed = build_encoder("timeseries", {"name": name, "channels": [4, 6], "kernels": [3, 3], "pool": "max"}, info)
    maxed.eval()
    torch.testing.assert_close(maxed(spike), maxed(spike.roll(5, dims=-1)))
    with pytest.raises(ConfigError, match="pool must be one of mean, max, meanmax"):
        build_encoder("timeseries", {"name": name, "pool": "sum"}, info)


def test_the_dilated_cnn_sees_each_step_through_its_dilated_taps():
    torch.manual_seed(0)
    info = {"channels": 2, "length": 40}
    encoder = build_encoder("timeseries", {"name": "dilated_cnn", "width": 3, "kernel": 3, "dilations": [1, 4],
                                           "depth": 1, "pool": "meanmax"}, info).eval()
    assert encoder.out_dim == 3 * 2 * 2
    x = torch.randn(2, 2, 40)
    changed = x.clone()
    changed[:, 1, 20] += 1.0
    for branch, dilation in zip(encoder.branches, (1, 4)):
        before_relu = branch[:-1]  # pad, convolution, BatchNorm
        moved = (before_relu(changed) - before_relu(x)).abs().amax(dim=(0, 1)) > 0
        # a kernel of 3 taps at this dilation, centred: steps 20 - d, 20 and 20 + d, and nothing else
        assert moved.nonzero().flatten().tolist() == [20 - dilation, 20, 20 + dilation]
        assert before_relu(x).shape == (2, 3, 40)  # the length is kept
    maps = [branch(x) for branch in encoder.branches]
    torch.testing.assert_close(encoder(x), torch.cat([torch.cat([m.mean(-1), m.amax(-1)], 1) for m in maps], 1))
    branch = build_encoder("timeseries", {"name": "dilated_cnn", "kernel": 3, "dilations": [4], "depth": 2},
                           info).eval().branches[0]
    moved = (branch(changed) - branch(x)).abs().amax(dim=(0, 1)) > 0
    assert moved.nonzero().flatten().tolist() == [12, 16, 20, 24, 28]  # two layers of taps 4 apart
    with pytest.raises(ConfigError, match="every dilation must be positive"):
        build_encoder("timeseries", {"name": "dilated_cnn", "dilations": [1, 0]}, info)


@pytest.mark.slow
def test_train_eval_and_views_through_the_cli(ucr_root, tmp_path):
    data = [f"data.root={ucr_root}", "data.set=Tiny"]
    run_dir = tmp_path / "run"
    cli("train", *TS_TINY, *data, f"run.dir={run_dir}")
    metrics = json.loads(cli("eval", str(run_dir), "eval.labels_per_class=5", "eval.l2_grid=[0.01]")
                         .stdout.splitlines()[-1])
    assert metrics["n_train"] == 48 and metrics["n_test"] == 20 and metrics["linear_acc"] >= 0.8  # sine vs square
    assert "linear_acc_5" in metrics and metrics["data"] == {"name": "ucr", "set": "Tiny"}
    config = (run_dir / "config.yaml").read_text()
    assert "crop_resize" in config and "time_warp" in config  # the default pair: generic augmentations
    out = tmp_path / "views.png"
    cli("views", "modality=timeseries", *data, "n=4", f"out={out}", "device=cpu")
    from PIL import Image

    with Image.open(out) as image:
        assert image.width > 400 and image.height > 300
    refused = cli("views", "modality=timeseries", *data, "n=4", f"out={tmp_path / 'views.txt'}", check=False)
    assert refused.returncode == 2 and "written as .png files" in refused.stderr and "Traceback" not in refused.stderr


LOCAL = ["augment.local_views=2", "augment.local=[{name: crop_resize, scale: [0.2, 0.5], size: 0.5}, "
         "{name: memory_mixup, ratio: 0.2, memory_size: 64, p: 0.5}]"]


def test_multi_crop_trains_resumes_exactly_and_shows_its_local_views(ucr_root, tmp_path, monkeypatch):
    from mmbyol.checkpoint import load_checkpoint
    from mmbyol.train import train
    from mmbyol.views import show_views

    from ..conftest import train_interrupted

    data = [f"data.root={ucr_root}", "data.set=Tiny", *LOCAL]
    straight = train(load_config([*TS_TINY, *data, f"run.dir={tmp_path / 'straight'}"]))
    train_interrupted(load_config([*TS_TINY, *data, f"run.dir={tmp_path / 'resumed'}"]), 3, monkeypatch)
    train(load_config([*TS_TINY, *data, f"run.dir={tmp_path / 'resumed'}", "resume=auto"]))
    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert b["step"] == 6 and torch.equal(a["rng"]["augment"], b["rng"]["augment"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    memory = [key for key in a["views"] if key.startswith("local.") and key.endswith("memory")]
    assert memory and torch.equal(a["views"][memory[0]], b["views"][memory[0]])  # the local pipeline's state
    # without the local views the same seed trains to other weights
    plain = train(load_config([*TS_TINY, *data, f"run.dir={tmp_path / 'plain'}", "augment.local_views=0"]))
    c = load_checkpoint(plain / "checkpoints" / "last.pt")
    first = next(key for key in a["model"] if key.startswith("online_encoder.") and key.endswith("weight"))
    assert not torch.equal(a["model"][first], c["model"][first])

    out = show_views(load_config(["modality=timeseries", *data, "device=cpu"]), tmp_path / "views.png", n=4)
    assert out == tmp_path / "views.png" and (tmp_path / "views.local.png").stat().st_size > 10_000
    show_views(load_config(["modality=timeseries", *data[:2], "device=cpu", "augment.local_views=0"]),
               tmp_path / "plain" / "views.png", n=4)
    assert not (tmp_path / "plain" / "views.local.png").exists()
    one = tmp_path / "one" / "views.png"
    show_views(load_config(["modality=timeseries", *data, "device=cpu", "augment.local_views=1"]), one, n=4)
    assert (one.parent / "views.local.png").stat().st_size > 10_000  # the one local view, drawn twice


@pytest.mark.parametrize("overrides, message", [
    (["augment.local_views=2", "augment.local=[]"], "needs augment.local"),
    (["augment.local_views=-1"], "augment.local_views must be 0 or more"),
])
def test_local_views_that_cannot_train_are_refused_with_what_to_do(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["modality=timeseries", *overrides])


def test_the_supervised_upper_bound_trains_on_the_two_views_alone(ucr_root, tmp_path, caplog):
    from mmbyol.train import train

    data = [f"data.root={ucr_root}", "data.set=Tiny", *LOCAL, "trainer.max_steps=2", "objective=supervised"]
    with caplog.at_level("INFO", logger="mmbyol"):
        train(load_config([*TS_TINY, *data, f"run.dir={tmp_path / 'run'}"]))
    assert "augment.local_views, BYOL's multi-crop, is left out" in caplog.text


@pytest.mark.slow
def test_windows_of_long_recordings_train_and_evaluate_through_the_cli(tmp_path):
    for split, n, seed in (("train", 8, 0), ("test", 4, 1)):
        series, labels = two_shapes(n, (300, 301), seed=seed)
        np.savez(tmp_path / f"{split}.npz", x=np.stack(series).astype(np.float32), y=np.array(labels))
    run_dir = tmp_path / "run"
    cli("train", *TS_TINY, "data.name=array-file", f"data.train={tmp_path / 'train.npz'}",
            f"data.test={tmp_path / 'test.npz'}", "data.window=50", f"run.dir={run_dir}")
    metrics = json.loads(cli("eval", str(run_dir), "eval.l2_grid=[0.01]", "eval.labels_per_class=2").stdout
                         .splitlines()[-1])
    assert (metrics["n_train"], metrics["n_test"], metrics["n_test_whole"]) == (8 * 6, 4 * 6, 4)
    assert metrics["linear_acc"] >= 0.8 and metrics["linear_acc_whole"] >= 0.75 and "knn_acc_whole" in metrics
    assert "linear_acc_2_whole" in metrics  # 2 labelled recordings a class, all their windows
    assert metrics["data"] == {"name": "array-file", "train": str(tmp_path / "train.npz"),
                               "test": str(tmp_path / "test.npz")}
    assert load_encoder(run_dir).metadata["info"]["window"] == 50
    raw = load_encoder(run_dir, raw_input=True)  # takes windows, and says how to cut a recording into them
    recordings = torch.from_numpy(np.load(tmp_path / "test.npz")["x"][:2])  # (2, 2, 300)
    with pytest.raises(DataError, match=r"windows of 50 steps .data.window.; got series of 300. .*unfold\(2, 50"):
        raw(recordings)
    windows = recordings.unfold(2, 50, 50).transpose(1, 2).flatten(0, 1)  # as the error says
    test_windows = build_dataset(load_eval_config(run_dir, []), "test").x[:12]  # the items the run evaluated
    assert torch.equal(windows, test_windows)
    with torch.no_grad():
        assert torch.equal(raw(windows), raw(test_windows))


def test_the_docs_own_augmentation_works_from_its_folder_with_the_mmbyol_command(ucr_root, tmp_path):
    """docs/timeseries.md's example, saved as the docs say, used by the installed ``mmbyol``
    command (whose path, unlike ``python -m``'s, lacks the working directory)."""
    text = (REPO / "docs" / "timeseries.md").read_text()
    (tmp_path / "my_augmentations.py").write_text(text.split("## Your own augmentation")[1].split("```python\n")[1]
                                                   .split("```")[0])
    command = Path(sys.executable).with_name("mmbyol")
    if not command.exists():
        pytest.skip("no mmbyol command beside this Python")

    def mmbyol(*args):
        result = subprocess.run([str(command), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    assert "channel_dropout [my_augmentations]" in mmbyol("list", "plugins=[my_augmentations]").stdout
    data = [f"data.root={ucr_root}", "data.set=Tiny", "plugins=[my_augmentations]", "device=cpu"]
    mmbyol("views", "modality=timeseries", *data, "augment.view2=[{name: channel_dropout, rate: 1.0, p: 1.0}]",
           "n=2", "out=views.png")
    assert (tmp_path / "views.png").stat().st_size > 1000
    mmbyol("train", *TS_TINY, *data, "augment.view2=[{name: crop_resize}, {name: channel_dropout}]",
           "run.dir=run")
    assert "channel_dropout" in (tmp_path / "run" / "config.yaml").read_text()
