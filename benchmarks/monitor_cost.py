"""What the monitor costs a training run, measured side by side in one process:

    off   `trainer.monitor_every=0`;
    on    the monitor as a default run has it: a measurement every tenth of the *default* run's
          steps (so a shorter benchmark run keeps a default run's density of measurements).

Each round trains both for the same steps into fresh run directories, alternating which goes
first; the machine's drift hits both alike. Prints each round's wall times, the monitor's own
seconds (its share of the run, which wall times are too noisy to resolve when it is small), and
writes benchmarks/results/monitor_cost.json. Never asserts timings.

    python benchmarks/monitor_cost.py [--modality audio] [--steps 720] [--rounds 2] [--out DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

from mmbyol.config import load_config
from mmbyol.data import build_dataset
from mmbyol.monitor import MEASUREMENTS_PER_RUN
from mmbyol.runtime import resolve_device, resolve_precision
from mmbyol.train import train

RESULTS = Path(__file__).resolve().parent / "results"


def monitor_seconds(run_dir: Path) -> float:
    """The monitor's own time in a run: the sum of its measurements' ``monitor_seconds``."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sum(r.get("monitor_seconds", 0.0) for r in records)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", default="audio")
    parser.add_argument("--steps", type=int, default=720)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for monitor_cost.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    base = load_config([f"modality={args.modality}", *args.overrides])
    default_steps = base.trainer.max_steps or base.trainer.epochs * (
        len(build_dataset(base, "train")) // base.data.batch_size)
    every = max(1, round(default_steps / MEASUREMENTS_PER_RUN))
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            order = ["off", "on"] if round_ % 2 == 0 else ["on", "off"]
            times: dict[str, float] = {}
            for which in order:
                cfg = load_config([f"modality={args.modality}", *args.overrides, f"trainer.max_steps={args.steps}",
                                   f"trainer.monitor_every={every if which == 'on' else 0}",
                                   "trainer.progress=false", f"run.dir={scratch}/{round_}-{which}"])
                started = time.perf_counter()
                run_dir = train(cfg)
                times[which] = time.perf_counter() - started
                if which == "on":
                    times["monitor"] = monitor_seconds(run_dir)
            rows.append(times)
            print(f"round {round_}: off {times['off']:.1f} s, on {times['on']:.1f} s "
                  f"({100 * (times['on'] / times['off'] - 1):+.1f}%), the monitor itself {times['monitor']:.1f} s "
                  f"({100 * times['monitor'] / times['on']:.1f}% of the run)", flush=True)
    device = resolve_device(base.device)
    result = {
        "modality": args.modality, "steps": args.steps, "monitor_every": every, "default_steps": default_steps,
        "monitor_items": base.trainer.monitor_items, "device": str(device),
        "precision": resolve_precision(base.trainer.precision, device), "machine": platform.processor() or "",
        "rounds": rows,
        "median_overhead_wall": statistics.median(r["on"] / r["off"] - 1 for r in rows),
        "median_monitor_share": statistics.median(r["monitor"] / r["on"] for r in rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "monitor_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"median: wall {100 * result['median_overhead_wall']:+.1f}%, the monitor's own share "
          f"{100 * result['median_monitor_share']:.1f}% (a measurement every {every} steps, "
          f"{base.trainer.monitor_items} items)")
    return result


if __name__ == "__main__":
    main()
