"""``mmbyol export``: each format loads back in its own library and gives the encoder's features."""

import json
import os
import warnings

import numpy as np
import pytest
import torch

from mmbyol import cli, load_encoder
from mmbyol.config import load_config
from mmbyol.data import build_dataset
from mmbyol.evaluate import load_eval_config
from mmbyol.export import ExportError, export
from mmbyol.modalities.base import get_modality
from mmbyol.train import train

from .conftest import TINY
from .modalities.test_audio import AUDIO_TINY, tone_folder  # noqa: F401  (a fixture)
from .modalities.test_text import TEXT_TINY, corpus_files  # noqa: F401  (a fixture)

onnxruntime = pytest.importorskip("onnxruntime")
STEPS = ["trainer.max_steps=2", "trainer.monitor_every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fashion_mnist, tone_folder, corpus_files):  # noqa: F811
    """One finished tiny run per modality, and ResNet-18 runs with either stem."""
    root = tmp_path_factory.mktemp("export-runs")
    options = {
        "image": [*TINY, "encoder.name=small_cnn"],
        "resnet-cifar": [*TINY, "encoder.name=resnet18", "data.limit=64", "data.batch_size=16"],
        "resnet": [*TINY, "encoder.name=resnet18", "encoder.cifar_stem=false", "data.limit=64",
                   "data.batch_size=16"],
        "audio": [*AUDIO_TINY, f"data.root={tone_folder}"],
        "timeseries": ["modality=timeseries", "data.set=GunPoint", "data.batch_size=16", "trainer.progress=false",
                       "model.hidden_dim=64", "model.projection_dim=32", "device=cpu"],
        "text": [*TEXT_TINY, f"data.train={corpus_files / 'train.jsonl'}", f"data.test={corpus_files / 'test.jsonl'}"],
    }
    return {name: train(load_config([*args, *STEPS, f"run.dir={root / name}"])) for name, args in options.items()}


def raw_batch(run_dir, n=5):
    """The first ``n`` test items of the run's data set, collated as the data sets give them."""
    cfg = load_eval_config(run_dir, [])
    dataset = build_dataset(cfg, "test")
    return get_modality(cfg.modality).collate([dataset[i][0] for i in range(n)])


def run_export(run_dir, fmt, *extra):
    assert cli.main(["-q", "export", str(run_dir), f"format={fmt}", *extra]) == 0
    folder = run_dir / "export" / fmt
    assert (folder / "mmbyol-export.json").exists() and (folder / "README.md").exists()
    return folder


def readme_code(folder):
    text = (folder / "README.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("modality", ["image", "audio", "timeseries"])
def test_raw_input_encoder_is_prepare_then_encoder(runs, modality):
    batch = raw_batch(runs[modality])
    encoder, raw = load_encoder(runs[modality]), load_encoder(runs[modality], raw_input=True)
    prepared = get_modality(modality).prepare(batch, torch.device("cpu"), encoder.metadata["info"])
    with torch.no_grad():
        torch.testing.assert_close(raw(batch), encoder(prepared))


def test_raw_input_text_encoder_takes_strings(runs):
    encoder, raw = load_encoder(runs["text"]), load_encoder(runs["text"], raw_input=True)
    texts = ["a dog that hunts by scent", "music"]
    prepared = get_modality("text").prepare(texts, torch.device("cpu"), encoder.metadata["info"])
    with torch.no_grad():
        torch.testing.assert_close(raw(texts), encoder(prepared))


@pytest.mark.parametrize("modality", ["image", "audio", "timeseries"])
def test_onnx_takes_raw_input_and_matches_the_encoder(runs, modality, monkeypatch):
    folder = run_export(runs[modality], "onnx")
    manifest = json.loads((folder / "mmbyol-export.json").read_text())
    assert manifest["checked"]["max_abs_diff"] < 1e-3
    runtime = onnxruntime.InferenceSession(str(folder / "encoder.onnx"))
    raw = load_encoder(runs[modality], raw_input=True)
    batch = raw_batch(runs[modality])
    inputs = [batch]
    if modality == "audio":  # a waveform of another length than the training clips
        inputs.append(torch.randn(2, 9000) * 0.1)
    if modality == "timeseries":  # longer series, and series of their own lengths padded with NaN
        inputs.append(torch.randn(3, batch.shape[1], 70))
        ragged = torch.randn(3, batch.shape[1], 90)
        ragged[0, :, 40:], ragged[1, :, 75:] = float("nan"), float("nan")
        inputs.append(ragged)
    for x in inputs:
        got = runtime.run(None, {runtime.get_inputs()[0].name: x.numpy()})[0]
        assert np.isfinite(got).all()
        with torch.no_grad():
            np.testing.assert_allclose(got, raw(x).numpy(), rtol=1e-4, atol=1e-4)
    (name, what), = manifest["inputs"].items()
    assert f"# {name}: {what}\n" in readme_code(folder)  # the README says what to feed
    monkeypatch.chdir(folder)
    scope = {name: batch.numpy()}
    exec(readme_code(folder), scope)  # the README's lines, as a user copies them
    with torch.no_grad():
        np.testing.assert_allclose(scope["features"], raw(batch).numpy(), rtol=1e-4, atol=1e-4)


def test_onnx_text_from_the_exported_tokenizer(runs, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = run_export(runs["text"], "onnx")
    assert not [w for w in caught if "will not be used" in str(w.message)]  # the shared axes are meant
    texts = ["a small dog that hunts by scent and barks at night", "music", "the act of writing a letter"]
    monkeypatch.chdir(folder)
    scope = {"texts": texts}
    exec(readme_code(folder), scope)  # the README's lines, as a user copies them
    raw = load_encoder(runs["text"], raw_input=True)
    with torch.no_grad():
        np.testing.assert_allclose(scope["features"], raw(texts).numpy(), rtol=1e-4, atol=1e-4)


def test_onnx_of_a_run_on_windows_takes_windows(tmp_path):
    series = np.random.default_rng(0).normal(size=(6, 2, 120)).astype(np.float32)
    np.savez(tmp_path / "long.npz", x=series, y=np.arange(6) % 2)
    run_dir = train(load_config(["modality=timeseries", "data.name=array-file", f"data.train={tmp_path / 'long.npz'}",
                                 "data.window=40", "data.batch_size=8", "trainer.progress=false", "device=cpu",
                                 "model.hidden_dim=32", "model.projection_dim=16", *STEPS,
                                 f"run.dir={tmp_path / 'run'}"]))
    folder = run_export(run_dir, "onnx")
    runtime = onnxruntime.InferenceSession(str(folder / "encoder.onnx"))
    assert runtime.get_inputs()[0].shape[1:] == [2, 40]  # one length, the window's
    raw = load_encoder(run_dir, raw_input=True)
    windows = torch.from_numpy(series[:2]).unfold(2, 40, 40).transpose(1, 2).flatten(0, 1)
    with torch.no_grad():
        np.testing.assert_allclose(runtime.run(None, {"series": windows.numpy()})[0], raw(windows).numpy(),
                                   rtol=1e-4, atol=1e-4)
    assert "windows of 40 steps" in json.loads((folder / "mmbyol-export.json").read_text())["inputs"]["series"]


def test_torchvision_loads_the_weights_with_the_cifar_stem(runs, monkeypatch):
    folder = run_export(runs["resnet-cifar"], "torchvision")
    preprocessing = json.loads((folder / "preprocessing.json").read_text())
    assert preprocessing["cifar_stem"] and preprocessing["input_size"] == [1, 28, 28]
    monkeypatch.chdir(folder)
    scope = {}
    exec(readme_code(folder), scope)  # torchvision.models.resnet18, the stem set, load_state_dict (strict)
    model = scope["model"].eval()
    images = raw_batch(runs["resnet-cifar"])
    x = images.float() / 255
    mean, std = (torch.tensor(preprocessing[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        torch.testing.assert_close(model((x - mean) / std), load_encoder(runs["resnet-cifar"], raw_input=True)(images),
                                   rtol=1e-4, atol=1e-4)


def test_timm_creates_the_model_from_the_folder(runs):
    timm = pytest.importorskip("timm")
    folder = run_export(runs["resnet"], "timm")
    assert 'timm.create_model("local-dir:FOLDER", pretrained=True)' in readme_code(folder)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=model)
    info = load_encoder(runs["resnet"]).metadata["info"]
    assert config["input_size"] == (1, 28, 28) and np.allclose(config["mean"], info["mean"])
    images = raw_batch(runs["resnet"])
    mean, std = (torch.tensor(config[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        torch.testing.assert_close(model((images.float() / 255 - mean) / std),
                                   load_encoder(runs["resnet"], raw_input=True)(images), rtol=1e-4, atol=1e-4)
    with pytest.raises(ExportError, match="CIFAR stem"):
        export(runs["resnet-cifar"], "timm")


def test_hf_and_sentence_transformers_mean_pool_as_the_encoder(runs):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from transformers import AutoModel, AutoTokenizer

    texts = ["a small dog that hunts by scent", "music", "the act of writing a letter to a friend"]
    with torch.no_grad():
        expected = load_encoder(runs["text"], raw_input=True)(texts)

    folder = run_export(runs["text"], "hf")
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    assert tokenizer.model_max_length == model.config.max_position_embeddings
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    torch.testing.assert_close((tokens * mask).sum(1) / mask.sum(1), expected, rtol=1e-4, atol=1e-4)

    folder = run_export(runs["text"], "sentence-transformers")
    model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
    np.testing.assert_allclose(model.encode(texts), expected.numpy(), rtol=1e-4, atol=1e-4)


def test_a_longer_position_table_exports_without_the_training_length_cap(tmp_path, corpus_files):  # noqa: F811
    data = [f"data.train={corpus_files / 'train.jsonl'}", f"data.test={corpus_files / 'test.jsonl'}"]
    run_dir = train(load_config([*TEXT_TINY, *data, *STEPS, "encoder.max_positions=64", f"run.dir={tmp_path}"]))
    folder = export(run_dir, "hf")
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
    assert model.config.max_position_embeddings == tokenizer.model_max_length == 64
    assert json.loads((folder / "mmbyol-export.json").read_text())["trained_length"] == 32
    long = tokenizer(["word " * 60], truncation=True, return_tensors="pt")  # past the trained 32 tokens
    assert long["input_ids"].shape[1] == 64
    assert model(**long).last_hidden_state.shape[1] == 64


def test_export_errors_say_what_to_do(runs, capsys):
    assert cli.main(["export", str(runs["image"]), "format=keras"]) == 2
    assert "choose one of onnx, torchvision, timm, hf, sentence-transformers" in capsys.readouterr().err
    assert cli.main(["export", str(runs["image"])]) == 2
    assert "format= is missing" in capsys.readouterr().err
    with pytest.raises(ExportError, match="ResNet image encoders.*use format=onnx"):
        export(runs["image"], "torchvision")
    with pytest.raises(ExportError, match="exports text encoders"):
        export(runs["audio"], "hf")
    assert not any(name.endswith(".partial") for name in os.listdir(runs["audio"] / "export"))


def test_the_command_prints_only_the_folder(runs):
    from .conftest import run_cli

    result = run_cli("export", str(runs["timeseries"]), "format=onnx", f"out={runs['timeseries'] / 'onnx-out'}")
    assert result.stdout.strip() == str(runs["timeseries"] / "onnx-out")
    assert (runs["timeseries"] / "onnx-out" / "encoder.onnx").exists()
    # the ONNX optimizer's own INFO lines (its graph rewrites, dozens of them) are not the user's concern
    assert "constant folding" not in result.stderr and "unused nodes" not in result.stderr, result.stderr[-2000:]


def test_an_export_never_replaces_the_run_or_a_folder_it_did_not_write(runs, tmp_path, monkeypatch):
    """An export replaces its folder whole: ``out`` may be absent, empty or an earlier export, never
    the run itself, a folder holding the run, or a folder of the user's files."""
    from mmbyol.errors import ConfigError

    run = runs["timeseries"]
    kept = sorted(p.name for p in run.iterdir())
    for out in (run, run.parent):
        with pytest.raises(ConfigError, match="holds the run"):
            export(run, "onnx", out)
    monkeypatch.chdir(run)
    with pytest.raises(ConfigError, match="holds the run"):
        export(run, "onnx", ".")
    assert sorted(p.name for p in run.iterdir()) == kept and (run / "encoder.safetensors").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no mmbyol export"):
        export(run, "onnx", mine)
    assert (mine / "notes.txt").read_text() == "mine" and not (tmp_path / "mine.partial").exists()
    with pytest.raises(ConfigError, match="is a file"):
        export(run, "onnx", mine / "notes.txt")

    empty = tmp_path / "empty"
    empty.mkdir()
    assert (export(run, "onnx", empty) / "encoder.onnx").exists()
    assert (export(run, "onnx", empty) / "mmbyol-export.json").exists()  # an earlier export is replaced
