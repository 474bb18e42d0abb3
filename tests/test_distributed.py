"""Data-parallel training: two CPU processes with the gloo backend stand in for two GPUs."""

import json
import os
import socket
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mmbyol.checkpoint import load_checkpoint
from mmbyol.config import load_config
from mmbyol.data import EpochBatches
from mmbyol.distributed import Ranks, check_in_step, sync_batchnorm
from mmbyol.errors import TrainingDiverged
from mmbyol.losses import info_nce_loss
from mmbyol.train import train

from .conftest import TINY, torchrun, train_interrupted

# BYOL's own optimizer and no augmentation, in fp32: one process and two must then take the same
# steps, up to the order of float additions. (AdamW's first steps amplify that rounding: an element
# whose gradient is ~1e-9 still moves by ±lr. bf16, which trainer.precision=auto picks on a CPU
# with AVX512-BF16 or AMX, rounds each half batch apart: 5e-4 between the losses on an AMX Xeon.)
SAME_STEPS = [*TINY, "trainer.log_every=1", "trainer.precision=fp32", "optim.name=lars", "optim.lr=0.5",
              "augment.view1=[]", "augment.view2=[]"]


def losses(run_dir) -> dict[int, float]:
    records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in records if "loss" in r}  # not the monitor's line of step 0


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_ranks_split_every_global_batch_and_together_see_exactly_it(world):
    whole = list(EpochBatches(200, 12, seed=3, epoch=1, start=2))
    slices = [list(EpochBatches(200, 12, seed=3, epoch=1, start=2, ranks=Ranks(rank, world))) for rank in range(world)]
    assert all(len(s) == len(whole) == 200 // 12 - 2 for s in slices)
    for step, batch in enumerate(whole):
        assert sum((s[step] for s in slices), []) == batch


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 6),
                         nn.BatchNorm1d(6), nn.Linear(6, 2))


def _two_rank_worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))  # a stuck collective fails instead of hanging CI
    net = small_net()
    x = torch.randn(16, 3, 8, 8)
    net(x).square().mean().backward()  # one process, the whole batch: the reference
    reference = {"grads": [p.grad.clone() for p in net.parameters()],
                 "buffers": {k: v.clone() for k, v in net.state_dict().items() if "running" in k}}
    net = small_net()
    ddp = nn.parallel.DistributedDataParallel(sync_batchnorm(net, torch.device("cpu")))
    ddp(x[rank * 8 : (rank + 1) * 8]).square().mean().backward()
    ranks = Ranks(rank, 2)
    check_in_step(net, ranks, step=1)  # identical weights pass
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1e-3 * rank  # rank 1 drifts
    try:
        check_in_step(net, ranks, step=2)
        drift = None
    except TrainingDiverged as error:
        drift = str(error)
    torch.save({"reference": reference, "grads": [p.grad for p in net.parameters()],
                "buffers": {k: v for k, v in net.state_dict().items() if "running" in k}, "drift": drift},
               f"{out}/{rank}.pt")
    # DDP's reducer must go before the process group: were it to drop the group's last reference,
    # the group's destructor would hold the GIL while its threads wait for it (pytorch#56297)
    del ddp
    dist.destroy_process_group()


