import numpy as np
import torch
from PIL import Image

from mmbyol.views import save_labelled_grid


def test_each_row_of_the_picture_is_labelled_on_its_left(tmp_path):
    rows = [torch.ones(4, 3, 40, 40) for _ in range(3)]  # white images: any dark pixel is a label's
    save_labelled_grid(rows, tmp_path / "views.png", padding=4)
    with Image.open(tmp_path / "views.png") as image:
        pixels = np.asarray(image.convert("L"))
    grid_width = 4 * 40 + 5 * 4
    margin = pixels[:, : pixels.shape[1] - grid_width]
    assert margin.shape[1] > 20 and (pixels[:, margin.shape[1]:] > 250).all()  # the images are untouched
    for row in range(3):
        band = margin[4 + row * 44 : 4 + row * 44 + 40]
        assert (band < 128).any(), f"row {row} has no label"


def test_one_channel_rows_are_pictured_too(tmp_path):
    rows = [torch.rand(2, 1, 28, 28) for _ in range(3)]
    save_labelled_grid(rows, tmp_path / "views.png")
    with Image.open(tmp_path / "views.png") as image:
        assert image.height == 3 * 28 + 4 * 4 and image.width > 2 * 28 + 3 * 4


def test_smaller_rows_of_local_views_are_enlarged_to_the_first_rows_size(tmp_path):
    rows = [torch.rand(2, 1, 28, 28), torch.rand(2, 1, 14, 14), torch.rand(2, 1, 10, 12)]
    save_labelled_grid(rows, tmp_path / "views.png", ("original", "local view 1", "local view 2"))
    with Image.open(tmp_path / "views.png") as image:
        assert image.height == 3 * 28 + 4 * 4 and image.width > 2 * 28 + 3 * 4


def test_views_shows_items_spread_through_a_set_stored_class_by_class(tmp_path, monkeypatch, caplog):
    import dataclasses

    from mmbyol import views
    from mmbyol.config import load_config
    from mmbyol.modalities.base import get_modality

    for cls, red in (("a", 0), ("b", 250)):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (red, 0, 0)).save(tmp_path / "train" / cls / f"{i}.png")
    shown = {}
    image = get_modality("image")
    monkeypatch.setattr(views, "get_modality", lambda name: dataclasses.replace(
        image, render_views=lambda original, view1, view2, path, info: shown.update(original=original)))
    cfg = load_config(["data.name=image-folder", f"data.root={tmp_path}", "data.image_size=8", "device=cpu"])
    with caplog.at_level("INFO", logger="mmbyol"):
        views.show_views(cfg, tmp_path / "views.png", n=4)
    assert len(shown["original"]) == 4 and shown["original"][:, 0, 0, 0].unique().numel() == 2
    assert "the items' classes, in the order shown: a, a, b, b" in caplog.text  # red ones are b's
    assert [c == "b" for c in "aabb"] == (shown["original"][:, 0, 0, 0] > 0.5).tolist()
