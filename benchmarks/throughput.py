"""Samples per second of one BYOL step, measured side by side in one run (DESIGN §7).

    (a) full    the mmbyol step: data loading, on-device batched augmentation, forward/backward,
                optimizer, EMA update; the training loop's own code;
    (b) bare    the same forward/backward/optimizer/EMA on views augmented beforehand: the limit
                (a) cannot beat;
    (c) pil     the same model step fed by a per-sample torchvision/PIL pipeline in DataLoader
                workers, as most BYOL code does.

    python benchmarks/throughput.py [--steps 30] [--rounds 2] [--workers 2] [--device auto]

Prints a table and writes benchmarks/results/throughput.json. Never asserts timings.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset

from mmbyol.augment import build_views
from mmbyol.config import load_config, to_container
from mmbyol.modalities.base import build_dataset, build_encoder, get_modality
from mmbyol.optim import build_optimizer
from mmbyol.train import autocast_context, build_model, make_loader, resolve_device, train_step

RESULTS = Path(__file__).resolve().parent / "results"


class PassThrough(torch.nn.Module):
    """Stands in for the augmentations when the views are already made."""

    def forward(self, views, generator):
        return views


class PILPairs(Dataset):
    """Per-sample PIL augmentation: the official BYOL image pair with torchvision transforms."""

    def __init__(self, images: torch.Tensor, size: int):
        self.images = images

        def pipeline(blur_p: float, solarize_p: float):
            return T.Compose([
                T.RandomResizedCrop(size, scale=(0.08, 1.0)),
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 2.0))], p=blur_p),
                T.RandomSolarize(0.5, p=solarize_p),
                T.ToTensor(),
            ])

        self.view1, self.view2 = pipeline(1.0, 0.0), pipeline(0.1, 0.2)
        self.to_pil = T.ToPILImage()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.to_pil(self.images[index])
        return self.view1(image), self.view2(image)


def timed(batches, step, steps: int, warmup: int, batch_size: int) -> float:
    """Samples per second over ``steps`` steps after ``warmup`` untimed ones."""
    iterator = iter(batches)
    for _ in range(warmup):
        step(next(iterator))
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the warm-up's queued kernels are not timed
    start = time.perf_counter()
    for _ in range(steps):
        step(next(iterator))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def step_parts(cfg) -> SimpleNamespace:
    """What a training step needs (device, modality, data set, encoder, model, views, optimizer,
    generator, autocast), built as the training loop builds it."""
    device = resolve_device(cfg.device)
    modality = get_modality(cfg.modality)
    dataset = build_dataset(cfg, "train")
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.modality, cfg.encoder, dataset.info)
    model = build_model(cfg, encoder).to(device)
    if modality.channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = to_container(cfg.augment)
    views = build_views(cfg.modality, augment["view1"], augment["view2"]).to(device)
    optimizer = build_optimizer(cfg.optim.name, model, cfg.optim.lr, cfg.optim.weight_decay)
    if cfg.trainer.compile:  # as the training loop does; the bare encoder too, for a like-for-like ratio
        model, encoder = torch.compile(model), torch.compile(encoder)
    return SimpleNamespace(device=device, modality=modality, dataset=dataset, encoder=encoder, model=model, views=views,
                           optimizer=optimizer, generator=torch.Generator(device=device).manual_seed(0),
                           autocast=autocast_context(cfg, device))


def full_step_rate(parts: SimpleNamespace, cfg, steps: int, warmup: int, lr: float) -> float:
    """Samples/s of the full step: the training loop's loader, on-device augmentation, BYOL step, EMA."""
    def step(batch):
        inputs, _labels, _skipped = batch
        prepared = parts.modality.prepare(inputs, parts.device, parts.dataset.info)
        train_step(parts.model, parts.views, prepared, parts.generator, parts.optimizer, lr, 0.99, parts.autocast)

    loader = (b for epoch in itertools.count() for b in make_loader(parts.dataset, parts.modality, cfg, epoch, 0, parts.device))
    return timed(loader, step, steps, warmup, cfg.data.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="repeat (a), (b), (c) in turn; report the median")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the PIL pipeline")
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. encoder.name=resnet18")
    args = parser.parse_args()

    cfg = load_config(["model.hidden_dim=1024", "model.projection_dim=128", "data.batch_size=256",
                       f"device={args.device}", *args.overrides])
    parts = step_parts(cfg)
    device, modality, dataset, model = parts.device, parts.modality, parts.dataset, parts.model
    views, optimizer, generator, autocast = parts.views, parts.optimizer, parts.generator, parts.autocast
    batch_size = cfg.data.batch_size
    needed = args.warmup + args.steps

    def full():
        return full_step_rate(parts, cfg, args.steps, args.warmup, lr=0.1)

    # (b) views made beforehand, on the device, a different pair for every step.
    pre_made = []
    with torch.no_grad():
        for inputs, _labels, _skipped in make_loader(dataset, modality, cfg, 0, 0, device):
            pre_made.append(views(modality.prepare(inputs, device, dataset.info), generator))
            if len(pre_made) == needed:
                break
    passthrough = PassThrough()

    def bare():
        def step(pair):
            train_step(model, passthrough, pair, generator, optimizer, 0.1, 0.99, autocast)

        return timed(pre_made, step, args.steps, args.warmup, batch_size)

    pil_set = PILPairs(dataset.images, dataset.info["size"])  # Fashion-MNIST / CIFAR-10: uint8 tensors in memory

    def pil():
        loader = DataLoader(pil_set, batch_size=batch_size, shuffle=True, num_workers=args.workers, drop_last=True,
                            persistent_workers=False, pin_memory=device.type == "cuda")

        def step(pair):
            v1, v2 = (v.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last) for v in pair)
            train_step(model, passthrough, (v1, v2), generator, optimizer, 0.1, 0.99, autocast)

        return timed(loader, step, args.steps, args.warmup, batch_size)

    runs = {"full": [], "bare": [], "pil": []}
    for _ in range(args.rounds):
        for name, measure in (("full", full), ("bare", bare), ("pil", pil)):
            runs[name].append(measure())
    median = {name: statistics.median(values) for name, values in runs.items()}
    result = {
        "samples_per_s": median,
        "all_rounds": runs,
        "full_over_bare": median["full"] / median["bare"],
        "full_over_pil": median["full"] / median["pil"],
        "config": {"encoder": cfg.encoder.name, "batch_size": batch_size, "hidden_dim": cfg.model.hidden_dim,
                   "projection_dim": cfg.model.projection_dim, "data": cfg.data.name, "steps": args.steps,
                   "rounds": args.rounds, "pil_workers": args.workers},
        "machine": {"device": str(device), "cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
    }
    print(f"BYOL step throughput, {cfg.encoder.name}, batch {batch_size}, heads "
          f"{cfg.model.hidden_dim}/{cfg.model.projection_dim}, on {device} ({torch.get_num_threads()} threads)")
    print(f"  (a) full mmbyol step, data + augmentation  {median['full']:8.0f} samples/s")
    print(f"  (b) bare step on pre-made views            {median['bare']:8.0f} samples/s")
    print(f"  (c) per-sample PIL pipeline, {args.workers} workers     {median['pil']:8.0f} samples/s")
    print(f"  (a)/(b) = {result['full_over_bare']:.3f}    (a)/(c) = {result['full_over_pil']:.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
