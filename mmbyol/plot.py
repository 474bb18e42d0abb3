"""``mmbyol plot RUN_DIR``: a run's curves from its metrics.jsonl, as one PNG."""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import replacing
from .errors import DataError, search_folder_hint

# (key, title, log scale) of each panel; a panel whose key the run never logged is left out
PANELS = [
    ("loss", "loss (2 − 2·cos, both terms)", False),
    ("tau", "τ (target EMA)", False),
    ("lr", "learning rate", False),
    ("z_std", "std of normalized projections", False),
    ("rank", "RankMe of the batch's features", False),
    ("monitor_knn", "monitor: kNN on the validation slice", False),
    ("monitor_rank", "monitor: RankMe on the validation slice", False),
]


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise DataError(f"{path} does not exist: plot needs a run directory that `mmbyol train` wrote "
                        f"(with the jsonl logger, on by default)." + search_folder_hint(run_dir))
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line a kill cut short
            continue
    if not records:
        raise DataError(f"{path} holds no records yet: the run has not logged a step.")
    return records


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Loss, τ, lr, z-std, rank and the monitor (with its step-0 reference) against steps;
    written to ``out`` (default ``RUN_DIR/curves.png``). Returns the file written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    panels = [p for p in PANELS if any(p[0] in r for r in records)]
    columns = 2
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(10, 2.6 * rows), dpi=110, squeeze=False)
    for ax, (key, title, log_scale) in zip(axes.flat, panels):
        points = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 30 else None)
        start = next((r[key] for r in records if r["step"] == 0 and key in r), None)
        if key.startswith("monitor_") and start is not None:
            ax.axhline(start, color="tab:red", linestyle="--", label="untrained encoder (step 0)")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_yscale("log" if log_scale else "linear")
        ax.grid(alpha=0.3)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(str(run_dir), fontsize=10)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "curves.png"
    save_png(fig, out)
    return out


def save_png(fig, path: Path) -> None:
    """``fig`` as a PNG at ``path`` whatever its name, written through :func:`replacing` (never a
    torn file, also where several processes write it), then closed."""
    import matplotlib.pyplot as plt

    try:
        with replacing(path) as file:
            fig.savefig(file, format="png")
    finally:
        plt.close(fig)
