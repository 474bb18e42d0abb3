"""Samples per second of one training step, measured side by side in one run, for each modality:

    (a) full  the training loop's step: data loading, prepare, on-device batched augmentation,
              forward/backward, optimizer, EMA update;
    (b) bare  the same model step (forward/backward, optimizer, EMA) on views made beforehand:
              the limit (a) cannot beat; (a)/(b) is what the data path and augmentation cost;
    (c) pil   image only: the same model step fed by a per-sample torchvision/PIL pipeline in
              DataLoader workers, as most BYOL code does.

    python benchmarks/throughput.py [--modalities image audio text] [--steps 30] [--rounds 2]
                                    [--workers 2] [--device auto] [--profile N] [key=value ...]

``--profile N`` adds where the bare step's time goes: its N most costly operators by
``torch.profiler``, each with its share.

Every part is built by ``mmbyol.train.build_training``, as a training run builds it (each
modality's defaults, the batch-scaled learning rate and its schedule), and the overrides refine
every modality's config. Prints a table and writes benchmarks/results/throughput.json. Never
asserts timings.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset

from mmbyol.config import load_config
from mmbyol.data import build_dataset, make_loader, prepare_views
from mmbyol.runtime import resolve_device, resolve_precision
from mmbyol.train import Training, build_training, model_step, train_step

RESULTS = Path(__file__).resolve().parent / "results"


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


def training_parts(cfg) -> Training:
    """The parts of a training step for ``cfg``, as ``mmbyol train`` builds them."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    dataset = build_dataset(cfg, "train")
    return build_training(cfg, device, dataset, dataset.info)


def batches(t: Training):
    """The training loop's batches, epoch after epoch."""
    return (b for epoch in itertools.count() for b in make_loader(t.dataset, t.modality, t.cfg, epoch, 0, t.device))


def full_step_rate(t: Training, steps: int, warmup: int) -> float:
    """Samples/s of the full step: the loop's loader, ``prepare``, the views, the model step."""
    counter = itertools.count()

    def step(batch):
        inputs, _labels, _skipped = batch
        x1, x2 = prepare_views(t.modality, inputs, t.device, t.info)
        k = next(counter)
        train_step(t, x1, x2, t.lr(k), t.tau(k))

    return timed(batches(t), step, steps, warmup, t.cfg.data.batch_size)


def made_views(t: Training, count: int) -> list:
    """``count`` pairs of views (with their local views, if any) made beforehand on the device, as
    the loop would make them."""
    pairs = []
    with torch.no_grad():
        for inputs, _labels, _skipped in itertools.islice(batches(t), count):
            x1, x2 = prepare_views(t.modality, inputs, t.device, t.info)
            pairs.append((*t.views(x1, x2, t.generator), t.views.make_local(x1, t.generator)))
    return pairs


def bare_model_step(t: Training):
    """The model step on a pair of views, at the schedule's lr and τ of the steps counted so far."""
    counter = itertools.count()

    def step(views):
        view1, view2, local_views = views
        k = next(counter)
        model_step(t.model, t.optimizer, view1, view2, t.lr(k), t.tau(k), t.autocast, local_views=local_views)

    return step


def bare_step_rate(t: Training, steps: int, warmup: int) -> float:
    """Samples/s of the model step alone, on views made beforehand on the device (a new pair each step)."""
    return timed(made_views(t, steps + warmup), bare_model_step(t), steps, warmup, t.cfg.data.batch_size)


def step_profile(t: Training, steps: int, warmup: int, top: int) -> list[dict]:
    """Where the model step's time goes: ``torch.profiler`` over ``steps`` bare steps, the ``top``
    operators by their own time (the device's on CUDA, else the CPU's), each with its share."""
    from torch.profiler import ProfilerActivity, profile

    pairs, step = made_views(t, steps + warmup), bare_model_step(t)
    for pair in pairs[:warmup]:
        step(pair)
    on_device = t.device.type == "cuda"
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # not its "no GPU" error on a CPU-only machine
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_device else [])],
                 acc_events=True) as profiler:
        for pair in pairs[warmup:]:
            step(pair)
        if on_device:
            torch.cuda.synchronize()
    own = "self_device_time_total" if on_device else "self_cpu_time_total"
    events = [e for e in profiler.key_averages() if getattr(e, own) > 0]
    total = sum(getattr(e, own) for e in events)
    return [{"operator": e.key, "share": getattr(e, own) / total, "calls_per_step": e.count / steps}
            for e in sorted(events, key=lambda e: -getattr(e, own))[:top]]


