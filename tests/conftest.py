import contextlib
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmbyol.modalities.image.data import FASHION_MNIST_ROOT

REPO = Path(__file__).resolve().parent.parent


def _share_the_cores() -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``), each worker and every process its tests
    start use the worker's share of the cores: a torch process per worker with a thread per core
    each oversubscribes them, and OpenMP's waiting threads then slow every step many times over."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # macOS
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the processes tests start
        torch.set_num_threads(threads)


_share_the_cores()

# Small and fast: a tiny encoder head, few steps, a subset of Fashion-MNIST at 32 pixels (the
# images are 28; the default 64 quadruples every convolution's work without testing anything more).
TINY = [
    "data.limit=256", "data.batch_size=64", "data.image_size=32", "trainer.max_steps=6", "trainer.progress=false",
    "trainer.checkpoint_every=2", "trainer.log_every=2", "model.hidden_dim=64", "model.projection_dim=32",
    "optim.warmup_epochs=0", "device=cpu",
]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fashion_mnist() -> str:
    if not Path(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST is missing: `make test` installs it (apt-get install dataset-fashion-mnist).")
    return FASHION_MNIST_ROOT


def train_interrupted(cfg, interrupt_at: int, monkeypatch) -> None:
    """Train as ``cfg`` says, with Ctrl-C (SIGINT) during step ``interrupt_at``: the loop finishes
    that step, saves a checkpoint and raises KeyboardInterrupt, as a user's Ctrl-C does."""
    import importlib
    import signal

    train_module = importlib.import_module("mmbyol.train")  # `mmbyol.train` is also the function
    original, calls = train_module.train_step, []

    def interrupted_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(cfg)
    monkeypatch.setattr(train_module, "train_step", original)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, check: bool = True):
    """``python -m mmbyol ARGS`` in a subprocess, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "mmbyol", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"mmbyol {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``mmbyol ARGS`` through the CLI's ``main`` in this process: its parsing, the command, the exit
    code, stdout and the error paragraph, without a new interpreter's seconds of importing torch.
    What only a process of its own shows (``python -m mmbyol`` itself, signals, installed packages,
    the log lines on stderr) is tested with ``run_cli``."""
    from mmbyol.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    if check and code != 0:
        raise AssertionError(f"mmbyol {' '.join(args)} exited {code}:\n{err.getvalue()[-3000:]}")
    return subprocess.CompletedProcess(["mmbyol", *args], code, out.getvalue(), err.getvalue())


TORCHRUN_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on a 2-core machine


def torchrun_command(nproc: int, *args: str) -> list[str]:
    """``torchrun --standalone --nproc_per_node=N -m mmbyol ARGS``, as a user runs it."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
            "mmbyol", *args]


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``torchrun_command(nproc, *args)`` to its end; it must succeed. A run that outlives
    ``timeout`` fails the test with its log, its workers killed with it: killing torchrun alone
    would leave them running."""
    with subprocess.Popen(torchrun_command(nproc, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=TORCHRUN_ENV, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"torchrun did not end within {timeout} s:\n{stderr[-4000:]}")
    assert process.returncode == 0, stderr[-4000:]
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
