"""``mmbyol export RUN_DIR format=NAME [out=DIR]``: a run's encoder in the formats other tools load.

- ``onnx`` (every modality): one graph from raw input to features, the front end included, so
  an audio model takes 16 kHz waveforms and a time-series model raw values; text takes the
  tokenizer's ``input_ids`` and ``attention_mask`` (the run's ``tokenizer.json`` beside it).
  Checked against the PyTorch encoder with onnxruntime where it is installed.
- ``torchvision`` and ``timm`` (the ResNet image encoders): the weights under the library's own
  key names and the preprocessing (mean, std, input size, stem).
- ``hf`` and ``sentence-transformers`` (text): ``AutoModel`` and its tokenizer, and the
  sentence-transformers layout with the mean pooling the encoder uses.

Each export writes ``mmbyol-export.json`` (what it is, how to call it, what was checked) and a
README.md with the lines that load it. The folder is written aside and moved into place whole.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError, MMBYOLError
from .evaluate import RawInputEncoder, load_encoder
from .modalities.base import get_modality

log = logging.getLogger("mmbyol")

FORMATS = ("onnx", "torchvision", "timm", "hf", "sentence-transformers")
TOLERANCE = 1e-3  # the largest difference allowed, relative to the largest feature, between a runtime and torch


class ExportError(MMBYOLError):
    """An export that a library refused or whose outputs do not match the encoder's."""


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export a finished run's encoder as ``fmt`` into ``out`` (default ``RUN_DIR/export/FMT``)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is not an export format; choose one of {', '.join(FORMATS)}.")
    encoder = load_encoder(run_dir)
    meta = encoder.metadata
    out = Path(out).expanduser() if out else Path(run_dir) / "export" / fmt
    replaceable(out, Path(run_dir))
    where = Path(os.path.abspath(out))  # `out=.` has no name to put .partial after
    staging = where.with_name(where.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest, usage = WRITERS[fmt](encoder, meta, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest = {"format": fmt, "modality": meta["modality"], "encoder": meta["encoder"], "step": meta["step"],
                **manifest}
    (staging / "mmbyol-export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (staging / "README.md").write_text(f"# mmbyol encoder, {fmt}\n\n{meta['modality']} encoder "
                                       f"`{meta['encoder']['name']}` after {meta['step']} BYOL steps.\n\n"
                                       f"```python\n{usage.strip()}\n```\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def replaceable(out: Path, run_dir: Path) -> None:
    """A :class:`ConfigError` unless ``out`` is a folder an export may replace whole: absent, empty, or
    an earlier export (it holds ``mmbyol-export.json``) — never the run, a folder the run is in, or
    a folder of anything else."""
    where, run = out.resolve(), run_dir.resolve()
    if where == run or where in run.parents:
        raise ConfigError(f"out={out} holds the run {run_dir}, and an export replaces its folder whole. Choose a "
                          f"folder outside the run, or leave out unset for {run_dir / 'export' / 'FORMAT'}.")
    if where.exists() and not where.is_dir():
        raise ConfigError(f"out={out} is a file; an export is a folder. Choose a new folder.")
    if where.is_dir() and any(where.iterdir()) and not (where / "mmbyol-export.json").is_file():
        raise ConfigError(f"out={out} holds files that are no mmbyol export (it has no mmbyol-export.json), and an "
                          f"export replaces its folder whole. Choose a new or empty folder.")


def _require(module: str, fmt: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        names = {"onnxscript": "onnx onnxscript", "sentence_transformers": "sentence-transformers"}
        package = names.get(module, module)
        raise ExportError(f"format={fmt} needs {package}: pip install {package}") from None


def _close(reference: torch.Tensor, other: torch.Tensor, what: str) -> float:
    """The largest absolute difference; an ExportError past the tolerance."""
    other = torch.as_tensor(other, dtype=torch.float32)
    if other.shape != reference.shape:
        raise ExportError(f"{what} gives features of shape {tuple(other.shape)}, the encoder {tuple(reference.shape)}")
    diff = float((other - reference).abs().max())
    if diff > TOLERANCE * max(1.0, float(reference.abs().max())):
        raise ExportError(f"{what} differs from the encoder by up to {diff:.3g}: the export is not faithful; "
                          f"please report it with the run's config")
    return diff


# ----------------------------------------------------------------------------------- ONNX


class TokenFeatures(nn.Module):
    """A text encoder from token ids: ``(input_ids, attention_mask)`` → mean-pooled features."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.pooled(input_ids, attention_mask)


def _example(modality: str, info: dict[str, Any], batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs of the built-in modalities as their data sets give them, of ``batch`` items."""
    generator = torch.Generator().manual_seed(batch)
    if modality == "image":
        return (torch.randint(0, 256, (batch, info["channels"], info["size"], info["size"]), dtype=torch.uint8,
                              generator=generator),)
    if modality == "audio":
        return (0.1 * torch.randn(batch, info["clip_samples"], generator=generator),)
    if modality == "timeseries":
        return (torch.randn(batch, info["channels"], info["length"], generator=generator),)
    if modality == "text":
        from .modalities.text.frontend import prepare_text

        words = ["a small dog that hunts by scent", "the act of writing", "a tall building", "music", "a river"]
        tokens = prepare_text([" ".join(words[(i + j) % 5] for j in range(i + 1)) for i in range(batch)],
                              torch.device("cpu"), info)
        return tokens["input_ids"], tokens["attention_mask"]
    raise ExportError(f"format=onnx knows example inputs of the built-in modalities only, not {modality}")


# the axes that may vary in an ONNX model's input besides the batch: name and least size (a
# waveform longer than the STFT's half window, which it pads by reflection)
VARIABLE_AXES = {"image": {}, "audio": {1: ("samples", 512)}, "timeseries": {2: ("length", 16)},
                 "text": {1: ("tokens", 2)}}
INPUTS = {"image": ["images"], "audio": ["waveforms"], "timeseries": ["series"],
          "text": ["input_ids", "attention_mask"]}


def write_onnx(encoder: nn.Module, meta: dict[str, Any], out: Path) -> tuple[dict, str]:
    _require("onnxscript", "onnx")
    name, info = meta["modality"], meta["info"]
    modality = get_modality(name)
    if name == "text":
        from .modalities.text.tokenizer import run_tokenizer

        module = TokenFeatures(encoder)
        (out / "tokenizer.json").write_text(run_tokenizer(info).to_str())  # truncating and padding as in training
    elif modality.front_end is not None and name in VARIABLE_AXES:
        module = RawInputEncoder(modality.front_end(info), encoder)
    else:
        raise ExportError(f"format=onnx needs a modality whose front end maps tensors to tensors; {name} has none")
    module = module.eval().to(memory_format=torch.contiguous_format)
    inputs = INPUTS[name]
    batch = torch.export.Dim("batch", min=1)
    variable = {} if info.get("window") else VARIABLE_AXES[name]  # a run on windows takes their one length
    shapes = tuple({0: batch, **{axis: torch.export.Dim(label, min=least)
                                 for axis, (label, least) in variable.items()}} for _ in inputs)
    path = out / "encoder.onnx"
    try:  # the exporter's progress lines go to stderr: stdout is the command's answer
        with torch.no_grad(), contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # two inputs sharing the batch and token axes is what the text model means, not a fault
            warnings.filterwarnings("ignore", message=r"# The axis name: \w+ will not be used", category=UserWarning)
            torch.onnx.export(module, _example(name, info, 2), str(path), dynamo=True, input_names=inputs,
                              output_names=["features"], dynamic_shapes=shapes, external_data=False,
                              verbose=False)
    except Exception as error:  # the exporter's summary names what it cannot convert
        summary = str(error).partition("## Exception summary")[2].partition("The error above")[0].strip()
        raise ExportError(f"torch.onnx.export failed for the {name} encoder: {summary or error}") from error
    manifest: dict[str, Any] = {"file": "encoder.onnx", "inputs": _describe_inputs(name, info),
                                "output": "features (batch, dim), float32"}
    try:
        import onnxruntime
    except ImportError:
        manifest["checked"] = "not checked: onnxruntime is not installed"
        log.warning("onnxruntime is not installed: the ONNX export is not checked against the encoder")
    else:
        check = _example(name, info, 3)
        runtime = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            reference = module(*check).float()
        got = runtime.run(None, {key: value.numpy() for key, value in zip(inputs, check)})[0]
        manifest["checked"] = {"runtime": f"onnxruntime {onnxruntime.__version__}", "batch": 3,
                               "max_abs_diff": _close(reference, torch.from_numpy(got), "onnxruntime")}
    feeds = ", ".join(f'"{key}": {key}' for key in inputs)
    takes = "".join(f"# {key}: {what}\n" for key, what in manifest["inputs"].items()) if name != "text" else ""
    usage = f"""import onnxruntime
model = onnxruntime.InferenceSession("encoder.onnx")
{takes}features = model.run(None, {{{feeds}}})[0]  # the inputs: mmbyol-export.json"""
    if name == "text":
        usage = ("import numpy as np\nfrom tokenizers import Tokenizer\n" + usage.replace(
            "features =", 'rows = Tokenizer.from_file("tokenizer.json").encode_batch(texts)  # truncated, padded\n'
            "input_ids = np.array([r.ids for r in rows])\n"
            "attention_mask = np.array([r.attention_mask for r in rows])\nfeatures =", 1))
    return manifest, usage


def _describe_inputs(name: str, info: dict[str, Any]) -> dict[str, str]:
    if name == "image":
        return {"images": f"uint8 (batch, {info['channels']}, {info['size']}, {info['size']}), pixel values 0-255"}
    if name == "audio":
        return {"waveforms": f"float32 (batch, samples), mono at {info['sample_rate']} Hz, any length of 512 or "
                             f"more samples (training clips: {info['clip_samples']})"}
    if name == "timeseries" and info.get("window"):
        return {"series": f"float32 (batch, {info['channels']}, {info['window']}), raw values, NaN for missing: "
                          f"windows of {info['window']} steps, as the run cut its series into (data.window)"}
    if name == "timeseries":
        return {"series": f"float32 (batch, {info['channels']}, steps), raw values, NaN for missing; any number of "
                          f"steps, shorter series padded with NaN at the end (each is resampled to the training "
                          f"length, {info['length']})"}
    return {"input_ids": "int64 (batch, tokens), from tokenizer.json", "attention_mask": "int64 (batch, tokens)"}


# ----------------------------------------------------------------------- torchvision / timm


def _resnet(encoder: nn.Module, meta: dict[str, Any], fmt: str) -> tuple[str, nn.Module, dict[str, Any]]:
    """The torchvision ResNet inside an image encoder and its preprocessing."""
    import torchvision

    arch = meta["encoder"]["name"]
    body = encoder[1] if meta["modality"] == "image" and len(encoder) == 2 else None
    if not isinstance(body, torchvision.models.ResNet):
        raise ExportError(f"format={fmt} exports the ResNet image encoders (resnet18, resnet50); this run's encoder is "
                          f"{meta['modality']} {arch}: use format=onnx")
    info = meta["info"]
    cifar_stem = isinstance(body.maxpool, nn.Identity)
    preprocessing = {"architecture": arch, "num_features": encoder.out_dim,
                     "input_size": [info["channels"], info["size"], info["size"]],
                     "mean": list(info["mean"]), "std": list(info["std"]), "input_range": [0.0, 1.0],
                     "cifar_stem": cifar_stem, "in_channels": info["channels"]}
    return arch, body, preprocessing


def _stem_lines(preprocessing: dict[str, Any]) -> str:
    channels = preprocessing["in_channels"]
    if preprocessing["cifar_stem"]:
        return (f"model.conv1 = nn.Conv2d({channels}, 64, 3, stride=1, padding=1, bias=False)  # the CIFAR stem\n"
                "model.maxpool = nn.Identity()\n")
    if channels != 3:
        return f"model.conv1 = nn.Conv2d({channels}, 64, 7, stride=2, padding=3, bias=False)\n"
    return ""


def write_torchvision(encoder: nn.Module, meta: dict[str, Any], out: Path) -> tuple[dict, str]:
    from safetensors.torch import save_file

    arch, body, preprocessing = _resnet(encoder, meta, "torchvision")
    save_file({k: v.detach().contiguous() for k, v in body.state_dict().items()}, str(out / "model.safetensors"))
    (out / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")
    usage = f'''import torchvision
from safetensors.torch import load_file
from torch import nn
model = torchvision.models.{arch}(weights=None)
{_stem_lines(preprocessing)}model.fc = nn.Identity()  # features, {preprocessing["num_features"]}-d
model.load_state_dict(load_file("model.safetensors"))
# input: float in [0, 1], then torchvision.transforms.Normalize(mean, std) of preprocessing.json'''
    return {"file": "model.safetensors", "preprocessing": preprocessing}, usage


def write_timm(encoder: nn.Module, meta: dict[str, Any], out: Path) -> tuple[dict, str]:
    timm = _require("timm", "timm")
    arch, body, preprocessing = _resnet(encoder, meta, "timm")
    if preprocessing["cifar_stem"]:
        raise ExportError("timm's ResNets have no CIFAR stem (a 3×3 stride-1 convolution, no max-pool), so "
                          "timm.create_model cannot rebuild this encoder: use format=torchvision (its README shows "
                          "the two lines that set the stem) or format=onnx")
    channels, size = preprocessing["in_channels"], preprocessing["input_size"][1]
    model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=channels)
    try:
        model.load_state_dict(body.state_dict())
    except RuntimeError as error:
        raise ExportError(f"timm {timm.__version__}'s {arch} does not take torchvision's key names: {error}") from None
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (channels, size, size), "crop_pct": 1.0,
                            "mean": tuple(preprocessing["mean"]), "std": tuple(preprocessing["std"]),
                            "num_classes": 0}
    timm.models.save_for_hf(model, str(out), model_args={"in_chans": channels}, safe_serialization=True)
    (out / "preprocessing.json").write_text(json.dumps(preprocessing, indent=2) + "\n")
    usage = f'''import timm
model = timm.create_model("local-dir:FOLDER", pretrained=True)  # features, {preprocessing["num_features"]}-d
config = timm.data.resolve_data_config({{}}, model=model)  # mean, std, input size
transform = timm.data.create_transform(**config)'''
    return {"file": "model.safetensors", "preprocessing": preprocessing, "timm": timm.__version__}, usage


# ---------------------------------------------------------------------------------- text


def _text(encoder: nn.Module, meta: dict[str, Any], fmt: str) -> None:
    if meta["modality"] != "text" or not hasattr(encoder, "save_pretrained"):
        raise ExportError(f"format={fmt} exports text encoders; this run's is {meta['modality']} "
                          f"{meta['encoder']['name']}: use format=onnx")


def write_hf(encoder: nn.Module, meta: dict[str, Any], out: Path) -> tuple[dict, str]:
    _text(encoder, meta, "hf")
    encoder.save_pretrained(out)
    positions = encoder.model.config.max_position_embeddings
    usage = f'''from transformers import AutoModel, AutoTokenizer
tokenizer, model = AutoTokenizer.from_pretrained(FOLDER), AutoModel.from_pretrained(FOLDER)
batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")  # up to {positions} tokens
tokens = model(**batch).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1)
features = (tokens * mask).sum(1) / mask.sum(1)  # mean pooling, as in training'''
    return {"max_tokens": positions, "pooling": "mean over the attention mask",
            "trained_length": meta["info"]["max_length"]}, usage


def write_sentence_transformers(encoder: nn.Module, meta: dict[str, Any], out: Path) -> tuple[dict, str]:
    _text(encoder, meta, "sentence-transformers")
    st = _require("sentence_transformers", "sentence-transformers")
    try:  # where sentence-transformers keeps them now; `models` is their older, deprecated home
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    hf = out / "hf.partial"
    encoder.save_pretrained(hf)
    positions = encoder.model.config.max_position_embeddings
    transformer = Transformer(str(hf), max_seq_length=positions)
    pooling = Pooling(encoder.out_dim, pooling_mode="mean")
    st.SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(out))
    shutil.rmtree(hf)
    usage = '''from sentence_transformers import SentenceTransformer
model = SentenceTransformer(FOLDER)
features = model.encode(texts)  # mean pooling, as in training'''
    return {"max_tokens": positions, "pooling": "mean", "sentence_transformers": st.__version__}, usage


WRITERS: dict[str, Callable[[nn.Module, dict[str, Any], Path], tuple[dict, str]]] = {
    "onnx": write_onnx, "torchvision": write_torchvision, "timm": write_timm, "hf": write_hf,
    "sentence-transformers": write_sentence_transformers,
}