def pil_step_rate(t: Training, steps: int, warmup: int, workers: int) -> float:
    """Samples/s of the model step fed by per-sample PIL augmentation in ``workers`` processes."""
    loader = DataLoader(PILPairs(t.dataset.images, t.info["size"]), batch_size=t.cfg.data.batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, pin_memory=t.device.type == "cuda")
    counter = itertools.count()

    def step(pair):
        v1, v2 = (v.to(t.device, non_blocking=True).contiguous(memory_format=torch.channels_last) for v in pair)
        k = next(counter)
        model_step(t.model, t.optimizer, v1, v2, t.lr(k), t.tau(k), t.autocast)

    return timed(loader, step, steps, warmup, t.cfg.data.batch_size)


def measure(modality: str, overrides: list[str], args) -> dict:
    cfg = load_config([f"modality={modality}", "trainer.progress=false", f"device={args.device}", *overrides])
    t = training_parts(cfg)
    parts = {"full": lambda: full_step_rate(t, args.steps, args.warmup),
             "bare": lambda: bare_step_rate(t, args.steps, args.warmup)}
    if hasattr(t.dataset, "images"):  # images held as one uint8 tensor: the PIL pipeline can read them
        parts["pil"] = lambda: pil_step_rate(t, args.steps, args.warmup, args.workers)
    runs = {name: [] for name in parts}
    for _ in range(args.rounds):  # in turn, so a machine's drift touches every part alike
        for name, rate in parts.items():
            runs[name].append(rate())
    median = {name: statistics.median(values) for name, values in runs.items()}
    result = {"samples_per_s": median, "all_rounds": runs, "full_over_bare": median["full"] / median["bare"],
              "config": {"encoder": cfg.encoder.name, "batch_size": cfg.data.batch_size, "data": cfg.data.name,
                         "hidden_dim": cfg.model.hidden_dim, "projection_dim": cfg.model.projection_dim,
                         "precision": resolve_precision(cfg.trainer.precision, t.device), "steps": args.steps,
                         "rounds": args.rounds, "overrides": overrides}}
    if "pil" in median:
        result["full_over_pil"] = median["full"] / median["pil"]
        result["config"]["pil_workers"] = args.workers
    print(f"{modality}: {cfg.encoder.name}, batch {cfg.data.batch_size}, {result['config']['precision']}, "
          f"on {t.device} ({torch.get_num_threads()} threads)")
    print(f"  (a) full step, data + augmentation    {median['full']:8.0f} samples/s")
    print(f"  (b) bare step on pre-made views       {median['bare']:8.0f} samples/s   (a)/(b) = "
          f"{result['full_over_bare']:.3f}")
    if "pil" in median:
        print(f"  (c) per-sample PIL pipeline, {args.workers} workers {median['pil']:8.0f} samples/s   (a)/(c) = "
              f"{result['full_over_pil']:.2f}")
    if args.profile:
        result["profile"] = step_profile(t, args.steps, args.warmup, args.profile)
        print(f"  the bare step's {'device' if t.device.type == 'cuda' else 'CPU'} time by operator (torch.profiler, "
              f"{args.steps} steps):")
        for row in result["profile"]:
            print(f"    {100 * row['share']:5.1f}%  {row['operator']} ({row['calls_per_step']:g} a step)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modalities", nargs="+", default=["image", "audio", "text"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="repeat the parts in turn; report the median")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the PIL pipeline")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile the bare step and print its N most costly operators")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="config overrides for every modality, e.g. data.batch_size=128")
    args = parser.parse_args(argv)

    results = {modality: measure(modality, args.overrides, args) for modality in args.modalities}
    device = resolve_device(args.device)
    record = {"modalities": results,
              "machine": {"device": str(device), "cpu_threads": torch.get_num_threads(),
                          "platform": platform.platform(), "processor": platform.processor(),
                          "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
              "command": "python benchmarks/throughput.py " + " ".join(argv if argv is not None else [])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    import sys

    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