def spawn_two(worker, *args) -> None:
    """``worker(rank, port, *args)`` in two processes that meet on a free port; a hang fails the test
    instead of stalling the suite."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = mp.spawn(worker, args=(port, *args), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not processes.join(timeout=1):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            pytest.fail("the two processes did not finish within 120 s")


def test_cpu_sync_batchnorm_is_batchnorm_over_the_global_batch_and_drift_is_caught(tmp_path):
    spawn_two(_two_rank_worker, str(tmp_path))
    for rank in range(2):
        result = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        for got, want in zip(result["grads"], result["reference"]["grads"]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)  # DDP averages the two halves' gradients
        for key, want in result["reference"]["buffers"].items():
            torch.testing.assert_close(result["buffers"][key], want, rtol=1e-5, atol=1e-6)
        assert result["drift"] is not None and "rank 1 differ" in result["drift"]


def infonce_batch():
    torch.manual_seed(0)
    return nn.Linear(6, 4), torch.randn(8, 6), torch.randn(8, 6)


def _infonce_worker(rank: int, port: int, out: str, sizes: tuple[int, int]) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    projector, x1, x2 = infonce_batch()
    mine = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
    loss = info_nce_loss(projector(x1[mine]), projector(x2[mine]), temperature=0.5)
    loss.backward()
    reduced = [loss.detach(), *(p.grad for p in projector.parameters())]
    for tensor in reduced:  # the mean over ranks: what training logs, and DDP's gradient averaging
        dist.all_reduce(tensor)
        tensor /= 2
    torch.save(reduced, f"{out}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("sizes", [(4, 4), (3, 5)])  # unequal when a rank skipped unreadable items
def test_infonce_on_two_processes_is_infonce_on_the_global_batch_loss_and_gradients(tmp_path, sizes):
    spawn_two(_infonce_worker, str(tmp_path), sizes)
    projector, x1, x2 = infonce_batch()
    loss = info_nce_loss(projector(x1), projector(x2), temperature=0.5)  # one process, all 8 items
    loss.backward()
    want = [loss.detach(), *(p.grad for p in projector.parameters())]
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the negatives are the other rank's items too: one rank's half alone gives another loss
    torch.manual_seed(0)
    half = info_nce_loss(projector(x1[:4]), projector(x2[:4]), temperature=0.5)
    assert abs(half.detach() - loss.detach()) > 0.1


def _frees_ddp_worker(rank: int, port: int, out: str) -> None:
    """``train`` as under ``torchrun``, once to the end and once failing mid-run, noting whether
    its DDP model still lives when the process group is destroyed."""
    import importlib
    import weakref

    from mmbyol import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    train_module = importlib.import_module("mmbyol.train")  # `mmbyol.train` is also the function
    wrapped, alive = [], []
    wrap, close = distributed.wrap, distributed.close

    def recording_wrap(*args):
        model = wrap(*args)
        wrapped.append(weakref.ref(model))
        return model

    def recording_close(ranks):
        alive.append(wrapped[-1]() is not None)
        close(ranks)

    def failing_step(*args, **kwargs):
        raise RuntimeError("a step failed")

    distributed.wrap, distributed.close = recording_wrap, recording_close
    train(load_config([*TINY, f"run.dir={out}/finished"]))
    train_module.train_step = failing_step
    try:
        train(load_config([*TINY, f"run.dir={out}/failed"]))
    except RuntimeError:
        pass
    torch.save(alive, f"{out}/{rank}.pt")


def test_training_frees_its_ddp_model_before_the_process_group_finished_or_failed(tmp_path, fashion_mnist):
    """DDP's Reducer holds the group: were it the last holder, the group's destructor would run
    holding the GIL while gloo's threads wait for it to free a finished collective's tensors, and a
    rank would hang at exit (pytorch#56297)."""
    spawn_two(_frees_ddp_worker, str(tmp_path))
    for rank in range(2):
        assert torch.load(tmp_path / f"{rank}.pt") == [False, False]  # (finished, failed): both freed


def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path, fashion_mnist):
    one = train(load_config([*SAME_STEPS, f"run.dir={tmp_path / 'one'}"]))
    result = torchrun(2, "train", *SAME_STEPS, f"run.dir={tmp_path / 'two'}")
    two = tmp_path / "two"
    assert result.stdout.strip() == str(two)  # one line for the whole run: rank 0's
    assert "2 processes" in result.stderr and result.stderr.count("training image") == 1
    a, b = losses(one), losses(two)
    assert list(a) == list(b) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    assert a[6] < a[1] - 0.5  # and the loss did fall: the steps were real
    state = load_checkpoint(two / "checkpoints" / "last.pt")
    assert state["step"] == 6 and len(state["ranks"]) == 1  # rank 1's random streams are saved too
    assert not torch.equal(state["rng"]["augment"], state["ranks"][0]["rng"]["augment"])  # draws differ per rank
    for key, value in load_checkpoint(one / "checkpoints" / "last.pt")["model"].items():
        torch.testing.assert_close(state["model"][key], value, rtol=1e-2, atol=1e-3)


# multi-crop's local views go through the online network only, as more forward passes of its
# weights before the one backward; noise of std 0 keeps them the same on every process
LOCAL_VIEWS = ["augment.local_views=2", "augment.local=[{name: gaussian_noise, std: 0.0}]"]


def test_a_run_resumes_on_another_number_of_processes(tmp_path, fashion_mnist, monkeypatch):
    steps = [*SAME_STEPS, *LOCAL_VIEWS]
    straight = train(load_config([*steps, f"run.dir={tmp_path / 'straight'}"]))
    train_interrupted(load_config([*steps, f"run.dir={tmp_path / 'moved'}"]), 3, monkeypatch)
    result = torchrun(2, "train", *steps, f"run.dir={tmp_path / 'moved'}", "resume=auto")
    assert "saved by 1 process(es) and resumes on 2" in result.stderr
    a, b = losses(straight), losses(tmp_path / "moved")
    assert list(b) == [1, 2, 3, 4, 5, 6]  # steps 1-3 from one process, 4-6 from two
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    assert load_checkpoint(tmp_path / "moved" / "checkpoints" / "last.pt")["step"] == 6
    # with both views and the local ones equal to the input, each of the six terms of step 1 is the
    # pair's: three times the loss of the same step without local views
    pair = train(load_config([*SAME_STEPS, "trainer.max_steps=1", f"run.dir={tmp_path / 'pair'}"]))
    assert a[1] == pytest.approx(3 * losses(pair)[1], rel=1e-5)
