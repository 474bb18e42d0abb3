"""The GPU path in one check (docs/performance.md), a few minutes on one H100/H200:

    (1) precision  the same BYOL run (ResNet-18, 32×32, same seed, same data and views) in fp32 and
                   in bf16 autocast through the training loop: the first-step loss must agree within
                   1%, the mean of the last 10 steps within 5%;
    (2) throughput samples/s of the full training step (data loading, on-device augmentation,
                   forward/backward, LARS, EMA) and its ratio to the bare encoder forward+backward,
                   for ResNet-18 at 32×32, batch 512, and ResNet-50 at 224×224, batch 128
                   (bf16, channels-last; ``--compile`` adds torch.compile);
    (3) preset     a short run of ``preset=cifar10-resnet18`` (solo-learn's CIFAR-10 recipe) on the
                   synthetic images: it must train (the loss falls) at its own batch, heads and LARS.

    benchmarks/gpu_check.sh [--smoke] [--compile] [--out DIR]

Without CUDA, or with --smoke, everything runs at toy sizes on this machine's device: a smoke
test of the script, not a measurement. Images are the ``synthetic`` data set (random pixels),
so the check needs no data on the GPU machine. Writes DIR/gpu_check.json (default
benchmarks/results; runs/gpu_check-smoke in the smoke mode) and exits 1 when the precision or the
preset check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from compare_modalities import throughput

from mmbyol.config import load_config
from mmbyol.train import train

RESULTS = Path(__file__).resolve().parent / "results"
# BYOL's own heads and optimizer (the paper's) on the synthetic images; the image modality's
# defaults are sized for a small CNN on a CPU.
PAPER = ["data.name=synthetic", "model.hidden_dim=4096", "model.projection_dim=256", "optim.name=lars",
         "optim.lr=0.2", "optim.weight_decay=1.5e-6", "optim.warmup_epochs=0", "trainer.progress=false"]
FULL = {
    # 400 steps: at 100 the loss still falls fast, and fp32 with and without TF32 convolutions already
    # differ by 4.6% in the last steps' mean (docs/performance.md)
    "precision": {"steps": 400, "overrides": ["encoder.name=resnet18", "data.image_size=32", "data.batch_size=256"]},
    "throughput": {
        "resnet18-32px-b512": ["encoder.name=resnet18", "data.image_size=32", "data.batch_size=512"],
        "resnet50-224px-b128": ["encoder.name=resnet50", "data.image_size=224", "data.batch_size=128"],
    },
    "steps": 30,
    "preset": {"steps": 200, "overrides": ["preset=cifar10-resnet18", "data.name=synthetic"]},
}
SMOKE = {
    "precision": {"steps": 6, "overrides": ["encoder.name=small_cnn", "data.image_size=16", "data.batch_size=16",
                                            "model.hidden_dim=64", "model.projection_dim=32"]},
    "throughput": {
        "resnet18-16px-b8": ["encoder.name=resnet18", "data.image_size=16", "data.batch_size=8"],
        "resnet50-32px-b4": ["encoder.name=resnet50", "data.image_size=32", "data.batch_size=4"],
    },
    "steps": 2,
    "preset": {"steps": 6, "overrides": ["preset=cifar10-resnet18", "data.name=synthetic", "encoder.name=small_cnn",
                                         "data.image_size=16", "data.batch_size=16", "model.hidden_dim=64",
                                         "model.projection_dim=32"]},
}


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]  # not the monitor's line of step 0


def precision_check(plan: dict, device: str) -> dict:
    """fp32 against bf16: the same run, step for step."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            started = time.perf_counter()
            cfg = load_config([*PAPER, *plan["overrides"], f"trainer.max_steps={plan['steps']}", "trainer.log_every=1",
                               f"trainer.checkpoint_every={plan['steps']}", f"trainer.precision={precision}",
                               f"device={device}", f"run.dir={tmp}/{precision}"])
            run = train(cfg)
            runs[precision] = {"losses": losses(run), "seconds": round(time.perf_counter() - started, 1)}
    fp32, bf16 = runs["fp32"]["losses"], runs["bf16"]["losses"]
    tail = min(10, len(fp32))
    first = abs(bf16[0] - fp32[0]) / abs(fp32[0])
    last = abs(statistics.fmean(bf16[-tail:]) - statistics.fmean(fp32[-tail:])) / abs(statistics.fmean(fp32[-tail:]))
    return {"steps": plan["steps"], "config": plan["overrides"], "first_step_rel_diff": round(first, 5),
            f"last_{tail}_mean_rel_diff": round(last, 5), "passed": first < 0.01 and last < 0.05,
            "fp32": runs["fp32"], "bf16": runs["bf16"]}


