"""Where an audio run's few-label errors are, on spoken digits: its test accuracy split by the
clip's SNR, accent, voice variant, speed and pitch, and the confusion matrix.

    python benchmarks/audio_errors.py RUN_DIR [key=value ...] [--labels-per-class 10]

The features, the labelled draws and the probes are `mmbyol eval`'s (its `eval.label_draws`
draws, seeds from `eval.seed`), so the overall figure printed first is the `linear_acc_N` of
`mmbyol eval RUN_DIR eval.labels_per_class=N`; each test clip counts once per draw. Overrides
refine the run's config as they do for `mmbyol eval` (`data.snr_db=null`: the same clips
without noise; `init=random`: the untrained encoder). Prints tables; writes nothing.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import torch

from mmbyol.data import Subset
from mmbyol.evaluate import few_label_scores, load_eval_config, run_features
from mmbyol.modalities.audio.spoken_digits import DIGITS

SNR_BANDS = 5  # equal bands over data.snr_db


def clip_factors(test_set) -> tuple[list[Path], dict[str, list[str]]]:
    """The test clips' paths, in order, and each factor's value per clip, read from the
    spoken-digits layout ``ACCENT/WORD/VARIANT-sSPEED-pPITCH.wav`` and the clip's drawn SNR."""
    dataset, indices = test_set, None
    if isinstance(test_set, Subset):
        dataset, indices = test_set.dataset, test_set.indices
    files = [dataset.files[i] for i in indices] if indices is not None else list(dataset.files)
    factors: dict[str, list[str]] = defaultdict(list)
    for path in files:
        name = re.fullmatch(r"(\w+)-s(\d+)-p(\d+)\.wav", path.name)
        if name is None:
            raise SystemExit(f"{path} is not a spoken-digits clip (VARIANT-sSPEED-pPITCH.wav); this analysis "
                             f"reads the factors from spoken-digits' file names.")
        factors["accent"].append(path.parent.parent.name)
        factors["voice"].append(name[1])
        factors["speed (wpm)"].append(name[2])
        factors["pitch"].append(name[3])
    if dataset.snr_db is not None:
        low, high = dataset.snr_db
        width = (high - low) / SNR_BANDS
        for path in files:
            band = min(int((dataset.snr(path) - low) / width), SNR_BANDS - 1)
            factors["SNR (dB)"].append(f"{low + band * width:+.0f}..{low + (band + 1) * width:+.0f}")
    return files, factors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="key=value, as for `mmbyol eval`")
    parser.add_argument("--labels-per-class", type=int, default=10)
    args = parser.parse_args(argv)

    cfg = load_eval_config(args.run_dir, args.overrides)
    if cfg.modality != "audio" or cfg.data.name != "spoken-digits":
        raise SystemExit(f"{args.run_dir} trained on {cfg.modality}/{cfg.data.name}; "
                         f"this analysis is for audio/spoken-digits.")
    train_x, train_y, test_x, test_y, step, _, test_set = run_features(cfg, args.run_dir)
    files, factors = clip_factors(test_set)
    if len(files) != len(test_y):
        raise SystemExit(f"{len(files) - len(test_y)} test clips could not be read (see the warnings); "
                         f"their rows cannot be matched to their files.")
    num_classes, n = len(DIGITS), args.labels_per_class
    draws = [scores.argmax(dim=1) for scores in few_label_scores(
        train_x, train_y, test_x, num_classes, n, cfg.eval.label_draws, cfg.eval.seed, l2_grid=cfg.eval.l2_grid)]
    correct = torch.stack([predictions == test_y for predictions in draws]).float()  # (draws, clips)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for predictions in draws:
        confusion.index_put_((test_y, predictions), torch.ones_like(test_y), accumulate=True)
    per_draw = correct.mean(dim=1)
    print(f"{args.run_dir} (step {step}, {cfg.eval.init}): linear probe on {n} labels per class, "
          f"{len(per_draw)} draws: {per_draw.mean():.4f} (draws {' / '.join(f'{a:.4f}' for a in per_draw.tolist())})")
    for factor, values in factors.items():
        print(f"\n| {factor} | clips | accuracy |\n|---|---|---|")
        order = (lambda v: float(v.split("..")[0])) if factor == "SNR (dB)" else (lambda v: (len(v), v))
        for value in sorted(set(values), key=order):
            chosen = torch.tensor([v == value for v in values])
            print(f"| {value} | {int(chosen.sum())} | {correct[:, chosen].mean():.3f} |")
    print("\nconfusion, summed over draws (rows: the word said; columns: the word predicted)\n")
    print("| | " + " | ".join(DIGITS) + " |\n|---|" + "---|" * num_classes)
    for word, row in zip(DIGITS, confusion.tolist()):
        print(f"| {word} | " + " | ".join(map(str, row)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
