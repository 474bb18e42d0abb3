import importlib
import math

import pytest
import torch

from mmbyol.config import load_config
from mmbyol.data import evenly_spaced
from mmbyol.errors import ConfigError, DataError
from mmbyol.evaluate import (
    few_label_probes,
    few_labels,
    knn_accuracy,
    knn_neighbours,
    knn_scores,
    linear_probe,
    origins_of,
    probe_metrics,
    whole_accuracy,
)


def blobs(n_per_class=50, classes=4, dim=8, spread=0.3, seed=0):
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 3
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


def test_linear_probe_separates_separable_classes():
    x, y = blobs()
    tx, ty = blobs(seed=1)
    accuracy, l2 = linear_probe(x, y, tx, ty, num_classes=4)
    assert accuracy == 1.0 and l2 > 0


def test_linear_probe_is_at_chance_on_noise():
    generator = torch.Generator().manual_seed(0)
    x, tx = torch.randn(400, 16, generator=generator), torch.randn(400, 16, generator=generator)
    y, ty = torch.randint(0, 4, (400,), generator=generator), torch.randint(0, 4, (400,), generator=generator)
    accuracy, _ = linear_probe(x, y, tx, ty, num_classes=4)
    assert 0.15 < accuracy < 0.4


def test_the_probe_picks_its_l2_from_the_grid_by_cross_validation_and_a_grid_of_one_is_used_as_is():
    from mmbyol.evaluate import fit_logistic

    generator = torch.Generator().manual_seed(0)
    x, tx = torch.randn(120, 30, generator=generator), torch.randn(200, 30, generator=generator)
    y, ty = (x[:, 0] > 0).long(), (tx[:, 0] > 0).long()
    accuracy, chosen = linear_probe(x, y, tx, ty, num_classes=2, l2_grid=[1e-6, 1e-2, 1e3])
    assert chosen in (1e-6, 1e-2)  # 1e3 shrinks the weights to nothing: chance on the held-out folds
    assert linear_probe(x, y, tx, ty, num_classes=2, l2_grid=[chosen]) == (accuracy, chosen)  # refit on all

    accuracy, l2 = linear_probe(x, y, tx, ty, num_classes=2, l2_grid=[1e3])
    mean, std = x.mean(dim=0), x.std(dim=0)
    alone = fit_logistic((x - mean) / std, y, 2, 1e3)
    with torch.no_grad():
        assert (accuracy, l2) == (float((alone((tx - mean) / std).argmax(dim=1) == ty).float().mean()), 1e3)


def test_knn_finds_the_neighbours_class():
    x, y = blobs()
    tx, ty = blobs(seed=2)
    assert knn_accuracy(x, y, tx, ty, num_classes=4, k=20) == 1.0


def test_knn_weights_votes_by_similarity():
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    train_y = torch.tensor([0, 1, 1])
    # The query is nearly identical to the single class-0 example: its weight beats two far votes.
    query, label = torch.tensor([[1.0, 0.05]]), torch.tensor([0])
    assert knn_accuracy(train_x, train_y, query, label, 2, k=3, temperature=0.1) == 1.0


def test_knn_votes_with_at_most_a_class_of_neighbours():
    # 30 series of class 0 and 10 of class 1, all with close cosines to the query; it is a shade
    # nearer class 1. With k = 40 every training series votes and class 0 wins by number (30 · e^0
    # against 10 · e^0.5); k is capped at 40 // 2 = 20, the 10 of class 1 and 10 of class 0 vote.
    angle_0, angle_1 = torch.full((30,), 0.6), torch.full((10,), 0.5)
    angles = torch.cat([angle_0, angle_1])
    train_x = torch.stack([angles.cos(), angles.sin()], dim=1)
    train_y = torch.tensor([0] * 30 + [1] * 10)
    query = torch.tensor([[math.cos(0.2), math.sin(0.2)]])
    assert knn_neighbours(200, 40, 2) == 20
    assert knn_accuracy(train_x, train_y, query, torch.tensor([1]), 2, k=200, temperature=0.1) == 1.0
    assert knn_neighbours(200, 60_000, 10) == 200 and knn_neighbours(5, 3, 4) == 1


def test_few_labels_is_balanced_and_deterministic():
    y = torch.arange(5).repeat(40)
    chosen = few_labels(y, 3, seed=0)
    assert torch.equal(chosen, few_labels(y, 3, seed=0))
    assert torch.bincount(y[chosen]).tolist() == [3] * 5
    assert not torch.equal(chosen, few_labels(y, 3, seed=1))
    with pytest.raises(DataError, match="Class 1 has only 2 training examples.*eval.labels_per_class=2 or less"):
        few_labels(torch.tensor([0, 0, 0, 1, 1]), 3, seed=0)


def test_too_few_examples_for_the_few_label_probe_name_the_class_before_any_probe_runs(monkeypatch):
    x, y = blobs(n_per_class=6, classes=3)
    x, y = x[:-3], y[:-3]  # the last class keeps 3
    eval_cfg = load_config(["eval.labels_per_class=5"]).eval
    module = importlib.import_module("mmbyol.evaluate")  # the package's `evaluate` is the function
    monkeypatch.setattr(module, "linear_probe", lambda *a, **k: pytest.fail("probed before the check"))
    with pytest.raises(DataError, match="Class 'walk' has only 3 training examples.*labels_per_class=3 or less"):
        probe_metrics(x, y, x, y, eval_cfg, classes=["run", "sit", "walk"])
    with pytest.raises(DataError, match="Class 2 has only 3"):  # features without names: the index
        probe_metrics(x, y, x, y, eval_cfg)


