"""Kills, Ctrl-C and a diverging loss: a run never loses more than the steps since its last
checkpoint, never leaves a torn file, and resumes to the very run it would have been."""

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmbyol.checkpoint import load_checkpoint
from mmbyol.config import load_config
from mmbyol.errors import TrainingDiverged
from mmbyol.train import train

from ..conftest import REPO, TINY, TORCHRUN_ENV, cli, torchrun, torchrun_command

train_module = importlib.import_module("mmbyol.train")  # `mmbyol.train` is also the function
STEPS = 20
LONGER = [*TINY, f"trainer.max_steps={STEPS}", "trainer.checkpoint_every=1", "trainer.log_every=1"]


def metrics(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line being written right now
            pass
    return records


def train_args(run_dir, *extra) -> list[str]:
    """``mmbyol`` arguments that train LONGER into ``run_dir``."""
    return ["train", *LONGER, f"run.dir={run_dir}", *extra]


def start(run_dir, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmbyol", *train_args(run_dir, *extra)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_two(run_dir) -> subprocess.Popen:
    """The same training in two processes under ``torchrun``."""
    return subprocess.Popen(torchrun_command(2, *train_args(run_dir)), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=TORCHRUN_ENV)


def wait_for_step(process: subprocess.Popen, run_dir, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(r["step"] >= step for r in metrics(run_dir)):
        if process.poll() is not None:
            raise AssertionError(f"the run ended before step {step}: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no step {step} within {timeout} s")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, fashion_mnist):
    """The uninterrupted run that every interrupted one must end on."""
    return train(load_config([*LONGER, f"run.dir={tmp_path_factory.mktemp('straight') / 'run'}"]))


def assert_same_run(a, b) -> None:
    first, second = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    assert first["step"] == second["step"] == STEPS
    for key, value in first["model"].items():
        assert torch.equal(value, second["model"][key]), key
    assert [r.get("loss") for r in metrics(a)] == [r.get("loss") for r in metrics(b)]


def test_sigkill_mid_training_then_resume_auto_gives_the_uninterrupted_run(tmp_path, straight, tally):
    run = tmp_path / "killed"
    checkpoint = run / "checkpoints" / "last.pt"
    for kill_at in (3, 9, 15):  # a checkpoint every step: the kills land in and between saves
        process = start(run, "resume=auto")
        wait_for_step(process, run, kill_at)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        tally["faults injected"] += 1
        assert not (run / "encoder.safetensors").exists()  # it really died mid-run
        assert load_checkpoint(checkpoint)["step"] >= kill_at - 1  # never torn, at most a step behind
    (checkpoint.parent / "last.pt.4242.tmp").write_bytes(b"\x80\x02 half a save")  # as a kill in torch.save leaves
    cli(*train_args(run, "resume=auto"))  # resumed in this process: the killed one is under test
    tally["runs resumed"] += 4
    tally["faults injected"] += 1

    a, b = load_checkpoint(straight / "checkpoints" / "last.pt"), load_checkpoint(checkpoint)
    assert b["step"] == a["step"] == STEPS
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["step"] for r in metrics(run)] == list(range(STEPS + 1))  # one uninterrupted log (0: the monitor's)
    assert [r.get("loss") for r in metrics(run)] == [r.get("loss") for r in metrics(straight)]
    assert [r.get("monitor_knn") for r in metrics(run)] == [r.get("monitor_knn") for r in metrics(straight)]
    assert not list(run.rglob("*.tmp"))


# Ctrl-C; SIGTERM, which SLURM and Kubernetes send before pre-empting a job; SLURM's SIGUSR1 warning
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_a_stop_signal_saves_says_how_to_continue_exits_128_plus_it_and_resumes_exactly(tmp_path, straight, signum,
                                                                                           tally):
    run = tmp_path / "run"
    process = start(run)
    wait_for_step(process, run, 3)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    tally["faults injected"] += 1
    assert process.returncode == 128 + signum and "Traceback" not in stderr  # 130, 143, 138: what a requeue reads
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 3 <= step < STEPS and not (run / "encoder.safetensors").exists()
    assert f"interrupted at step {step}" in stderr and "resume=auto" in stderr
    assert metrics(run)[-1]["step"] == step
    cli(*train_args(run, "resume=auto"))  # resumed in this process: the killed one is under test
    tally["runs resumed"] += 1
    assert_same_run(straight, run)


@pytest.fixture(scope="module")
def straight_two(tmp_path_factory, fashion_mnist):
    """The uninterrupted two-process run."""
    run = tmp_path_factory.mktemp("straight-two") / "run"
    torchrun(2, *train_args(run))
    return run


def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_and_resume_auto_ends_on_the_same_run(tmp_path, straight_two,
                                                                                                  tally):
    """torchrun passes SIGTERM on to its workers; they agree on the step to stop at, save and exit."""
    run = tmp_path / "stopped"
    process = start_two(run)
    wait_for_step(process, run, 3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    tally["faults injected"] += 1
    assert process.returncode != 0, stderr[-3000:]
    assert stderr.count("stopped by SIGTERM") == 2, stderr[-3000:]  # each rank: after the same step's save
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 3 <= state["step"] < STEPS and len(state["ranks"]) == 1  # rank 1's streams too
    torchrun(2, *train_args(run, "resume=auto"))
    tally["runs resumed"] += 1
    assert [r["step"] for r in metrics(run)] == list(range(STEPS + 1))  # one log: steps before the signal, then after
    assert_same_run(straight_two, run)


def test_a_rank_that_dies_does_not_leave_the_other_hanging_and_the_run_resumes(tmp_path, straight_two, tally):
    run = tmp_path / "rank-died"
    process = start_two(run)
    wait_for_step(process, run, 3)
    workers = [int(pid) for task in Path(f"/proc/{process.pid}/task").iterdir()
               for pid in (task / "children").read_text().split()]
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)  # one rank dies mid-step, as on an out-of-memory kill
    started = time.monotonic()
    process.communicate(timeout=120)  # the other rank ends too: nothing waits on a collective forever
    tally["faults injected"] += 1
    assert process.returncode != 0 and time.monotonic() - started < 90
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] >= 2  # a whole checkpoint, not a torn one
    torchrun(2, *train_args(run, "resume=auto"))
    tally["runs resumed"] += 1
    assert_same_run(straight_two, run)


