"""BYOL on time series against what a time-series user would use instead, under one probe.

For each UCR/UEA set and seed: BYOL at the time-series defaults; the same encoder untrained (the
baseline a recipe must beat); the same encoder trained with labels (``objective=supervised``, the
upper bound); and MiniRocket features (Dempster et al. 2021: random convolutional kernels, the
label-free features time-series users know; aeon's implementation). All four are evaluated the way
``mmbyol eval`` evaluates a run: the linear probe with all labels, with ``--labels-per-class`` labels
per class (the mean over ``--label-draws`` draws, 10), and weighted kNN, on the set's own test split;
with ``data.window``, also over whole series, each by its windows' mean prediction.

    python benchmarks/timeseries.py [--sets JapaneseVowels OSULeaf GunPoint] [--seeds 0 1 2]
        [--methods byol untrained supervised minirocket] [--minirocket-kernels 10000] [--label-draws 10]
        [--out DIR] [key=value ...]

``key=value`` overrides change the BYOL (and supervised) runs, e.g. another pair to compare; those of
``data.*`` (a ``data.root``, windows) change MiniRocket's series too.
Finished runs in ``--out`` are evaluated again, not retrained. Prints a Markdown table (means over
seeds, then each method's margin over the untrained encoder of the same seed, ± its standard error
over the seeds) and writes ``DIR/results.json``.
MiniRocket needs aeon (``pip install aeon``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from compare_modalities import machine  # benchmarks/compare_modalities.py, its neighbour

from mmbyol import train
from mmbyol.config import load_config
from mmbyol.data import build_dataset
from mmbyol.evaluate import evaluate, load_eval_config, probe_metrics
from mmbyol.modalities.timeseries import prepare_series
from mmbyol.runtime import resolve_device, resolve_precision

DEV_SETS = ("JapaneseVowels", "OSULeaf", "GunPoint")
METHODS = ("byol", "untrained", "supervised", "minirocket")
METRICS = ("linear_acc", "linear_acc_{n}", "knn_acc")


def trained_run(out: Path, name: str, seed: int, overrides: list[str]) -> tuple[Path, float]:
    """The run directory of a training (trained now unless it already finished) and its minutes."""
    cfg = load_config(["modality=timeseries", f"seed={seed}", f"run.dir={out}", "trainer.progress=false",
                       "resume=auto", *overrides])
    started = time.perf_counter()
    if not (out / "encoder.safetensors").exists():
        train(cfg)
    return out, (time.perf_counter() - started) / 60


def minirocket(data: list[str], seed: int, eval_overrides: list[str], kernels: int = 10_000) -> dict:
    """MiniRocket features of the normalized series (as the encoders see them), then the probe;
    ``kernels``, aeon's ``n_kernels``, sets how many features (a multiple of 84)."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    cfg = load_config(["modality=timeseries", *data, *eval_overrides])
    train_set, test_set = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    cpu = torch.device("cpu")

    def series(dataset) -> torch.Tensor:
        return prepare_series(dataset.x, cpu, train_set.info).double().numpy()

    transform = MiniRocket(n_kernels=kernels, random_state=seed)
    train_x = torch.as_tensor(transform.fit_transform(series(train_set)), dtype=torch.float32)
    test_x = torch.as_tensor(transform.transform(series(test_set)), dtype=torch.float32)
    train_y, test_y = torch.tensor(train_set.labels), torch.tensor(test_set.labels)
    result = probe_metrics(train_x, train_y, test_x, test_y, cfg.eval, train_set.classes, train_set.origins,
                           test_set.origins)
    result["feature_dim"] = train_x.shape[1]
    return result


def margin_rows(records: list[dict], sets: list[str], method: str, keys: list[str]) -> list[str]:
    """``method`` − untrained, seed by seed, on each set and on the mean of the sets: the mean over
    seeds ± its standard error (the spread of the seeds' margins / √seeds), and how many seeds."""
    by_run = {(r["set"], r["seed"], r["method"]): r for r in records}
    margins: dict[str, dict[int, list[float]]] = {}  # set -> seed with both runs -> a margin per metric
    for name in sets:
        seeds = sorted(seed for (s, seed, m) in by_run if (s, m) == (name, method) and (s, seed, "untrained") in by_run)
        if seeds:
            margins[name] = {seed: [100 * (by_run[name, seed, method][k] - by_run[name, seed, "untrained"][k])
                                    for k in keys] for seed in seeds}
    rows = dict(margins)
    common = set.intersection(*map(set, margins.values())) if margins else set()
    if len(sets) > 1 and len(margins) == len(sets) and common:
        rows[f"mean of {len(sets)} sets"] = {
            seed: [statistics.mean(column) for column in zip(*(margins[name][seed] for name in sets))]
            for seed in sorted(common)}
    lines = []
    for name, per_seed in rows.items():
        columns = list(zip(*per_seed.values()))
        cells = [f"{statistics.mean(c):+.1f}" + (f" ± {statistics.stdev(c) / len(c) ** 0.5:.1f}" if len(c) > 1 else "")
                 for c in columns]
        lines.append(f"| {name} | {method} − untrained | " + " | ".join(cells) + f" | {len(per_seed)} |")
    return lines


