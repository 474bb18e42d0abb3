"""The monitor: kNN and RankMe on a validation slice of the training split, against step 0."""

import contextlib
import json
import logging
import math

import pytest
import torch

import mmbyol.data
from mmbyol.config import load_config
from mmbyol.monitor import Monitor, monitor_every, noise_note, split_memory
from mmbyol.train import train

from .conftest import TINY, cli


def config(tmp_path, name, *extra):
    return load_config([*TINY, f"run.dir={tmp_path / name}", *extra])


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_memory_is_each_class_first_half_in_data_set_order():
    labels = torch.tensor([0, 0, 1, 0, 1, 1, 1, 0, 2, -1])
    memory = split_memory(labels)
    assert memory.tolist() == [True, True, True, False, True, False, False, False, True, False]
    # class 2 has one item: it is memory, so no query of class 2 goes without a neighbour


def test_with_groups_the_memory_is_each_class_first_half_of_groups():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    groups = ["a", "b", "a", "c", "b", "c", "a", "b", "b", "a", "a"]
    memory = split_memory(labels, groups)
    # class 0 meets a, b, c: a and b are memory; class 1 meets c, a, b: c and a; class 2 has one group
    assert memory.tolist() == [True, True, True, False, True, True, True, False, False, True, False]
    # no group is on both sides within a class: the queries ask about groups the memory never holds
    for label in range(2):
        sides = {(g, m) for g, m, y in zip(groups, memory.tolist(), labels.tolist()) if y == label}
        assert len({g for g, _ in sides}) == len(sides)


def test_interval_defaults_to_about_ten_measurements_on_logged_steps():
    cfg = load_config(["trainer.log_every=10"])
    assert monitor_every(cfg, 2398) == 240
    assert monitor_every(cfg, 30) == 10  # never between two logged steps
    assert monitor_every(load_config(["trainer.monitor_every=7"]), 2398) == 7
    assert monitor_every(load_config(["trainer.monitor_every=0"]), 2398) == 0


def test_the_monitor_reads_the_training_split_only(tmp_path, fashion_mnist, monkeypatch):
    from mmbyol.registry import DATASETS

    splits = []
    original = DATASETS.get("image", "fashion-mnist")

    def recording(data_cfg, split):  # every read of a split goes through the registered builder
        splits.append(split)
        return original(data_cfg, split)

    monkeypatch.setitem(DATASETS._items, ("image", "fashion-mnist"), recording)
    run = train(config(tmp_path, "run", "trainer.monitor_items=64"))
    assert splits == ["train"]
    measured = [r for r in records(run) if "monitor_knn" in r]
    assert [r["step"] for r in measured] == [0, 2, 4, 6]
    assert all(0 <= r["monitor_knn"] <= 1 and r["monitor_rank"] >= 1 for r in measured)
    assert all(r["monitor_knn_start"] == measured[0]["monitor_knn"] for r in measured[1:])


def test_the_slice_is_the_training_items_as_evaluation_reads_them(tmp_path, fashion_mnist):
    cfg = config(tmp_path, "unused")
    dataset = mmbyol.data.build_dataset(cfg, "train")
    from mmbyol.modalities.base import get_modality

    monitor = Monitor(dataset, get_modality("image"), dataset.info, torch.device("cpu"),
                      contextlib.nullcontext, 32, 16, 200, 0.1)
    picked = mmbyol.data.evenly_spaced(dataset, 32)
    assert len(monitor.items) == 32
    for (x, y), (want_x, want_y) in zip(monitor.items, (picked[i] for i in range(32))):
        assert torch.equal(x, want_x) and y == want_y
    memory = int(monitor.memory.sum())
    assert 16 <= memory <= 16 + 10 and monitor.k == math.ceil(math.sqrt(memory))  # √n neighbours


