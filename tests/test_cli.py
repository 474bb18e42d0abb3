"""End to end through the command line, as a user runs it."""

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch

from .conftest import TINY, cli, run_cli


@pytest.mark.slow
def test_train_then_eval_end_to_end(tmp_path, fashion_mnist):
    run_dir = tmp_path / "run"
    result = run_cli("train", *TINY, f"run.dir={run_dir}")
    assert result.stdout.strip() == str(run_dir)
    result = run_cli("eval", str(run_dir), "eval.test_limit=500", "eval.labels_per_class=5", "eval.l2_grid=[0.01]")
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"linear_acc", "knn_acc", "linear_acc_5"} <= set(metrics)
    # before the probes' wait, what is to come: one line on stderr, none with -q
    assert ("features of 256 training and 500 test items" in result.stderr and "step 6); now the linear probe, kNN "
            "and 5 draws of 5 labels per class" in result.stderr)
    assert len(metrics["linear_acc_5_draws"]) == 5  # eval.label_draws: the reported figure is their mean
    assert metrics["linear_acc_5"] == pytest.approx(sum(metrics["linear_acc_5_draws"]) / 5, abs=1e-4)
    assert 0.4 < metrics["linear_acc"] <= 1.0  # ten classes: far above chance even after 6 steps
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["linear_acc"] == metrics["linear_acc"] and "protocol" in saved

    quiet = run_cli("-q", "eval", str(run_dir), "init=random", "eval.test_limit=500", "eval.l2_grid=[0.01]")
    random = json.loads(quiet.stdout.splitlines()[-1])
    assert random["init"] == "random" and (run_dir / "eval-random.json").exists() and "features of" not in quiet.stderr

    from mmbyol import load_encoder

    encoder = load_encoder(run_dir)
    assert encoder(torch.rand(3, 1, 28, 28)).shape == (3, 128)


def test_resume_auto_on_a_finished_run_trains_no_more(tmp_path, fashion_mnist):
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, f"run.dir={run_dir}")
    lines = (run_dir / "metrics.jsonl").read_text()
    result = run_cli("train", f"run.dir={run_dir}", "resume=auto", "trainer.progress=false")
    assert "resuming" in result.stderr and (run_dir / "metrics.jsonl").read_text() == lines


def test_views_writes_a_picture(tmp_path, fashion_mnist):
    out = tmp_path / "pictures" / "views.png"  # a folder not yet there is made
    run_cli("views", f"out={out}", "n=6", "device=cpu")
    from PIL import Image

    with Image.open(out) as image:
        assert image.width > 6 * 28 and image.height > 3 * 28


def test_commands_that_need_no_images_do_not_import_torchvision():
    """torchvision's import takes a second and a half, most of a command's start: only image data
    sets, encoders and view pictures import it."""
    code = ("import sys; from mmbyol import cli; cli.main(['list']); cli.main(['config', 'modality=timeseries']); "
            "print('torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "False"


def test_list_and_config_print_the_registered_names_and_the_yaml():
    listing = cli("list").stdout
    assert "modality image" in listing and "random_resized_crop" in listing and "fashion-mnist" in listing
    timeseries = listing[listing.index("modality timeseries"):]
    assert "+ generic      amplitude_scale, crop_resize" in timeseries and "time_warp" in timeseries
    assert "presets (preset=NAME): cifar10-resnet18, imagenet-resnet50" in listing
    yaml = cli("config", "trainer.epochs=3").stdout
    assert "epochs: 3" in yaml and "name: small_cnn" in yaml


@pytest.mark.parametrize("args, message", [
    (["train", "trainer.epoch=3"], "Did you mean 'trainer.epochs'"),
    (["train", "data.root=/nonexistent"], "apt-get install dataset-fashion-mnist"),
    (["train", "augment.view1=[{name: cutoot}]"], "Unknown augmentation 'cutoot'"),
    (["eval", "/nonexistent-run"], "not a run directory"),
])
def test_bad_input_is_one_paragraph_not_a_traceback(args, message):
    result = cli(*args, check=False)  # an exception out of main would be the traceback
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("mmbyol: error:") == 1


@pytest.mark.parametrize("args, usage, missing", [
    (["eval"], "usage: mmbyol eval [-h] RUN_DIR [key=value ...]", "RUN_DIR"),
    (["data"], "usage: mmbyol data [-h] prepare NAME [key=value ...]", "prepare, NAME"),
])
def test_a_command_without_its_arguments_shows_its_own_usage(args, usage, missing):
    from mmbyol import cli

    with pytest.raises(SystemExit) as exit_code, contextlib.redirect_stderr(io.StringIO()) as stderr:
        cli.main(args)
    assert exit_code.value.code == 2
    assert stderr.getvalue() == f"{usage}\nmmbyol {args[0]}: error: the following arguments are required: {missing}\n"


def test_train_reads_a_config_file_and_a_typo_in_it_is_one_line(tmp_path, fashion_mnist):
    good = tmp_path / "good.yaml"
    good.write_text("trainer:\n  max_steps: 2\n  log_every: 1\nmodel:\n  hidden_dim: 64\n  projection_dim: 32\n")
    run_dir = tmp_path / "run"
    cli("train", f"config={good}", "data.limit=256", "data.batch_size=64", "trainer.progress=false",
        "optim.warmup_epochs=0", "device=cpu", f"run.dir={run_dir}")
    saved = (run_dir / "config.yaml").read_text()
    assert "max_steps: 2" in saved and "hidden_dim: 64" in saved
    assert sum("loss" in line for line in (run_dir / "metrics.jsonl").read_text().splitlines()) == 2

    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_step: 2\n")
    result = cli("train", f"config={bad}", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("mmbyol: error:")]
    assert len(error) == 1 and "Did you mean 'trainer.max_steps'" in error[0] and f"(in {bad})" in error[0]
