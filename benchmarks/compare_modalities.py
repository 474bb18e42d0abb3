"""Compare modalities and reproduce the BYOL paper's claims, on one machine, in one run.

    python benchmarks/compare_modalities.py --profile quick          # a CPU: short runs, under an hour
    python benchmarks/compare_modalities.py --profile full           # a GPU: full data, default epochs
    python benchmarks/compare_modalities.py --profile quick --modalities image \\
        --plugins mmbyol_cutout --augment cutout                      # what is my augmentation worth?
    python benchmarks/compare_modalities.py --profile full --parts table \\
        --methods byol untrained --out benchmarks/results/full-claim  # the paper's claim at full budget
    python benchmarks/compare_modalities.py --modalities timeseries --parts augment \\
        --augment magnitude_warp data.set=GunPoint                     # KEY=VALUE: every run's config

Parts (``--parts``, all by default), for each modality (image: Fashion-MNIST, audio: spoken
digits, text: WordNet glosses, time series: JapaneseVowels, or what ``KEY=VALUE`` overrides
choose; a plugin's modality with ``--plugins``):

    table       BYOL, the same encoder untrained, trained supervised (the upper bound), and the
                InfoNCE objective with in-batch negatives, at the same budget; one row per method
                (``--methods`` picks them), mean ± spread over the profile's seeds (spread: half
                the range)
    batch       BYOL and InfoNCE at batch sizes 32, 64, 128, 256, the same epochs (the same steps
                where the budget is in steps, as time series' is), lr scaled linearly (paper Fig. 3a)
    augment     the default pair, the pair with each augmentation removed in turn, crop only (where
                the pair has a crop), and the pair plus each ``--augment`` (plugins included):
                accuracy delta (paper Fig. 3b)
    throughput  samples/s of the full training step (data, augmentation, BYOL step) and of the
                bare encoder forward + backward on a prepared batch, and their ratio

Writes ``benchmarks/results/compare_modalities.json`` (every record with its resolved config),
``compare_modalities.md`` (the report; every figure names its records) and two PNG plots. Runs
go to ``runs/compare-<profile>/``; ``--resume`` reuses the records of an interrupted run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from throughput import batches, full_step_rate, timed, training_parts  # benchmarks/throughput.py, its neighbour

from mmbyol.augment import augmentation_names
from mmbyol.checkpoint import unwrap
from mmbyol.config import load_config, to_container
from mmbyol.data import prepare_views
from mmbyol.errors import MMBYOLError
from mmbyol.evaluate import evaluate
from mmbyol.registry import MODALITIES, import_plugins
from mmbyol.runtime import resolve_precision
from mmbyol.train import train

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("linear_acc", "linear_acc_10", "knn_acc")
METRIC_NAMES = {"linear_acc": "linear", "linear_acc_10": "linear, 10 labels/class", "knn_acc": "kNN"}
BUILT_IN = ("image", "audio", "text", "timeseries")  # compared by default
# each pair's crop (a modality without one here: the generic crop_resize, if its pair has it)
CROP = {"image": "random_resized_crop", "audio": "random_resize_crop", "text": "span_crop"}
DATA = {"image": "Fashion-MNIST", "audio": "spoken digits (noisy, held-out accents)", "text": "WordNet glosses"}

# Per modality: overrides that set the budget of every run of the profile (the modality's own
# defaults otherwise; warm-up shortened with the epochs). The quick budgets keep each run to
# seconds of training on a CPU (docs/experiments.md has the profile's times). At that budget steps
# are what BYOL lacks most, so image runs at batch 64 (4× the steps of 256). The 10-label probe is
# drawn twice per run, not 5 times, to keep evaluation short: with two seeds a table row is the
# mean of 4 probes.
# ``table``: overrides added to the modality table's runs only (then the table does not share
# runs with the sweeps, which are relative comparisons and keep the smaller budget). Text trains
# on its whole corpus there: the 400-per-class subset starves BYOL more than the few steps do
# (docs/experiments.md, "Steps").
# Audio trains on the spoken digits' fixed noise (``data.noise_per_view=false``), so that BYOL,
# InfoNCE, the supervised baseline and every augmentation variant see one and the same training set.
TABLE_METHODS = ("byol", "untrained", "supervised", "infonce")  # the modality table's rows, in order
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "seeds": (0, 1),
        "batch_sizes": (32, 64, 128, 256),
        "image": ["data.limit=10000", "data.batch_size=64", "trainer.epochs=2", "optim.warmup_epochs=0.2",
                  "eval.test_limit=2000", "eval.label_draws=2"],
        "audio": ["data.noise_per_view=false", "data.limit=5000", "trainer.epochs=1", "optim.warmup_epochs=0.2",
                  "eval.test_limit=1000", "eval.label_draws=2"],
        "text": ["data.per_class=400", "trainer.epochs=2", "optim.warmup_epochs=0.2", "eval.test_limit=1000",
                 "eval.label_draws=2"],
        "timeseries": [],  # its defaults: 2,000 steps, under half a minute on JapaneseVowels
        "table": {"text": ["data.per_class=2000", "trainer.epochs=1", "optim.warmup_epochs=0.1"]},
    },
    "smoke": {  # seconds: for the test suite, not for figures
        "seeds": (0, 1),
        "batch_sizes": (32, 64),
        "image": ["data.limit=256", "data.batch_size=64", "data.image_size=32", "trainer.max_steps=4",
                  "model.hidden_dim=64", "model.projection_dim=32", "optim.warmup_epochs=0", "eval.test_limit=200",
                  "eval.label_draws=1", "eval.l2_grid=[0.01]", "device=cpu",
                  "augment.view1=[{name: random_resized_crop}, {name: horizontal_flip}]",
                  "augment.view2=[{name: random_resized_crop}, {name: horizontal_flip}]"],
        "audio": [], "text": [],
        "table": {"image": ["trainer.max_steps=6"]},
    },
    "full": {
        "seeds": (0, 1, 2),
        "batch_sizes": (32, 64, 128, 256),
        "image": [],
        "audio": ["data.noise_per_view=false"],
        "text": [],
        "timeseries": [],
    },
}


@dataclass
class Job:
    """One training run (or, for ``untrained``, one evaluation of a fresh encoder) and its record."""

    modality: str
    method: str  # byol | infonce | supervised | untrained
    seed: int
    batch_size: int
    default_batch: bool  # the modality's own batch size (the table and augmentation parts use it)
    variant: str = "default"  # the augmentation variant
    overrides: list[str] = field(default_factory=list)  # the variant's augmentation lists, or the table's budget
    budget: str = ""  # "table" when the profile gives the table its own budget (then part of the id)
    parts: list[str] = field(default_factory=list)  # the parts whose figures this run feeds

    @property
    def id(self) -> str:
        budget = f"@{self.budget}" if self.budget else ""  # a folder beside the variant's run, not inside it
        return f"{self.modality}/{self.method}/s{self.seed}/b{self.batch_size}/{self.variant.replace(' ', '_')}{budget}"

    @property
    def key(self) -> str:
        return " ".join([self.id, *self.overrides])


def pipeline_variants(modality: str, cfg, extra: list[dict]) -> dict[str, dict[str, list]]:
    """Augmentation variants: name → {view1, view2} lists."""
    augment = to_container(cfg.augment)
    names = list(dict.fromkeys(a["name"] for a in augment["view1"] + augment["view2"]))
    variants = {"default": augment}
    for name in names:
        variants[f"-{name}"] = {v: [a for a in augment[v] if a["name"] != name] for v in ("view1", "view2")}
    crop = CROP.get(modality, "crop_resize")
    if crop in names:
        variants["crop only"] = {v: [a for a in augment[v] if a["name"] == crop] for v in ("view1", "view2")}
    for spec in extra:
        variants[f"+{spec['name']}"] = {v: [*augment[v], dict(spec)] for v in ("view1", "view2")}
    return variants


def augment_overrides(pair: dict[str, list]) -> list[str]:
    return [f"augment.{v}={json.dumps(pair[v])}" for v in ("view1", "view2")]


def run_job(job: Job, profile: list[str], work: Path) -> dict[str, Any]:
    """Train (unless untrained) and evaluate; the record with the resolved config."""
    run_dir = work / job.id
    overrides = [f"modality={job.modality}", f"seed={job.seed}", "trainer.progress=false", f"run.dir={run_dir}",
                 "eval.labels_per_class=10", *profile, f"data.batch_size={job.batch_size}", *job.overrides]
    if job.method in ("byol", "infonce", "supervised"):
        overrides.append(f"objective={job.method}")
    cfg = load_config(overrides)
    started = time.perf_counter()
    train_seconds, samples_per_s = 0.0, None
    if job.method == "untrained":
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.eval.init = "random"
    else:
        if (run_dir / "checkpoints").exists():  # left by an interrupted benchmark: start it over
            import shutil

            shutil.rmtree(run_dir)
        train(cfg)
        train_seconds = time.perf_counter() - started
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        samples_per_s = statistics.median(line["samples_per_s"] for line in lines[1:] or lines)
    result = evaluate(cfg, run_dir)
    return {
        "id": job.id, "modality": job.modality, "method": job.method, "seed": job.seed, "variant": job.variant,
        "parts": job.parts,
        "batch_size": cfg.data.batch_size, "default_batch": job.default_batch, **{m: result.get(m) for m in METRICS},
        "train_seconds": round(train_seconds, 1), "samples_per_s": samples_per_s and round(samples_per_s, 1),
        "eval_seconds": result["seconds"], "n_train": result["n_train"], "n_test": result["n_test"],
        "steps": result["step"], "config": to_container(cfg),
    }


def plan(modalities: list[str], parts: list[str], profile: dict, extra: dict[str, list[dict]],
         methods: tuple[str, ...] = TABLE_METHODS) -> list[Job]:
    """Every job of the chosen parts, each once (parts share runs with equal settings); the
    modality table has a row for each of ``methods``."""
    jobs: dict[str, Job] = {}

    def add(job: Job, part: str) -> None:
        jobs.setdefault(job.key, job).parts.append(part)

    for modality in modalities:
        cfg = load_config([f"modality={modality}", *profile[modality]])
        default = cfg.data.batch_size
        if "table" in parts:
            own = profile.get("table", {}).get(modality, [])  # the table's own budget, if the profile gives one
            for seed in profile["seeds"]:
                for method in methods:
                    job = Job(modality, method, seed, default, True, overrides=own, budget="table" if own else "")
                    add(job, "table")
        if "batch" in parts:
            for method in ("byol", "infonce"):
                for batch in profile["batch_sizes"]:
                    add(Job(modality, method, 0, batch, batch == default), "batch")
        if "augment" in parts:
            for variant, pair in pipeline_variants(modality, cfg, extra.get(modality, [])).items():
                overrides = [] if variant == "default" else augment_overrides(pair)
                add(Job(modality, "byol", 0, default, True, variant, overrides), "augment")
    return list(jobs.values())


# ---------------------------------------------------------------------------- throughput


def throughput(modality: str, profile: list[str], steps: int, warmup: int = 3) -> dict[str, Any]:
    """Samples/s of the full step (the training loop's own code, data loading included) and of
    the bare encoder forward + backward on one prepared batch, on this machine's device."""
    cfg = load_config([f"modality={modality}", *profile])
    t = training_parts(cfg)
    full = full_step_rate(t, steps, warmup)

    inputs, _labels, _skipped = next(batches(t))
    prepared, _ = prepare_views(t.modality, inputs, t.device, t.info)
    encoder, autocast, batch_size = unwrap(t.model).online_encoder, t.autocast, cfg.data.batch_size
    if cfg.trainer.compile:  # as the model is, for a like-for-like ratio
        encoder = torch.compile(encoder)
    encoder.train()

    def encoder_step(prepared):
        with autocast():
            loss = encoder(prepared).float().square().mean()
        loss.backward()
        encoder.zero_grad(set_to_none=True)

    bare = timed(itertools.repeat(prepared), encoder_step, steps, warmup, batch_size)
    return {"modality": modality, "encoder": cfg.encoder.name, "batch_size": batch_size,
            "precision": resolve_precision(cfg.trainer.precision, t.device),
            "device": str(t.device), "steps": steps, "full_step_samples_per_s": round(full, 1),
            "encoder_fwd_bwd_samples_per_s": round(bare, 1), "full_over_encoder": round(full / bare, 3)}


# -------------------------------------------------------------------------------- report


def mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (max(values) - min(values)) / 2


def fmt(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean, spread = mean_spread([100 * v for v in values])
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {spread:.1f}"


def in_part(records: list[dict], part: str) -> list[dict]:
    """The records whose figures the part reports (a run may feed several parts)."""
    return [r for r in records if part in r["parts"]]


def ids(records: list[dict]) -> str:
    return ", ".join(f"`{r['id']}`" for r in records)


def wall(results: dict[str, Any]) -> str:
    """How long the run took; a resumed run says how many records it did not train again."""
    minutes, reused = results["wall_minutes"], results.get("reused", 0)
    if not reused:
        return f"{minutes:.1f} minutes in all"
    return (f"{minutes:.1f} minutes; {reused} of its {len(results['records'])} records were reused from an earlier "
            f"run (`--resume`), not trained again")


def data_name(modality: str, results: dict[str, Any]) -> str:
    """The data a modality's runs trained on: the description of a built-in modality's default
    data, else the data set's name from the runs' config."""
    if modality in DATA and not any(o.startswith("data.") for o in results.get("overrides", [])):
        return DATA[modality]
    data = next((r["config"]["data"] for r in results["records"] if r["modality"] == modality), {})
    return " ".join(str(data[k]) for k in ("name", "set", "train") if data.get(k)) or "its default data"


def report(results: dict[str, Any]) -> str:
    records, profile = results["records"], results["profile"]
    seeds = PROFILES[profile]["seeds"]
    lines = [f"# mmbyol: modalities compared ({profile} profile)", "",
             f"Command: `{results['command']}`  ",
             f"Machine: {results['machine']['description']}  ",
             f"Finished {results['finished']}, {wall(results)}. Every figure below names its records in "
             f"`compare_modalities.json`, each with its resolved config.", ""]

    modalities = list(dict.fromkeys(r["modality"] for r in records))
    table = in_part(records, "table")
    table_budget = {m: o for m, o in PROFILES[profile].get("table", {}).items() if o and m in modalities}
    if table:
        draws = table[0]["config"]["eval"]["label_draws"]
        lines += ["## Modality table", "",
                  f"Accuracy (%) of a linear probe on frozen features (all labels, and 10 labels per class: "
                  f"{f'the mean over {draws} draws of them' if draws > 1 else 'drawn once'}) and of "
                  f"weighted kNN; mean ± half the range over seeds {', '.join(map(str, seeds))}. Training time and "
                  f"samples/s are per run (mean)."
                  + (" Runs whose id ends in `@table` have the table's own budget (Budgets, below)."
                     if table_budget else ""), "",
                  "| modality | method | linear | linear, 10 labels | kNN | train s | samples/s | records |",
                  "|---|---|---|---|---|---|---|---|"]
        for modality in modalities:
            for method in TABLE_METHODS:
                rows = [r for r in table if r["modality"] == modality and r["method"] == method]
                if not rows:
                    continue
                speed = [r["samples_per_s"] for r in rows if r["samples_per_s"]]
                timing = (f"{statistics.fmean(r['train_seconds'] for r in rows):.0f} | {statistics.fmean(speed):.0f}"
                          if speed else "– | –")  # the untrained encoder is not trained
                lines.append(f"| {modality} | {method} | {fmt([r['linear_acc'] for r in rows])} | "
                             f"{fmt([r['linear_acc_10'] for r in rows])} | {fmt([r['knn_acc'] for r in rows])} | "
                             f"{timing} | {ids(rows)} |")
        lines += ["", "BYOL against the untrained encoder (margin of the means; the claim holds where the margin "
                  "exceeds both spreads):", ""]
        for modality in modalities:
            byol = [r for r in table if r["modality"] == modality and r["method"] == "byol"]
            base = [r for r in table if r["modality"] == modality and r["method"] == "untrained"]
            if not byol or not base:
                continue
            parts = []
            for metric in METRICS:
                (bm, bs), (um, us) = mean_spread([r[metric] for r in byol]), mean_spread([r[metric] for r in base])
                verdict = "holds" if bm - um > max(bs, us) else "does not hold"
                parts.append(f"{METRIC_NAMES[metric]} {100 * (bm - um):+.1f} "
                             f"(spreads {100 * bs:.1f}/{100 * us:.1f}: {verdict})")
            lines.append(f"- {modality}: " + "; ".join(parts))
        lines.append("")
    batch = in_part(records, "batch")
    if len({r["batch_size"] for r in batch}) > 1:
        by_steps = sorted({r["modality"] for r in batch if r["config"]["trainer"].get("max_steps")})
        budget = f" ({', '.join(by_steps)}: the same steps, the budget being in steps)" if by_steps else ""
        lines += ["## Batch-size robustness (paper Fig. 3a)", "",
                  f"Linear-probe accuracy (%, all labels / 10 labels per class), seed 0, the same epochs at every "
                  f"batch size{budget}, learning rate scaled linearly. Drop: from the largest batch to the smallest.",
                  "",
                  "![batch size](batch_size.png)", "",
                  "| modality | method | " + " | ".join(f"batch {b}" for b in PROFILES[profile]["batch_sizes"])
                  + " | drop |",
                  "|---|---|" + "---|" * (len(PROFILES[profile]["batch_sizes"]) + 1)]
        for modality in modalities:
            for method in ("byol", "infonce"):
                rows = {r["batch_size"]: r for r in batch if r["modality"] == modality and r["method"] == method}
                if len(rows) < 2:
                    continue
                cells = [f"{100 * rows[b]['linear_acc']:.1f} / {100 * rows[b]['linear_acc_10']:.1f}"
                         if b in rows else "–"
                         for b in PROFILES[profile]["batch_sizes"]]
                small, large = rows[min(rows)], rows[max(rows)]
                lines.append(f"| {modality} | {method} | " + " | ".join(cells) +
                             f" | {100 * (large['linear_acc'] - small['linear_acc']):.1f} |")
        lines.append("")
    augment = in_part(records, "augment")
    if any(r["variant"] != "default" for r in augment):
        lines += ["## Augmentation value (paper Fig. 3b)", "",
                  "BYOL, seed 0: accuracy (%) with the default pair, then the change (points) when one augmentation "
                  "is removed from both views (`-name`), with the crop alone, or with an augmentation added "
                  "(`+name`). A negative change on removal is what the augmentation is worth.", "",
                  "![augmentation value](augment_value.png)", "",
                  "| modality | variant | linear | Δ linear | linear, 10 labels | Δ 10 labels | kNN | Δ kNN | record |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for modality in modalities:
            rows = [r for r in augment if r["modality"] == modality]
            default = next((r for r in rows if r["variant"] == "default"), None)
            if default is None:
                continue
            for r in [default] + [r for r in rows if r is not default]:
                delta = [("" if r is default else f"{100 * (r[m] - default[m]):+.1f}") for m in METRICS]
                lines.append(f"| {modality} | {r['variant']} | {100 * r['linear_acc']:.1f} | {delta[0]} | "
                             f"{100 * r['linear_acc_10']:.1f} | {delta[1]} | {100 * r['knn_acc']:.1f} | {delta[2]} | "
                             f"`{r['id']}` |")
        lines.append("")
    if results.get("throughput"):
        lines += ["## Throughput", "",
                  "Samples/s of the full training step (data loading, on-device augmentation, online and target "
                  "forward, backward, optimizer, EMA) and of the bare encoder forward + backward on one prepared "
                  "batch; their ratio is what the rest of BYOL costs (two views, target network, heads).", "",
                  "| modality | encoder | batch | precision | device | full step | encoder fwd+bwd | ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for t in results["throughput"]:
            lines.append(f"| {t['modality']} | {t['encoder']} | {t['batch_size']} | {t['precision']} | {t['device']} | "
                         f"{t['full_step_samples_per_s']:.0f} | {t['encoder_fwd_bwd_samples_per_s']:.0f} | "
                         f"{t['full_over_encoder']:.2f} |")
        lines.append("")
    lines += ["## Budgets", "",
              f"Every run of the {profile} profile adds these overrides to the modality's defaults:", ""]
    for modality in modalities:
        overrides = " ".join(PROFILES[profile].get(modality, []))
        lines.append(f"- {modality} ({data_name(modality, results)}): `{overrides or '(none)'}`")
    if results.get("overrides"):
        lines += ["", f"and the command line's, to every run: `{' '.join(results['overrides'])}`"]
    if table and table_budget:
        lines += ["", "The modality table's runs of these modalities (ids ending in `@table`) add these overrides; "
                  "the other modalities' table runs are the sweeps' own:", ""]
        for modality, overrides in table_budget.items():
            lines.append(f"- {modality}: `{' '.join(overrides)}`")
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = results["records"]
    modalities = list(dict.fromkeys(r["modality"] for r in records))
    written = []
    batch = in_part(records, "batch")
    if len({r["batch_size"] for r in batch}) > 1:
        fig, axes = plt.subplots(1, len(modalities), figsize=(4.2 * len(modalities), 3.4), squeeze=False)
        for ax, modality in zip(axes[0], modalities):
            for method, colour in (("byol", "tab:blue"), ("infonce", "tab:orange")):
                rows = sorted((r for r in batch if r["modality"] == modality and r["method"] == method),
                              key=lambda r: r["batch_size"])
                if not rows:
                    continue
                x = [r["batch_size"] for r in rows]
                ax.plot(x, [100 * r["linear_acc"] for r in rows], "o-", color=colour, label=f"{method}, linear")
                ax.plot(x, [100 * r["linear_acc_10"] for r in rows], "s--", color=colour, label=f"{method}, 10 labels")
            ax.set_xscale("log", base=2)
            sizes = PROFILES[results["profile"]]["batch_sizes"]
            ax.set_xticks(sizes, [str(b) for b in sizes])
            ax.set_title(f"{modality}: {data_name(modality, results)}", fontsize=9)
            ax.set_xlabel("batch size")
            ax.set_ylabel("accuracy (%)")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "batch_size.png", dpi=110)
        plt.close(fig)
        written.append(out / "batch_size.png")
    augment = in_part(records, "augment")
    if any(r["variant"] != "default" for r in augment):
        fig, axes = plt.subplots(1, len(modalities), figsize=(4.6 * len(modalities), 3.6), squeeze=False)
        for ax, modality in zip(axes[0], modalities):
            rows = [r for r in augment if r["modality"] == modality]
            default = next((r for r in rows if r["variant"] == "default"), None)
            others = [r for r in rows if r is not default]
            if default is None or not others:
                continue
            y = range(len(others))
            for offset, (metric, colour) in enumerate((("linear_acc", "tab:blue"), ("linear_acc_10", "tab:green"))):
                ax.barh([i + 0.4 * offset - 0.2 for i in y], [100 * (r[metric] - default[metric]) for r in others],
                        height=0.4, color=colour, label=METRIC_NAMES[metric])
            ax.set_yticks(list(y), [r["variant"] for r in others], fontsize=8)
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_xlabel("Δ accuracy vs default pair (points)")
            ax.set_title(f"{modality}: default {100 * default['linear_acc']:.1f} / "
                         f"{100 * default['linear_acc_10']:.1f}", fontsize=9)
            ax.grid(alpha=0.3, axis="x")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "augment_value.png", dpi=110)
        plt.close(fig)
        written.append(out / "augment_value.png")
    return written


def machine() -> dict[str, Any]:
    import os

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cpu_only = f"CPU only, {os.cpu_count()} cores ({cpu}), {torch.get_num_threads()} torch threads"
    description = f"{gpu} GPU" if gpu else cpu_only
    return {"description": description, "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def parse_augment(text: str) -> dict:
    """``NAME`` or a YAML mapping such as ``{name: cutout, size: 8}``."""
    spec = yaml.safe_load(text) if text.lstrip().startswith("{") else {"name": text}
    if not isinstance(spec, dict) or "name" not in spec:
        raise SystemExit(f"--augment {text!r}: give an augmentation name or a mapping with a name, "
                         f"e.g. '{{name: cutout, p: 0.5}}'")
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--modalities", nargs="+", default=list(BUILT_IN), metavar="NAME",
                        help=f"{', '.join(BUILT_IN)} (the default), or a plugin's (with --plugins)")
    parser.add_argument("--parts", nargs="+", choices=("table", "batch", "augment", "throughput"),
                        default=["table", "batch", "augment", "throughput"])
    parser.add_argument("--methods", nargs="+", choices=TABLE_METHODS, default=list(TABLE_METHODS),
                        help="the modality table's rows "
                             "(e.g. byol untrained: the paper's claim alone, at half the cost)")
    parser.add_argument("--augment", action="append", default=[], metavar="NAME|{name: ..., key: value}",
                        help="an extra augmentation to evaluate, added to both views (repeatable; plugins too)")
    parser.add_argument("--plugins", nargs="*", default=[],
                        help="modules that register augmentations (as plugins: in a config)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON, report and plots go")
    parser.add_argument("--resume", action="store_true", help="reuse the records already in --out's JSON")
    parser.add_argument("--throughput-steps", type=int, default=None)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides for every run, after the profile's (e.g. data.set=GunPoint)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="mmbyol: %(message)s")
    import_plugins(args.plugins)
    unknown = [m for m in args.modalities if m not in MODALITIES.names()]
    if unknown:
        raise SystemExit(f"--modalities {unknown[0]!r} is not a registered modality. Known: "
                         f"{', '.join(MODALITIES.names())}. A plugin's modality needs --plugins MODULE.")
    profile = PROFILES[args.profile]
    plugins = [f"plugins={json.dumps(args.plugins)}"] if args.plugins else []
    modality_overrides = {m: [*plugins, *profile.get(m, []), *args.overrides] for m in args.modalities}
    extra: dict[str, list[dict]] = {}
    for text in args.augment:
        spec = parse_augment(text)
        owners = [m for m in args.modalities if spec["name"] in augmentation_names(m)]  # generic ones too
        if not owners:
            known = sorted({name for m in args.modalities for name in augmentation_names(m)})
            raise SystemExit(f"--augment {spec['name']!r} is not a registered augmentation of "
                             f"{', '.join(args.modalities)}. "
                             f"Known: {', '.join(known)}. A plugin's augmentation needs --plugins MODULE.")
        for modality in owners:
            extra.setdefault(modality, []).append(spec)

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "compare_modalities.json"
    previous = {}
    if args.resume and json_path.exists():
        earlier = json.loads(json_path.read_text())
        if earlier.get("overrides", []) != args.overrides:
            raise SystemExit(f"--resume: the records in {json_path} were made with the overrides "
                             f"{earlier.get('overrides', [])}, not {args.overrides}; give the same, or another --out.")
        previous = {r["key"]: r for r in earlier["records"] if "key" in r}
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/compare_modalities.py " + " ".join(shlex.quote(a) for a in given)
    results: dict[str, Any] = {"profile": args.profile, "command": command.strip(), "machine": machine(),
                               "overrides": args.overrides, "records": [], "throughput": []}
    work = Path("runs") / f"compare-{args.profile}"
    started = time.perf_counter()
    jobs = plan(args.modalities, args.parts, {**profile, **modality_overrides}, extra,
                tuple(m for m in TABLE_METHODS if m in args.methods))
    print(f"{len(jobs)} runs, profile {args.profile}, on {results['machine']['description']}; runs in {work}/",
          flush=True)

    reused = 0  # records taken from the earlier run (--resume), not trained again

    def save() -> None:
        results["reused"] = reused
        results["wall_minutes"] = (time.perf_counter() - started) / 60
        results["finished"] = time.strftime("%Y-%m-%d %H:%M")
        json_path.write_text(json.dumps(results, indent=1) + "\n")

    for i, job in enumerate(jobs, 1):
        record = previous.get(job.key)
        if record is None:
            record = {"key": job.key, **run_job(job, modality_overrides[job.modality], work)}
        else:
            reused += 1
        record["parts"] = job.parts  # a resumed record may now feed other parts
        results["records"].append(record)
        save()
        elapsed = (time.perf_counter() - started) / 60
        print(f"[{i}/{len(jobs)} {elapsed:5.1f} min] {job.id}: linear {100 * record['linear_acc']:.1f}, "
              f"10 labels {100 * record['linear_acc_10']:.1f}, kNN {100 * record['knn_acc']:.1f} "
              f"(train {record['train_seconds']:.0f} s, eval {record['eval_seconds']:.0f} s)", flush=True)
    if "throughput" in args.parts:
        steps = args.throughput_steps or (20 if args.profile == "quick" else 50)
        for modality in args.modalities:
            t = throughput(modality, modality_overrides[modality], steps)
            results["throughput"].append(t)
            print(f"throughput {modality}: full step {t['full_step_samples_per_s']:.0f} samples/s, encoder fwd+bwd "
                  f"{t['encoder_fwd_bwd_samples_per_s']:.0f} samples/s, ratio {t['full_over_encoder']:.2f}", flush=True)
    save()
    for path in plots(results, args.out):
        print(path)
    (args.out / "compare_modalities.md").write_text(report(results))
    print(args.out / "compare_modalities.md")
    print(f"done in {(time.perf_counter() - started) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MMBYOLError as error:  # a bad config, data set or plugin: the message says what to do
        sys.exit(f"compare_modalities: error: {error}")