def summary(records: list[dict], n: int) -> str:
    keys = [m.format(n=n) for m in METRICS]
    keys += [f"{k}_whole" for k in keys if all(f"{k}_whole" in r for r in records)]  # series cut into windows
    lines = ["| set | method | " + " | ".join(keys) + " | runs |", "|---|---|" + "---|" * (len(keys) + 1)]
    sets = list(dict.fromkeys(r["set"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    means: dict[str, list[list[float]]] = {m: [] for m in methods}
    for name in sets:
        for method in methods:
            rows = [r for r in records if r["set"] == name and r["method"] == method]
            if not rows:
                continue
            values = [[100 * r[k] for r in rows] for k in keys]
            means[method].append([statistics.mean(v) for v in values])
            cells = [f"{statistics.mean(v):.1f} ± {statistics.pstdev(v):.1f}" for v in values]
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + f" | {len(rows)} |")
    for method, per_set in means.items():
        if len(per_set) == len(sets) > 1:
            cells = [f"{statistics.mean(column):.1f}" for column in zip(*per_set)]
            lines.append(f"| mean of {len(sets)} sets | {method} | " + " | ".join(cells) + " | |")
    # the margin a recipe is judged by: each method against the untrained encoder of the same seed
    for method in methods:
        if method != "untrained":
            lines += margin_rows(records, sets, method, keys)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(DEV_SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--labels-per-class", type=int, default=5)
    # GunPoint's probe learns from 10 series: which 10 moves it by 20 points, so more draws than eval's 5
    parser.add_argument("--label-draws", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/timeseries-benchmark"))
    # as few features as an encoder gives, to tell MiniRocket's kind of feature from its number
    parser.add_argument("--minirocket-kernels", type=int, default=10_000)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    # key=value anywhere, also right after a list option such as --methods, which would take it
    argv = sys.argv[1:] if argv is None else argv
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    n = args.labels_per_class
    eval_overrides = [f"eval.labels_per_class={n}", f"eval.label_draws={args.label_draws}"]
    records, started = [], time.perf_counter()
    for name in args.sets:
        data = [f"data.set={name}"]
        for seed in args.seeds:
            for method in args.methods:
                began = time.perf_counter()
                if method == "minirocket":
                    same_data = [o for o in args.overrides if o.startswith("data.")]
                    result, minutes = minirocket([*data, *same_data], seed, eval_overrides,
                                                 args.minirocket_kernels), None
                else:
                    objective = ["objective=supervised"] if method == "supervised" else []
                    kind = "supervised" if method == "supervised" else "byol"
                    run_dir, minutes = trained_run(args.out / f"{name}-{kind}-{seed}", name, seed,
                                                   [*data, *objective, *args.overrides])
                    extra = ["init=random"] if method == "untrained" else []
                    result = evaluate(load_eval_config(run_dir, [*eval_overrides, *extra]), run_dir)
                record = {"set": name, "seed": seed, "method": method, **{k: result[k] for k in result
                          if k.startswith(("linear_acc", "knn_acc"))},
                          "train_minutes": None if minutes is None else round(minutes, 2),
                          "seconds": round(time.perf_counter() - began, 1)}
                records.append(record)
                print(json.dumps(record), flush=True)
    # the precision a run trains at moves its figures (docs/experiments.md), so the record keeps it
    run_cfg = load_config(["modality=timeseries", *args.overrides])
    precision = resolve_precision(run_cfg.trainer.precision, resolve_device(run_cfg.device))
    report = {"machine": {**machine(), "threads": torch.get_num_threads(), "precision": precision},
              "overrides": args.overrides, "labels_per_class": n, "label_draws": args.label_draws,
              "minutes": round((time.perf_counter() - started) / 60, 1), "records": records}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(summary(records, n))


if __name__ == "__main__":
    main()
