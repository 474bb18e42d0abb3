import json

import pytest
import torch

from mmbyol.augment import build_augmentation
from mmbyol.registry import AUGMENTATIONS

IMAGE_AUGMENTATIONS = ["random_resized_crop", "horizontal_flip", "color_jitter", "grayscale", "gaussian_blur",
                       "solarize"]


def batch(n=32, channels=3, size=24, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def test_the_paper_augmentations_are_registered():
    assert set(IMAGE_AUGMENTATIONS) <= set(AUGMENTATIONS.names("image"))


@pytest.mark.parametrize("name", IMAGE_AUGMENTATIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_p_zero_is_the_identity(name, channels):
    x = batch(channels=channels)
    out = build_augmentation("image", {"name": name, "p": 0.0})(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


@pytest.mark.parametrize("name", IMAGE_AUGMENTATIONS)
def test_p_one_always_applies(name):
    x = batch(channels=3)
    # σ = 0.1 on a 3-pixel kernel is (rightly) no blur at all: test with a visible σ.
    options = {"sigma": [1.0, 2.0]} if name == "gaussian_blur" else {}
    out = build_augmentation("image", {"name": name, "p": 1.0, **options})(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    changed = (out - x).abs().flatten(1).amax(dim=1) > 1e-4
    assert changed.all(), f"{name} left {int((~changed).sum())} samples unchanged"
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6


@pytest.mark.parametrize("name", ["random_resized_crop", "color_jitter", "gaussian_blur"])
def test_two_samples_get_different_random_parameters(name):
    x = batch(n=1).expand(16, -1, -1, -1).contiguous()  # sixteen copies of one image
    out = build_augmentation("image", {"name": name, "p": 1.0})(x, torch.Generator().manual_seed(0))
    distinct = {tuple(row.flatten()[:64].round(decimals=4).tolist()) for row in out}
    assert len(distinct) == 16


def test_a_fixed_seed_reproduces_the_views():
    from mmbyol.augment import build_views
    from mmbyol.config import load_config, to_container

    augment = to_container(load_config([]).augment)
    x = batch(channels=1, size=28)
    outs = []
    for _ in range(2):
        views = build_views("image", augment["view1"], augment["view2"])
        outs.append(views(x, x, torch.Generator().manual_seed(7)))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    other = build_views("image", augment["view1"], augment["view2"])(x, x, torch.Generator().manual_seed(8))
    assert not torch.equal(outs[0][0], other[0])


def test_one_channel_images_skip_saturation_and_hue_and_grayscale_is_identity():
    x = batch(channels=1)
    gray = build_augmentation("image", {"name": "grayscale", "p": 1.0})(x, torch.Generator())
    assert torch.equal(gray, x)
    only_hue = build_augmentation("image", {"name": "color_jitter", "brightness": 0, "contrast": 0,
                                            "saturation": 0.5, "hue": 0.5, "p": 1.0})
    assert torch.allclose(only_hue(x, torch.Generator()), x)


def test_horizontal_flip_mirrors():
    x = batch(n=4)
    out = build_augmentation("image", {"name": "horizontal_flip", "p": 1.0})(x, torch.Generator())
    assert torch.equal(out, x.flip(-1))


def test_solarize_inverts_pixels_above_threshold():
    x = torch.tensor([0.1, 0.49, 0.5, 0.9]).view(1, 1, 1, 4)
    out = build_augmentation("image", {"name": "solarize", "threshold": 0.5, "p": 1.0})(x, torch.Generator())
    assert torch.allclose(out.flatten(), torch.tensor([0.1, 0.49, 0.5, 0.1]))


def test_crop_with_full_scale_and_square_ratio_is_the_whole_image():
    x = batch(n=4, size=16)
    crop = build_augmentation("image", {"name": "random_resized_crop", "scale": [1.0, 1.0], "ratio": [1.0, 1.0]})
    assert torch.allclose(crop(x, torch.Generator()), x, atol=1e-5)


def test_blur_keeps_brightness_of_a_flat_image():
    x = torch.full((3, 3, 20, 20), 0.3)
    out = build_augmentation("image", {"name": "gaussian_blur", "p": 1.0})(x, torch.Generator())
    assert torch.allclose(out, x, atol=1e-6)


def test_encoders_map_images_to_features():
    from mmbyol.modalities.base import build_encoder

    info = {"channels": 1, "size": 28, "mean": [0.3], "std": [0.35]}
    for name, dim in [("small_cnn", 128), ("resnet18", 512)]:
        encoder = build_encoder("image", {"name": name}, info)
        assert encoder.out_dim == dim
        assert encoder(torch.rand(2, 1, 28, 28)).shape == (2, dim)


def test_fashion_mnist_reads_the_idx_files(fashion_mnist):
    from mmbyol.config import load_config
    from mmbyol.data import build_dataset

    cfg = load_config([])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert (len(train), len(test)) == (60000, 10000)
    image, label = train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and 0 <= label < 10
    assert len(train.classes) == 10 and train.info["channels"] == 1


def test_missing_fashion_mnist_names_the_package(tmp_path):
    from mmbyol.config import load_config
    from mmbyol.data import build_dataset
    from mmbyol.errors import DataError

    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_dataset(load_config([f"data.root={tmp_path}"]), "train")


def test_image_folder_skips_unreadable_files(tmp_path):
    from PIL import Image

    from mmbyol.config import load_config
    from mmbyol.data import build_dataset, collate_items
    from mmbyol.modalities.image import collate_images

    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "train" / cls / "a.png")
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"not an image")
    cfg = load_config(["data.name=image-folder", f"data.root={tmp_path}", "data.image_size=16"])
    dataset = build_dataset(cfg, "train")
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 3
    x, labels, skipped = collate_items([dataset[i] for i in range(3)], collate_images)
    assert x.shape == (2, 3, 16, 16) and skipped == 1 and labels.tolist() == [0, 1]


def test_image_folder_names_an_unreadable_file_once_however_often_it_is_read(tmp_path, caplog):
    from PIL import Image

    from mmbyol.config import load_config
    from mmbyol.data import build_dataset

    (tmp_path / "train" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "a.png")
    (tmp_path / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    dataset = build_dataset(load_config(["data.name=image-folder", f"data.root={tmp_path}"]), "train")
    for _epoch in range(3):
        assert [dataset[i] is None for i in range(2)] == [False, True]
    assert sum("broken.png" in record.message for record in caplog.records) == 1


def test_image_folder_without_images_names_what_it_holds_instead(tmp_path):
    from mmbyol.config import load_config
    from mmbyol.data import build_dataset
    from mmbyol.errors import DataError

    (tmp_path / "train" / "yes").mkdir(parents=True)
    for name in ("a.wav", "b.wav", "notes.txt"):
        (tmp_path / "train" / "yes" / name).write_bytes(b"")
    cfg = load_config(["data.name=image-folder", f"data.root={tmp_path}"])
    with pytest.raises(DataError, match=r"No image files \(.*\.png.*\) under .*train: it holds 2 \.wav, 1 \.txt"):
        build_dataset(cfg, "train")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="it holds no files"):
        build_dataset(load_config(["data.name=image-folder", f"data.root={tmp_path / 'flat'}"]), "train")


@pytest.mark.parametrize("held_out", ["test", "val", "validation", "valid"])
def test_image_folder_reads_the_held_out_split_under_any_of_its_usual_names(tmp_path, held_out):
    from PIL import Image

    from mmbyol.config import load_config
    from mmbyol.data import build_dataset

    for split, colour in (("train", 10), (held_out, 200)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8), (colour, 0, 0)).save(tmp_path / split / cls / "a.png")
    cfg = load_config(["data.name=image-folder", f"data.root={tmp_path}", "data.image_size=8"])
    test = build_dataset(cfg, "test")
    assert test.files[0].parts[-3] == held_out and test.classes == ["cat", "dog"]
    if held_out != "test":  # beside val/, test/ is the held-out split
        (tmp_path / "test" / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "test" / "cat" / "b.png")
        assert [f.parts[-3:] for f in build_dataset(cfg, "test").files] == [("test", "cat", "b.png")]


def test_crop_resampling_matches_grid_sample():
    import torch.nn.functional as F

    from mmbyol.augment import interpolation_matrix

    n, x = 8, batch(n=8, channels=3, size=20)
    g = torch.Generator().manual_seed(3)
    left, top = torch.rand(n, generator=g) * 0.4, torch.rand(n, generator=g) * 0.4
    width, height = 0.2 + torch.rand(n, generator=g) * 0.4, 0.2 + torch.rand(n, generator=g) * 0.4
    rows, cols = interpolation_matrix(top, height, 20, 12), interpolation_matrix(left, width, 20, 12)
    ours = rows.unsqueeze(1) @ (x @ cols.transpose(1, 2).unsqueeze(1))
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width, 2 * left + width - 1
    theta[:, 1, 1], theta[:, 1, 2] = height, 2 * top + height - 1
    grid = F.affine_grid(theta, [n, 3, 12, 12], align_corners=False)
    reference = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_color_jitter_on_one_channel_equals_three_gray_channels():
    """The one-channel fast path (both orders computed, one picked per row) gives what the general
    path gives on the same image stored as three equal channels (saturation and hue are no-ops)."""
    gray = batch(n=64, channels=1)
    jitter = build_augmentation("image", {"name": "color_jitter", "p": 1.0})
    one = jitter(gray, torch.Generator().manual_seed(5))
    three = jitter(gray.expand(-1, 3, -1, -1).contiguous(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(three, one.expand(-1, 3, -1, -1), atol=1e-5, rtol=0)


def test_hue_shift_per_image_equals_torchvision_adjust_hue_image_by_image():
    from torchvision.transforms.v2.functional import adjust_hue

    from mmbyol.modalities.image.augment import shift_hue

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(32, 3, 8, 8, generator=generator)
    x[0] = 0.5  # grey: no hue to turn
    x[1] = (x[1] * 4).round() / 4  # channels tied at the maximum
    x[2, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # pure red
    shift = torch.rand(32, generator=generator) - 0.5
    expected = torch.stack([adjust_hue(x[i], float(shift[i])) for i in range(32)])
    torch.testing.assert_close(shift_hue(x, shift), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(shift_hue(x, torch.zeros(32)), x, atol=1e-5, rtol=0)  # no shift: the image itself


def test_cifar100_reads_torchvisions_layout_with_fine_labels_and_trains_and_evaluates_through_the_cli(tmp_path,
                                                                                                       monkeypatch):
    import pickle

    import numpy as np
    import torchvision

    from mmbyol.config import load_config
    from mmbyol.data import build_dataset

    folder = tmp_path / "cifar-100-python"  # the python version as it unpacks, with 4 images per split
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": [i % 4 for i in range(n)],
                 "coarse_labels": [0] * n, "filenames": [f"{i}.png" for i in range(n)]}
        (folder / split).write_bytes(pickle.dumps(batch))
    names = [f"class_{i}" for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["all"]}))
    # torchvision checks the official archive's md5 sums, which a miniature cannot match
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    cfg = load_config(["data.name=cifar100", f"data.root={tmp_path}"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert (len(train), len(test), len(train.classes)) == (8, 4, 100) and train.labels.tolist()[:4] == [0, 1, 2, 3]
    assert torch.equal(train.images[0], torch.from_numpy(
        pickle.loads((folder / "train").read_bytes())["data"][0].reshape(3, 32, 32)))
    from mmbyol import cli  # in this process, where the md5 check is patched out

    options = ["data.name=cifar100", f"data.root={tmp_path}", "data.batch_size=4", "trainer.max_steps=2",
               "trainer.progress=false", "model.hidden_dim=32", "model.projection_dim=16", "device=cpu"]
    assert cli.main(["train", *options, f"run.dir={tmp_path / 'run'}"]) == 0
    assert cli.main(["eval", str(tmp_path / "run")]) == 0


def test_stl10_trains_on_labelled_and_unlabelled_images_and_probes_on_the_labelled(tmp_path, monkeypatch):
    import numpy as np
    import torchvision

    from mmbyol import cli
    from mmbyol.config import load_config
    from mmbyol.data import build_dataset, labelled

    folder = tmp_path / "stl10_binary"  # the binary version as it unpacks: column-major 96×96 images, labels 1-10
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, n in (("train", 8), ("unlabeled", 12), ("test", 6)):
        rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{stem}_X.bin")
        if stem != "unlabeled":
            (np.arange(n, dtype=np.uint8) % 2 + 1).tofile(folder / f"{stem}_y.bin")
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                                       "monkey", "ship", "truck"]) + "\n")
    # torchvision checks the official archive's md5 sums, which a miniature cannot match
    monkeypatch.setattr(torchvision.datasets.stl10, "check_integrity", lambda path, md5=None: True)
    cfg = load_config(["data.name=stl10", f"data.root={tmp_path}"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert (len(train), len(test), train.info["size"]) == (20, 6, 96)
    assert train.labels.tolist() == [0, 1] * 4 + [-1] * 12 and test.labels.tolist() == [0, 1] * 3
    raw = np.fromfile(folder / "train_X.bin", dtype=np.uint8).reshape(8, 3, 96, 96)
    assert torch.equal(train.images[1], torch.from_numpy(raw[1]).transpose(1, 2))  # stored column by column
    assert len(labelled(train)) == 8 and labelled(test) is test
    limited = load_config(["data.name=stl10", f"data.root={tmp_path}", "data.limit=10"])
    assert len(labelled(build_dataset(limited, "train"))) == 4  # every other item of 20: 4 labelled, 6 not

    options = ["data.name=stl10", f"data.root={tmp_path}", "data.batch_size=10", "trainer.max_steps=2",
               "trainer.progress=false", "model.hidden_dim=32", "model.projection_dim=16", "device=cpu",
               "trainer.monitor_every=1", "trainer.log_every=1"]
    assert cli.main(["train", *options, f"run.dir={tmp_path / 'run'}"]) == 0  # in this process: md5 patched out
    monitored = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("monitor_knn" in r for r in monitored)  # the labelled items give the monitor its kNN
    assert cli.main(["eval", str(tmp_path / "run"), "eval.labels_per_class=2", "eval.l2_grid=[0.01]"]) == 0
    result = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert result["n_train"] == 8 and result["n_test"] == 6
