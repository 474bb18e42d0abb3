"""The package as a user installs it: a wheel, installed on its own, works from any folder."""

import os
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO, TINY

NOT_SHIPPED = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                                     ".ruff_cache", ".hypothesis", "tests", "benchmarks", "docs", "examples")


@pytest.mark.slow
def test_the_wheel_installed_alone_configures_and_trains_outside_the_source_tree(tmp_path, fashion_mnist):
    source = tmp_path / "source"  # a copy, so building leaves nothing in the checkout
    shutil.copytree(REPO, source, ignore=NOT_SHIPPED)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("mmbyol-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    shutil.rmtree(source)  # nothing of the source tree is left to lean on

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def mmbyol(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "mmbyol", *args], cwd=elsewhere, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    where = subprocess.run([sys.executable, "-c", "import mmbyol; print(mmbyol.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))  # the installed copy, not the checkout
    assert "name: byola_cnn_small" in mmbyol("config", "modality=audio").stdout
    assert "name: small_cnn" in mmbyol("config").stdout
    assert "trust_clip: true" in mmbyol("config", "preset=cifar10-resnet18").stdout  # presets ship too
    run = mmbyol("train", *TINY, "trainer.max_steps=2").stdout.strip()
    assert (elsewhere / run / "encoder.safetensors").exists()
