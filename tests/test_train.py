import pytest
import torch

from mmbyol.checkpoint import load_checkpoint
from mmbyol.config import load_config
from mmbyol.train import train

from .conftest import TINY, train_interrupted


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
    assert [r["step"] for r in lines] == [0, 2, 4, 6]  # step 0: the monitor's untrained reference
    assert {"step", "epoch", "loss", "tau", "lr", "z_std", "rank", "samples_per_s", "monitor_knn"} <= set(lines[1])
    from mmbyol.schedules import tau_schedule

    # the τ of the last step, k = K − 1
    assert lines[-1]["tau"] == pytest.approx(tau_schedule(5, 6, state["config"]["model"]["tau_base"]))
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


def test_training_into_a_finished_run_without_resume_is_refused(tmp_path, fashion_mnist):
    from mmbyol.errors import ConfigError

    run = train(config(tmp_path, "run"))
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="resume=auto"):
        train(config(tmp_path, "run"))
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


CUDA_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which 3.06 MiB "
            "is free. Including non-PyTorch memory, this process has 79.18 GiB memory in use. If reserved but "
            "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True")


def test_a_device_out_of_memory_says_what_to_lower_and_how_the_run_goes_on(tmp_path, fashion_mnist, monkeypatch):
    import importlib

    from mmbyol.errors import ConfigError

    train_module, evaluate_module = importlib.import_module("mmbyol.train"), importlib.import_module("mmbyol.evaluate")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError(CUDA_OOM)

    run = tmp_path / "run"
    with monkeypatch.context() as patched:
        patched.setattr(train_module, "train_step", out_of_memory)
        with pytest.raises(ConfigError, match=r"^cpu ran out of memory while training \(CUDA out of memory. Tried to "
                                              r"allocate 2.00 GiB. .* of which 3.06 MiB is free\). Lower "
                                              r"data.batch_size \(now 64\),.* and train into a new run.dir; if other "
                                              r"processes held the memory, resume=auto continues") as raised:
            train(load_config([*TINY, f"run.dir={run}"]))
    assert "PYTORCH_CUDA_ALLOC_CONF" not in str(raised.value)
    train(load_config([*TINY, f"run.dir={run}", "resume=auto"]))
    with monkeypatch.context() as patched:
        patched.setattr(evaluate_module, "extract_features", out_of_memory)
        with pytest.raises(ConfigError, match=r"ran out of memory computing the features .* Lower eval.batch_size"):
            evaluate_module.evaluate(load_config([*TINY, f"run.dir={run}"]), run)