def test_monitoring_does_not_change_the_course_of_training(tmp_path, fashion_mnist):
    watched = train(config(tmp_path, "watched", "trainer.monitor_every=1"))
    plain = train(config(tmp_path, "plain", "trainer.monitor_every=0"))
    from mmbyol.checkpoint import load_checkpoint

    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (watched, plain))
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["rng"]["augment"], b["rng"]["augment"])
    assert [r["step"] for r in records(watched)] == [0, 1, 2, 3, 4, 5, 6]  # a line at every measurement
    assert not any("monitor_knn" in r for r in records(plain))


def test_warns_when_past_half_the_run_byol_is_below_its_start(tmp_path, fashion_mnist, monkeypatch, caplog):
    knn = iter([0.8, 0.9, 0.79, 0.6])  # steps 0, 2, 4, 6: below the start at 4 and 6, past half (3)

    def measure(self, encoder):
        self.seconds += 0.0
        return {"monitor_rank": 5.0, "monitor_knn": next(knn), "monitor_seconds": 0.0}

    monkeypatch.setattr(Monitor, "measure", measure)
    with caplog.at_level(logging.WARNING, logger="mmbyol"):
        train(config(tmp_path, "run"))
    warnings = [r.getMessage() for r in caplog.records if "MONITOR WARNING" in r.getMessage()]
    assert len(warnings) == 2 and "step 4 of 6" in warnings[0] and "79.0%" in warnings[0] and "80.0%" in warnings[0]
    assert "The shortfall, 1.0 points, is under two standard errors" in warnings[0]  # a point of a small slice
    assert "60.0%" in warnings[1] and "shortfall" not in warnings[1]  # 20 points is no slice's noise


def test_the_noise_of_the_slice_is_two_binomial_standard_errors():
    assert noise_note(0.74, 0.80, 100) == (" The shortfall, 6.0 points, is under two standard errors of a kNN on 100 "
                                           "queries (4.0 points each): it may be noise. A larger slice "
                                           "(trainer.monitor_items) or the test split tells more.")
    assert noise_note(0.70, 0.80, 100) == ""  # 10 points: more than two errors of 4
    assert noise_note(0.75, 0.80, 400) == ""  # 2 points each: 5 is more than two
    assert noise_note(0.77, 0.80, 400) != ""  # and 3 is less
    assert noise_note(0.77, 0.80, 400, whole_split=True).endswith(
        "The slice is the whole training split: the test split tells more.")
    assert noise_note(0.79, 0.80, 0) != ""  # no queries: any shortfall may be noise


def test_resumed_run_keeps_its_step_zero_reference(tmp_path, fashion_mnist, monkeypatch):
    from .conftest import train_interrupted

    train_interrupted(config(tmp_path, "run"), 3, monkeypatch)
    start = records(tmp_path / "run")[0]
    assert start["step"] == 0
    train(config(tmp_path, "run", "resume=auto"))
    lines = records(tmp_path / "run")
    assert [r["step"] for r in lines] == [0, 2, 4, 6]  # no second step-0 line
    assert lines[-1]["monitor_knn_start"] == start["monitor_knn"]


def test_tensorboard_logger_and_plot(tmp_path, fashion_mnist):
    run_dir = tmp_path / "run"
    cli("train", *TINY, f"run.dir={run_dir}", "trainer.loggers=[jsonl, tensorboard]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/tau", "train/lr", "train/z_std", "train/rank", "monitor/knn", "monitor/rank"} <= tags
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses == pytest.approx([r["loss"] for r in records(run_dir) if "loss" in r])
    assert [e.step for e in events.Scalars("monitor/knn")] == [0, 2, 4, 6]

    out = cli("plot", str(run_dir)).stdout.strip()
    from PIL import Image

    assert out == str(run_dir / "curves.png") and Image.open(out).size[0] > 500
    from mmbyol.plot import plot_run

    assert plot_run(run_dir, tmp_path / "figures" / "curves.png").exists()  # a folder not yet there is made
    bad = cli("train", *TINY, f"run.dir={tmp_path / 'x'}", "trainer.loggers=[wandb]", check=False)
    assert bad.returncode == 2 and "jsonl, tensorboard" in bad.stderr