def test_a_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, fashion_mnist, monkeypatch,
                                                                           tally):
    original, calls = train_module.train_step, []

    def step_that_diverges(*args, **kwargs):
        loss, outputs = original(*args, **kwargs)
        calls.append(1)
        return (torch.tensor(float("nan")) if len(calls) == 5 else loss), outputs

    monkeypatch.setattr(train_module, "train_step", step_that_diverges)
    with pytest.raises(TrainingDiverged, match="at step 5.*last good checkpoint.*resume=auto"):
        train(load_config([*TINY, f"run.dir={tmp_path / 'nan'}"]))
    tally["faults injected"] += 1
    state = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="spoken-digits is synthesized with espeak-ng")
def test_a_stop_signal_while_a_data_set_is_prepared_leaves_no_half_made_folder(tmp_path, tally):
    """Outside training, a scheduler's stop ends the command as Ctrl-C does: its cleanups run, and
    the clips not yet begun are dropped (without that, a SIGTERM at the first clips waited for
    every clip queued, over a minute on a busy machine)."""
    signum = signal.SIGTERM
    tally["faults injected"] += 1
    process = subprocess.Popen([sys.executable, "-m", "mmbyol", "data", "prepare", "spoken-digits",
                                f"data.root={tmp_path / 'digits'}"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(tmp_path.glob(".digits-*/*/*/*.wav")):  # the staging folder is being filled
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-2000:]
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signum and f"stopped by {signum.name}" in stderr, stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # neither the staging folder nor a half-made set


def test_a_kill_while_a_resumed_run_rewrites_its_files_loses_none_of_them(tmp_path, monkeypatch, tally):
    """A resume trims metrics.jsonl to its checkpoint's step and writes config.yaml again; a kill in
    the middle (here: before the new text reaches the disk) leaves each file as it was."""
    from mmbyol.checkpoint import atomic_write_text
    from mmbyol.metrics import MetricsLog

    tally["faults injected"] += 2
    metrics = tmp_path / "metrics.jsonl"
    history = "".join(json.dumps({"step": step, "loss": 1.0 / (step + 1)}) + "\n" for step in range(0, 60, 10))
    metrics.write_text(history)
    config = tmp_path / "config.yaml"
    config.write_text("seed: 0\n")

    def killed(fd):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(os, "fsync", killed)
        with pytest.raises(KeyboardInterrupt):
            MetricsLog(metrics, resume_step=30)
        with pytest.raises(KeyboardInterrupt):
            atomic_write_text(config, "seed: 1\n")
    assert metrics.read_text() == history and config.read_text() == "seed: 0\n"
    MetricsLog(metrics, resume_step=30)  # uninterrupted: the lines after step 30 are dropped
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [0, 10, 20, 30]
