"""Why a small probe fits on one CPU thread: the linear probe's L-BFGS, timed side by side on
one thread and on all of them, for feature matrices from a smoke test's size to an evaluation's.

Each size fits the probe (L2 chosen by cross-validation, then the final fit, as ``mmbyol eval``
does) on random features with a class signal, alternating which thread count goes first, and
checks that both predict the same classes. Prints the median seconds of each and writes
benchmarks/results/probe_threads.json. ``mmbyol.evaluate.SMALL_PROBE`` is the size below which
evaluation uses one thread. Never asserts timings.

    python benchmarks/probe_threads.py [--rounds 3] [--max-rows N] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch

evaluate = importlib.import_module("mmbyol.evaluate")  # the module: mmbyol.evaluate is also a function
RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [(256, 128, 10), (1024, 512, 10), (2048, 1024, 5), (7000, 1024, 5)]  # rows, features, classes


def features(rows: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    y = torch.randint(classes, (rows,), generator=generator)
    x = centres[y] + 3 * torch.randn(rows, dim, generator=generator)
    test = centres[torch.randint(classes, (rows // 4,), generator=generator)] + 3 * torch.randn(rows // 4, dim,
                                                                                            generator=generator)
    return x, y, test


def timed(threads: int, x, y, test, classes) -> tuple[float, torch.Tensor]:
    before, limit = torch.get_num_threads(), evaluate.SMALL_PROBE
    torch.set_num_threads(threads)
    evaluate.SMALL_PROBE = 0  # time the fit on the threads asked for, not those eval would pick
    try:
        started = time.perf_counter()
        predictions, _ = evaluate.probe_predictions(x, y, test, classes)
        return time.perf_counter() - started, predictions
    finally:
        evaluate.SMALL_PROBE = limit
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-rows", type=int, default=None, help="only the sizes of at most this many rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cores = torch.get_num_threads()
    rows = []
    print(f"{platform.processor() or platform.machine()}, {cores} threads; eval uses one thread below "
          f"{evaluate.SMALL_PROBE:,} feature values")
    print(f"{'rows × features':>18} {'1 thread, s':>12} {f'{cores} threads, s':>13} {'same predictions':>17}")
    for n, d, k in [size for size in SIZES if args.max_rows is None or size[0] <= args.max_rows]:
        x, y, test = features(n, d, k, seed=0)
        times: dict[int, list[float]] = {1: [], cores: []}
        agree = True
        for round_ in range(args.rounds):
            order = (1, cores) if round_ % 2 == 0 else (cores, 1)
            predictions = {}
            for threads in order:
                seconds, predictions[threads] = timed(threads, x, y, test, k)
                times[threads].append(seconds)
            agree &= bool((predictions[1] == predictions[cores]).float().mean() > 0.99)
        row = {"rows": n, "features": d, "classes": k, "one_thread_s": round(statistics.median(times[1]), 3),
               "all_threads_s": round(statistics.median(times[cores]), 3), "threads": cores,
               "same_predictions": agree, "one_thread_in_eval": n * d < evaluate.SMALL_PROBE}
        rows.append(row)
        print(f"{f'{n} × {d}':>18} {row['one_thread_s']:>12.2f} {row['all_threads_s']:>13.2f} {str(agree):>17}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe_threads.json").write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                                              "rounds": args.rounds, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