def preset_check(plan: dict, device: str) -> dict:
    """The preset's own recipe for a few hundred steps: the loss must fall from the first steps to the last."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        cfg = load_config([*plan["overrides"], "trainer.progress=false", f"trainer.max_steps={plan['steps']}",
                           "trainer.log_every=1", f"trainer.checkpoint_every={plan['steps']}",
                           "trainer.monitor_every=0", f"device={device}", f"run.dir={tmp}/preset"])
        values = losses(train(cfg))
        seconds = time.perf_counter() - started
    tail = min(10, len(values) // 2)
    first, last = statistics.fmean(values[:tail]), statistics.fmean(values[-tail:])
    return {"config": plan["overrides"], "steps": plan["steps"], "batch_size": cfg.data.batch_size,
            "steps_averaged": tail, "first_steps_loss": round(first, 4), "last_steps_loss": round(last, 4),
            "samples_per_s": round(plan["steps"] * cfg.data.batch_size / seconds, 1), "seconds": round(seconds, 1),
            "passed": math.isfinite(last) and last < first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy sizes (implied without CUDA)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the model")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results, or runs/gpu_check-smoke for --smoke")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    smoke = args.smoke or not cuda
    plan = SMOKE if smoke else FULL
    out = args.out or (Path("runs/gpu_check-smoke") if smoke else RESULTS)  # smoke figures stay out of results/
    device = "cuda" if cuda else "cpu"
    card = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print(f"gpu_check on {card} ({device}{', smoke sizes' if smoke else ''}), torch {torch.__version__}", flush=True)
    started = time.perf_counter()

    precision = precision_check(plan["precision"], device)
    print(f"(1) precision: first-step loss fp32 {precision['fp32']['losses'][0]:.4f}, bf16 "
          f"{precision['bf16']['losses'][0]:.4f} (rel. diff {precision['first_step_rel_diff']:.2%}); last steps' mean "
          f"rel. diff {precision[next(k for k in precision if k.startswith('last_'))]:.2%}: "
          f"{'PASS' if precision['passed'] else 'FAIL'}", flush=True)

    rows = []
    for name, overrides in plan["throughput"].items():
        extra = [f"device={device}", "trainer.precision=auto", f"trainer.compile={str(args.compile).lower()}"]
        row = throughput("image", [*PAPER, *overrides, *extra], plan["steps"], warmup=1 if smoke else 5)
        row["case"] = name
        rows.append(row)
        print(f"(2) {name:<22} full step {row['full_step_samples_per_s']:>9.1f} samples/s, encoder fwd+bwd "
              f"{row['encoder_fwd_bwd_samples_per_s']:>9.1f} samples/s, ratio {row['full_over_encoder']:.3f} "
              f"({row['precision']})", flush=True)

    preset = preset_check(plan["preset"], device)
    print(f"(3) {' '.join(preset['config'])}: loss {preset['first_steps_loss']:.4f} → {preset['last_steps_loss']:.4f} "
          f"in {preset['steps']} steps, {preset['samples_per_s']:.0f} samples/s with start-up: "
          f"{'PASS' if preset['passed'] else 'FAIL'}", flush=True)

    record = {"card": card, "device": device, "smoke": smoke, "compile": args.compile, "torch": torch.__version__,
              "precision": precision, "throughput": rows, "preset": preset,
              "seconds": round(time.perf_counter() - started, 1),
              "command": "benchmarks/gpu_check.sh " + " ".join(sys.argv[1:])}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{record['seconds']:.0f} s; wrote {out / 'gpu_check.json'}")
    return 0 if precision["passed"] and preset["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
