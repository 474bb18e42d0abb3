"""What a trained time-series encoder gives for raw series, the way a user holds them: the test
split's series at their own lengths, padded with NaN to the longest in one array. Three inputs,
each scored by `mmbyol eval`'s probe protocol (the linear probe with all labels and kNN, fitted on
the training items' features):

    items         the data set's test items (resampled to the run's length), as `mmbyol eval` feeds them;
    raw           the padded raw series through `load_encoder(RUN_DIR, raw_input=True)`;
    unresampled   the padded raw series normalized but not resampled (a front end without resampling).

`raw` must equal `items`; `unresampled` is what resampling in the front end prevents.

    python benchmarks/raw_series.py RUN_DIR     # a time-series run of `ucr`, or of `array-file` with data.test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mmbyol import load_encoder
from mmbyol.data import build_dataset
from mmbyol.evaluate import load_eval_config, probe_metrics
from mmbyol.modalities.timeseries.data import read_archive_file, read_array_file, split_file, ucr_sets


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    cfg = load_eval_config(args.run_dir, [])
    if cfg.get("modality") == "timeseries" and cfg.data.window:
        raise SystemExit(f"{args.run_dir}: a run on windows (data.window) takes windows of one length, not raw "
                         f"series of their own lengths: there is nothing to compare")
    if cfg.data.name == "ucr":
        raw = read_archive_file(split_file(ucr_sets(cfg.data.root)[cfg.data.set], "test")).series
    elif cfg.data.name == "array-file" and cfg.data.test:
        raw = read_array_file(Path(cfg.data.test).expanduser(), None, cfg.data.label_column, cfg.data.channels_last)[0]
    else:
        raise SystemExit(f"{args.run_dir}: a time-series run of ucr, or of array-file with data.test, is needed")
    longest = max(s.shape[1] for s in raw)
    padded = torch.from_numpy(np.stack([np.pad(s, ((0, 0), (0, longest - s.shape[1])), constant_values=np.nan)
                                        for s in raw]).astype(np.float32))
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    encoder = load_encoder(args.run_dir, raw_input=True)
    front_end = encoder.front_end
    with torch.no_grad():
        unresampled = front_end.normalize(padded)
        features = {"items": encoder(test.x), "raw": encoder(padded),
                    "unresampled": encoder.encoder(unresampled)}
        train_x = encoder(train.x)
    train_y, test_y = torch.tensor(train.labels), torch.tensor(test.labels)
    print(f"{args.run_dir}: {len(raw)} test series of {min(s.shape[1] for s in raw)}-{longest} steps, "
          f"resampled to {front_end.length}")
    results = {}
    for name, test_x in features.items():
        metrics = probe_metrics(train_x, train_y, test_x, test_y, cfg.eval)
        results[name] = {"linear_acc": metrics["linear_acc"], "knn_acc": metrics["knn_acc"],
                         "max_abs_diff_from_items": float((test_x - features["items"]).abs().max())}
        print(f"  {name:<12} linear {100 * metrics['linear_acc']:5.1f}  kNN {100 * metrics['knn_acc']:5.1f}  "
              f"max |features - items'| {results[name]['max_abs_diff_from_items']:.2e}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
