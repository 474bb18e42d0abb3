"""The example plugin packages in examples/, installed as a user installs them."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO, TINY, run_cli


def install(example: str, target) -> dict:
    """``pip install`` the example into ``target``; the environment that puts it on the path."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO / "examples" / example)],
                   check=True, capture_output=True, timeout=300)
    return {"PYTHONPATH": str(target)}


@pytest.mark.slow
def test_custom_augmentation_plugin_installs_and_trains_by_name(tmp_path, fashion_mnist):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO / "examples" / "custom_augmentation")],
                   check=True, capture_output=True, timeout=300)
    env = {"PYTHONPATH": str(target)}
    assert "cutout [mmbyol-cutout]" in run_cli("list", env=env).stdout
    view = "augment.view2=[{name: random_resized_crop}, {name: cutout, p: 1.0, size: 0.4}]"
    run_dir = tmp_path / "run"
    run_cli("train", *TINY, f"run.dir={run_dir}", view, env=env)
    assert (run_dir / "encoder.safetensors").exists()
    assert "cutout" in (run_dir / "config.yaml").read_text()


def write_csv(path, n, seed):
    """Three clusters in 8 features, labelled c0, c1, c2."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=generator)
    rows = torch.randn(n, 8, generator=generator) + 3 * torch.nn.functional.one_hot(labels, 8)
    lines = [",".join(f"f{i}" for i in range(8)) + ",label"]
    lines += [",".join(f"{v:.4f}" for v in row) + f",c{label}" for row, label in zip(rows.tolist(), labels.tolist())]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_a_fourth_modality_from_a_plugin_package_trains_evaluates_and_shows_its_views(tmp_path):
    env = install("vector_modality", tmp_path / "site")
    listed = run_cli("list", env=env)
    assert "modality vectors [mmbyol-vectors]" in listed.stdout
    assert ("plugin mmbyol-vectors registered modality vectors, encoder vectors/mlp, augmentation vectors/feature_mask,"
            " augmentation vectors/gaussian_noise, data set vectors/csv\n") in listed.stderr  # one line per package
    write_csv(tmp_path / "train.csv", 256, seed=0)
    write_csv(tmp_path / "test.csv", 90, seed=1)
    data = ["modality=vectors", f"data.train={tmp_path / 'train.csv'}", f"data.test={tmp_path / 'test.csv'}"]
    run_dir = tmp_path / "run"
    run_cli("train", *data, "trainer.max_steps=12", "trainer.progress=false", "device=cpu", f"run.dir={run_dir}",
            env=env)
    config = (run_dir / "config.yaml").read_text()
    assert "name: mlp" in config and "feature_mask" in config  # the plugin's own defaults
    metrics = json.loads(run_cli("eval", str(run_dir), "eval.l2_grid=[0.01]", env=env).stdout.splitlines()[-1])
    assert metrics["n_test"] == 90 and metrics["linear_acc"] > 0.8  # three clusters, well apart
    shown = run_cli("views", *data, "n=2", f"out={tmp_path / 'views.txt'}", env=env).stdout
    assert shown.count("original:") == 2 and shown.count("view 2:") == 2

    # the search knows nothing of this modality: its space is what the plugin's augmentations declare
    where = tmp_path / "search"
    run_cli("search", *data, "search.trials=2", "search.trial_steps=8", "search.measurements=2",
            "trainer.progress=false", "device=cpu", f"run.dir={where}", env=env)
    import optuna

    study = optuna.load_study(study_name="mmbyol", storage=f"sqlite:///{where / 'study.db'}")
    searched = study.trials[1].params
    assert {"view1.feature_mask", "view2.gaussian_noise"} <= set(searched)
    assert any(name.startswith("view") and name.endswith((".rate", ".std")) for name in searched) or not any(
        searched[f"{view}.{name}"] for view in ("view1", "view2") for name in ("feature_mask", "gaussian_noise"))
    assert (where / "best.yaml").exists()

    # the modality comparison takes it as it takes the built-in ones, its data given as overrides
    out = tmp_path / "compare"
    compared = subprocess.run([sys.executable, str(REPO / "benchmarks" / "compare_modalities.py"), "--profile", "smoke",
                               "--modalities", "vectors", "--plugins", "mmbyol_vectors", "--parts", "augment",
                               "--out", str(out), *data[1:], "trainer.max_steps=4", "eval.l2_grid=[0.01]",
                               "device=cpu"],
                              cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert compared.returncode == 0, compared.stderr[-3000:]
    records = json.loads((out / "compare_modalities.json").read_text())["records"]
    assert {r["variant"] for r in records} == {"default", "-feature_mask", "-gaussian_noise"}  # no crop to keep
    assert "vectors (csv" in (out / "compare_modalities.md").read_text()