def test_few_label_probes_are_one_probe_per_draw_of_the_labels():
    x, y = blobs(spread=2.5)  # overlapping classes: which examples are labelled matters
    tx, ty = blobs(spread=2.5, seed=1)
    draws = few_label_probes(x, y, tx, ty, num_classes=4, per_class=3, draws=4, seed=7)
    expected = [linear_probe(x[few_labels(y, 3, s)], y[few_labels(y, 3, s)], tx, ty, 4, s)[0] for s in range(7, 11)]
    assert draws == expected
    assert len(set(draws)) > 1
    with pytest.raises(ConfigError, match="label_draws"):
        few_label_probes(x, y, tx, ty, num_classes=4, per_class=3, draws=0)


def test_a_whole_example_is_the_mean_of_its_items_scores():
    # series "a" (class 0): windows scored 0.6/0.4, 0.6/0.4, 0.1/0.9 -> mean 0.43/0.57, wrong though 2 of 3 are right;
    # series "b" (class 1): 0.45/0.55 and 0.9/0.1 -> 0.675/0.325, wrong; series "c" (class 1): right
    scores = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.1, 0.9], [0.45, 0.55], [0.9, 0.1], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert whole_accuracy(scores, labels, ["a", "a", "a", "b", "b", "c"]) == pytest.approx(1 / 3)
    assert whole_accuracy(scores, labels, ["a", "b", "c", "d", "e", "f"]) == pytest.approx(4 / 6)  # items as wholes
    with pytest.raises(DataError, match="Items cut from one whole example carry different labels"):
        whole_accuracy(scores, labels, ["a", "a", "a", "a", "b", "c"])


def test_knn_scores_are_vote_shares_that_knn_accuracy_reads():
    x, y = blobs(spread=2.0)
    tx, ty = blobs(spread=2.0, seed=1)
    scores = knn_scores(x, y, tx, num_classes=4, k=20)
    assert scores.shape == (len(tx), 4) and torch.allclose(scores.sum(dim=1), torch.ones(len(tx)))
    assert knn_accuracy(x, y, tx, ty, num_classes=4, k=20) == float((scores.argmax(dim=1) == ty).float().mean())


def test_few_labels_of_windows_label_whole_series():
    labels = torch.tensor([0] * 6 + [1] * 6 + [0] * 3)  # series 0, 1 of class 0 (3 windows each), 2, 3 of class 1
    origins = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]  # and series 4 of class 0
    chosen = few_labels(labels, 2, seed=0, origins=origins)
    series = {origins[i] for i in chosen.tolist()}
    assert len(chosen) == 12 and {2, 3} <= series and len(series) == 4  # every window of 2 series a class
    assert {origins[i] for i in few_labels(labels, 1, seed=3, origins=origins).tolist()} & {2, 3}
    with pytest.raises(DataError, match="Class 1 has only 2 training examples.*labels_per_class=2 or less"):
        few_labels(labels, 3, seed=0, origins=origins)  # 6 windows, but 2 series
    x, y = torch.randn(15, 4), labels
    eval_cfg = load_config(["eval.labels_per_class=3"]).eval
    with pytest.raises(DataError, match="Class 'run' has only 2 whole training examples"):  # counting series
        probe_metrics(x, y, x, y, eval_cfg, classes=["walk", "run"], train_origins=origins, test_origins=origins)


def test_whole_examples_are_measured_only_where_every_item_has_its_row(caplog):
    class Windows:
        origins = [0, 0, 1, 1, 2]

    assert origins_of(Windows(), 5) == [0, 0, 1, 1, 2]
    with caplog.at_level("WARNING"):
        assert origins_of(Windows(), 4) is None  # an unreadable item: rows no longer line up with origins
    assert "1 items could not be read: no measures over whole examples" in caplog.text
    assert origins_of(object(), 3) is None


def test_probe_metrics_over_whole_examples_beside_their_items():
    x, y = blobs(n_per_class=12, spread=2.5)  # 4 classes of 12 windows: 4 series of 3 windows a class
    tx, ty = blobs(n_per_class=12, spread=2.5, seed=1)
    origins = [i // 3 for i in range(len(y))]
    eval_cfg = load_config(["eval.labels_per_class=2", "eval.label_draws=3", "eval.l2_grid=[0.01]"]).eval
    metrics = probe_metrics(x, y, tx, ty, eval_cfg, train_origins=origins, test_origins=origins)
    plain = probe_metrics(x, y, tx, ty, eval_cfg)
    assert {k: metrics[k] for k in ("linear_acc", "knn_acc")} == {k: plain[k] for k in ("linear_acc", "knn_acc")}
    assert set(metrics) - set(plain) == {"linear_acc_whole", "knn_acc_whole", "linear_acc_2_whole"}
    assert metrics["linear_acc_whole"] > metrics["linear_acc"]  # a vote of 3 noisy windows beats one
    assert "each of the 16 whole examples" in metrics["protocol"]["whole"]
    assert metrics["protocol"]["labels_per_class"] == "2 whole examples a class, all their items labelled"
    assert metrics["linear_acc_2"] != plain["linear_acc_2"]  # 6 windows of 2 series a class, not 2 windows


def test_limits_spread_over_a_set_stored_class_by_class():
    labels = [c for c in range(10) for _ in range(125)]  # like spoken digits: one class after another
    subset = evenly_spaced(labels, 100)
    assert len(subset) == 100 and len(set(subset.indices)) == 100
    assert sorted({labels[i] for i in subset.indices}) == list(range(10))
    assert [labels[i] for i in subset.indices].count(0) == 10
    assert evenly_spaced(labels, 5000) is labels
