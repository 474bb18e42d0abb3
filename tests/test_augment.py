import pytest
import torch

from mmbyol.augment import Augmentation, Compose, ViewPair, build_augmentation
from mmbyol.errors import ConfigError


class AddNoise(Augmentation):
    def apply(self, x, generator):
        return x + torch.rand(x.shape, generator=generator)


def test_p_is_drawn_per_sample():
    x = torch.zeros(2000, 3)
    out = AddNoise(p=0.3)(x, torch.Generator().manual_seed(0))
    changed = (out != 0).any(dim=1).float().mean()
    assert 0.25 < float(changed) < 0.35
    assert torch.equal(x, torch.zeros(2000, 3))  # the input is never modified in place


def test_dict_batches_are_selected_and_replaced_row_wise():
    class Bump(Augmentation):
        def apply(self, x, generator):
            return {"ids": x["ids"] + 1, "mask": x["mask"]}

    batch = {"ids": torch.zeros(1000, 4, dtype=torch.long), "mask": torch.ones(1000, 4, dtype=torch.long)}
    out = Bump(p=0.5)(batch, torch.Generator().manual_seed(1))
    rows = out["ids"][:, 0] == 1
    assert 0.4 < float(rows.float().mean()) < 0.6
    assert torch.equal(out["mask"], batch["mask"])


def test_view_pair_applies_each_list():
    pair = ViewPair(Compose([AddNoise(p=1.0)]), Compose([]))
    x = torch.zeros(4, 2)
    v1, v2 = pair(x, x, torch.Generator().manual_seed(0))
    assert (v1 != 0).all() and torch.equal(v2, x)


def test_view_pair_makes_each_view_from_its_own_input():
    pair = ViewPair(Compose([AddNoise(p=1.0)]), Compose([]))
    x1, x2 = torch.zeros(4, 2), torch.full((4, 2), 5.0)
    v1, v2 = pair(x1, x2, torch.Generator().manual_seed(0))
    assert torch.equal(v2, x2) and ((v1 > 0) & (v1 < 1)).all()


def test_p_outside_unit_interval_is_refused():
    with pytest.raises(ValueError):
        AddNoise(p=1.5)


def test_unknown_augmentation_names_the_available_ones():
    with pytest.raises(ConfigError, match="solarize.*Available: .*gaussian_blur"):
        build_augmentation("image", {"name": "solarise"})


def test_unknown_option_suggests_the_closest():
    with pytest.raises(ConfigError, match="threshhold.*Did you mean 'threshold'"):
        build_augmentation("image", {"name": "solarize", "threshhold": 0.3})
