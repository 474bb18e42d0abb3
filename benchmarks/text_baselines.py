"""The TF-IDF baseline for a text data set: what a self-supervised text encoder must beat.

TF-IDF features as scikit-learn's ``TfidfVectorizer`` defaults make them (lower-cased words of two
or more word characters, smoothed idf, l2-normalized rows), evaluated with mmbyol's own linear
probe on the same train/test split a run is evaluated on: all training labels, and
``--labels-per-class`` of them (the mean over ``--label-draws`` draws, as ``mmbyol eval`` reports it).

    python benchmarks/text_baselines.py [--labels-per-class 10] [--label-draws 5] [key=value ...]

Config overrides select the data set as for ``mmbyol train modality=text`` (default:
wordnet-glosses). Prints one JSON line and writes benchmarks/results/text_tfidf.json.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter
from functools import partial
from pathlib import Path

import torch

from mmbyol.config import load_config
from mmbyol.data import build_dataset
from mmbyol.evaluate import few_label_probes, linear_probe

RESULTS = Path(__file__).resolve().parent / "results"
WORD = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


def tfidf(train_texts: list[str], test_texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense TF-IDF matrices over the training vocabulary: tf · (ln((1 + n) / (1 + df)) + 1), rows
    l2-normalized."""
    train_words = [WORD.findall(t.lower()) for t in train_texts]
    document_frequency = Counter(w for words in train_words for w in set(words))
    vocabulary = {w: i for i, w in enumerate(sorted(document_frequency))}
    n = len(train_texts)
    idf = torch.tensor([math.log((1 + n) / (1 + document_frequency[w])) + 1 for w in vocabulary])

    def matrix(rows: list[list[str]]) -> torch.Tensor:
        out = torch.zeros(len(rows), len(vocabulary))
        for i, words in enumerate(rows):
            for word, count in Counter(w for w in words if w in vocabulary).items():
                out[i, vocabulary[word]] = count
        out *= idf
        return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)

    return matrix(train_words), matrix([WORD.findall(t.lower()) for t in test_texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--label-draws", type=int, default=5, help="draws of the few labels (eval.label_draws)")
    parser.add_argument("--seed", type=int, default=0, help="the eval seed (eval.seed)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    cfg = load_config(["modality=text", *args.overrides])
    started = time.perf_counter()
    train_set, test_set = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    train_x, test_x = tfidf(train_set.texts, test_set.texts)
    train_y, test_y = torch.tensor(train_set.labels), torch.tensor(test_set.labels)
    classes = int(max(train_y.max(), test_y.max())) + 1
    result = {"method": "tfidf+logistic", "data": cfg.data.name, "n_train": len(train_x), "n_test": len(test_x),
              "feature_dim": train_x.shape[1]}
    # the rows as they are (l2-normalized, sparse), as TF-IDF is used; standardizing costs points
    probe = partial(linear_probe, num_classes=classes, seed=args.seed, standardize=False)
    result["linear_acc"], _ = probe(train_x, train_y, test_x, test_y)
    n = args.labels_per_class
    draws = few_label_probes(train_x, train_y, test_x, test_y, classes, n, args.label_draws, args.seed,
                             standardize=False)
    result[f"linear_acc_{n}"] = sum(draws) / len(draws)
    result = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    result[f"linear_acc_{n}_draws"] = [round(acc, 4) for acc in draws]
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "text_tfidf.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
