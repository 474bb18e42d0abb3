import importlib
import platform

import pytest
import torch

from mmbyol.config import load_config
from mmbyol.train import load_checkpoint, train

from .conftest import TINY, train_interrupted

train_module = importlib.import_module("mmbyol.train")  # `mmbyol.train` is also the function


def config(tmp_path, name, *extra):
    return load_config([*TINY, f"run.dir={tmp_path / name}", *extra])


def test_run_directory_layout(tmp_path, fashion_mnist):
    run = train(config(tmp_path, "run"))
    assert (run / "config.yaml").exists() and (run / "encoder.safetensors").exists()
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 6
    assert {"model", "optimizer", "scaler", "views", "rng", "config", "step"} <= set(state)
    import json

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6]
    assert {"step", "epoch", "loss", "tau", "lr", "z_std", "rank", "samples_per_s"} <= set(lines[0])
    from mmbyol.schedules import tau_schedule

    assert lines[-1]["tau"] == pytest.approx(tau_schedule(5, 6, state["config"]["model"]["tau_base"]))  # the τ of the last step, k = K − 1
    assert not list(run.rglob("*.tmp"))


def test_resume_after_half_the_steps_equals_straight_training(tmp_path, fashion_mnist, monkeypatch):
    straight = train(config(tmp_path, "straight"))

    train_interrupted(config(tmp_path, "resumed"), 3, monkeypatch)  # the loop finishes step 3, saves, stops
    half = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert half["step"] == 3
    train(config(tmp_path, "resumed", "resume=auto"))

    a = load_checkpoint(straight / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["rng"]["augment"], b["rng"]["augment"])


def test_infonce_objective_trains(tmp_path, fashion_mnist):
    run = train(config(tmp_path, "infonce", "objective=infonce"))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not any(k.startswith("target") for k in state["model"])


def test_supervised_objective_trains_a_classifier_on_the_labels(tmp_path, fashion_mnist):
    run = train(config(tmp_path, "supervised", "objective=supervised"))
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["model"]["classifier.weight"].shape == (10, 128)
    assert not any(k.startswith("target") for k in state["model"])
    assert (run / "encoder.safetensors").exists()


def test_collapse_monitor_tells_healthy_from_collapsed():
    from mmbyol.train import collapsed, effective_rank, projection_std

    healthy = torch.randn(256, 128)
    assert projection_std(healthy) == pytest.approx(1 / 128**0.5, rel=0.1)
    assert effective_rank(healthy) > 100
    constant = torch.ones(256, 128) + 1e-6 * torch.randn(256, 128)
    assert projection_std(constant) < 1e-3 and effective_rank(constant) < 2
    assert collapsed(projection_std(constant), effective_rank(constant), 128)
    assert not collapsed(projection_std(healthy), effective_rank(healthy), 128)


def test_training_into_a_finished_run_without_resume_is_refused(tmp_path, fashion_mnist):
    from mmbyol.errors import ConfigError

    run = train(config(tmp_path, "run"))
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="resume=auto"):
        train(config(tmp_path, "run"))
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_it_natively(monkeypatch, native):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert train_module.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert train_module.resolve_precision("fp32", cpu) == "fp32"  # what is asked for explicitly is kept
    assert train_module.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")  # a torch without the private probes
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert train_module.resolve_precision("auto", cpu) == "fp32"


def mapped_bytes() -> int:
    """glibc's count of the bytes malloc holds in mappings of their own (``mallinfo2().hblkhd``)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    return mallinfo2().hblkhd


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_cpu_runs_take_large_tensors_from_the_heap_not_from_mappings_of_their_own():
    assert not train_module.keep_freed_memory(torch.device("cuda"))  # GPU runs leave the host's malloc alone
    before = mapped_bytes()
    assert train_module.resolve_device("cpu") == torch.device("cpu")  # what train, eval and views call
    assert train_module.keep_freed_memory(torch.device("cpu"))
    # 64 MB, as big as a step's activations: glibc would map it afresh (and unmap it when freed,
    # so the next step faults its pages in again); now it comes from the heap, which keeps it
    activations = torch.ones(16 * 2**20)
    assert mapped_bytes() - before < activations.nbytes
