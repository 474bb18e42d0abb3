"""The generic augmentations: offered to every modality whose batch has the axes they need, exact
on what each promises, one draw per sample."""

import pytest
import torch

from mmbyol.augment import augmentation_names, build_augmentation, generic_names
from mmbyol.errors import ConfigError
from mmbyol.generic import sample_along
from mmbyol.registry import AUGMENTATIONS, GENERIC

GENERIC_NAMES = ["amplitude_scale", "crop_resize", "gaussian_noise", "magnitude_warp", "memory_mixup",
                 "randomized_quantization", "segment_permutation", "span_mask", "time_warp"]
NEED_TIME = {"segment_permutation", "time_warp"}
# a prepared batch of each modality whose batch has named axes
BATCHES = {"timeseries": (6, 3, 40), "audio": (6, 1, 16, 24), "image": (6, 3, 12, 12)}


def build(name, modality="timeseries", **options):
    return build_augmentation(modality, {"name": name, **options})


def test_the_time_series_defaults_use_generic_augmentations_only():
    from mmbyol.config import load_config

    augment = load_config(["modality=timeseries"]).augment
    used = {spec["name"] for key in ("view1", "view2", "local") for spec in augment[key]}
    assert used and used <= set(GENERIC_NAMES) and augment.local_views == 2


def series(shape=(6, 3, 40), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_every_generic_augmentation_is_offered_where_its_axes_exist():
    assert sorted(AUGMENTATIONS.names(GENERIC)) == GENERIC_NAMES
    assert generic_names("timeseries") == GENERIC_NAMES
    assert generic_names("audio") == GENERIC_NAMES  # a spectrogram has a time axis
    assert generic_names("image") == sorted(set(GENERIC_NAMES) - NEED_TIME)
    assert generic_names("text") == []  # token ids: no float tensor to act on
    assert "mixup" in augmentation_names("audio") and "memory_mixup" in augmentation_names("audio")


def test_a_generic_augmentation_a_modality_cannot_use_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="'time_warp' needs a batch with a 'time' axis.*height, width"):
        build("time_warp", "image")
    with pytest.raises(ConfigError, match="'span_mask' needs a tensor batch with named axes"):
        build("span_mask", "text")
    with pytest.raises(ConfigError, match="axis='frequency' names no axis.*channel, time"):
        build("span_mask", axis="frequency")
    with pytest.raises(ConfigError, match="Did you mean 'span_mask'"):
        build("span_masks")


@pytest.mark.parametrize("modality, name", [(modality, name) for modality in sorted(BATCHES) for name in GENERIC_NAMES
                                            if not (modality == "image" and name in NEED_TIME)])
def test_shape_kept_p0_identity_and_one_draw_per_sample(name, modality):
    shape = BATCHES[modality]
    row = series((1, *shape[1:]))
    x = row.expand(*shape).contiguous()  # identical rows: only per-sample draws can tell them apart
    generator = torch.Generator().manual_seed(0)
    augmentation = build(name, modality)
    if name == "memory_mixup":
        augmentation(series(shape, seed=1), generator)  # something to mix with
    out = augmentation(x, generator)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[0], x[0])
    assert torch.equal(build(name, modality, p=0.0)(x, generator), x)


def test_randomized_quantization_has_at_most_bins_levels_per_channel_and_keeps_order():
    x = series((4, 3, 200))
    out = build("randomized_quantization", bins=5)(x, torch.Generator().manual_seed(0))
    for sample in range(4):
        for channel in range(3):
            values, quantized = x[sample, channel], out[sample, channel]
            assert 2 <= len(quantized.unique()) <= 5
            order = values.argsort()
            assert (quantized[order].diff() >= 0).all()  # monotone: a larger value never gets a lower level
            assert values.min() <= quantized.min() and quantized.max() <= values.max()
    # the channels are quantized independently: their cut points differ
    assert len({tuple(out[0, c].unique().tolist()) for c in range(3)}) == 3


def test_span_mask_hides_about_ratio_of_the_axis_in_spans():
    x = series((200, 2, 100)) + 10  # no value is 0 before masking
    out = build("span_mask", ratio=0.2, span=0.1)(x, torch.Generator().manual_seed(0))
    masked = out == 0
    assert torch.equal(masked[:, 0], masked[:, 1])  # along time: every channel at once
    fraction = masked[:, 0].float().mean(dim=1)
    assert (fraction >= 0.1).all() and (fraction <= 0.2).all()  # two spans of 10, overlapping at worst
    assert 0.15 < float(fraction.mean()) <= 0.2


def test_crop_resize_of_the_whole_axis_is_the_identity_and_a_crop_stretches_a_window():
    x = series()
    assert torch.allclose(build("crop_resize", scale=[1.0, 1.0])(x, torch.Generator()), x, atol=1e-6)
    ramp = torch.arange(40.0).expand(6, 3, 40).contiguous()
    out = build("crop_resize", scale=[0.5, 0.5])(ramp, torch.Generator().manual_seed(0))
    steps = out[..., 1:-1].diff(dim=-1)  # the outer steps may sit on the border, where reading clamps
    assert torch.allclose(steps, torch.full_like(steps, 0.5), atol=1e-4)  # half the axis over the whole length
    assert (out[..., 0] >= 0).all() and (out[..., -1] <= 39).all()


def test_crop_resize_with_a_size_below_one_returns_a_shorter_window():
    ramp = torch.arange(40.0).expand(6, 3, 40).contiguous()
    out = build("crop_resize", scale=[0.5, 0.5], size=0.5)(ramp, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 20)
    steps = out[..., 1:-1].diff(dim=-1)
    assert torch.allclose(steps, torch.ones_like(steps), atol=1e-4)  # half the axis at half the length: no stretch
    # the same draws as at full size: the window's start is the same
    full = build("crop_resize", scale=[0.5, 0.5])(ramp, torch.Generator().manual_seed(0))
    assert torch.allclose(out[..., 0], full[..., 0], atol=0.5)
    image = torch.rand(2, 3, 12, 12)
    assert build("crop_resize", "image", scale=[0.3, 0.6], size=0.5)(image, torch.Generator()).shape == (2, 3, 6, 6)
    with pytest.raises(ConfigError, match="p=1"):
        build("crop_resize", size=0.5, p=0.5)
    with pytest.raises(ConfigError, match="size"):
        build("crop_resize", size=1.5)


def test_crop_resize_crops_every_axis_but_the_channels_unless_told_which():
    ramp = torch.arange(12.0)
    image = (ramp.view(1, 1, 12, 1) * 100 + ramp.view(1, 1, 1, 12)).expand(4, 3, 12, 12).contiguous()
    both = build("crop_resize", "image", scale=[0.5, 0.5])(image, torch.Generator().manual_seed(0))
    inner = both[:, :, 1:-1, 1:-1]  # the outer steps may sit on the border, where reading clamps
    assert torch.allclose(inner.diff(dim=2), torch.full((4, 3, 9, 10), 50.0), atol=1e-2)  # height: half, stretched
    assert torch.allclose(inner.diff(dim=3), torch.full((4, 3, 10, 9), 0.5), atol=1e-2)  # width too
    width = build("crop_resize", "image", scale=[0.5, 0.5], axis="width")(image, torch.Generator().manual_seed(0))
    assert torch.equal(width[:, :, :, 0] // 100, image[:, :, :, 0] // 100)  # rows untouched
    spectrogram = build("crop_resize", "audio", axis=["frequency", "time"])
    assert spectrogram.dims == [2, 3] and build("crop_resize", "audio").dims == [2, 3]
    assert build("span_mask", "audio").dims == [3] and build("span_mask", "image").dims == [3]


def test_time_warp_keeps_the_ends_and_the_order_and_is_the_identity_at_strength_0():
    ramp = torch.arange(40.0).expand(6, 3, 40).contiguous()
    out = build("time_warp", strength=0.5)(ramp, torch.Generator().manual_seed(0))
    assert torch.allclose(out[..., 0], ramp[..., 0]) and torch.allclose(out[..., -1], ramp[..., -1])
    assert (out.diff(dim=-1) > 0).all() and not torch.allclose(out, ramp)  # faster and slower, never backwards
    assert torch.allclose(build("time_warp", strength=0.0)(ramp, torch.Generator()), ramp, atol=1e-4)


def test_segment_permutation_reorders_pieces_of_each_series():
    x = series((8, 3, 50))
    out = build("segment_permutation", segments=4)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out.sort(dim=-1).values, x.sort(dim=-1).values)  # the same values, moved
    source = (out[:, :1, :, None] == x[:, :1, None, :]).float().argmax(dim=-1)[:, 0]  # where each step came from
    jumps = (source.diff(dim=-1) != 1).sum(dim=-1)
    assert (jumps <= 3).all() and (jumps >= 1).sum() >= 6  # at most 3 seams; almost every row moved
    for c in (1, 2):  # every channel moved alike
        assert torch.equal(out[:, c], x[:, c].gather(-1, source))


def test_scaling_and_magnitude_warp_multiply_and_noise_adds():
    x = series()
    scaled = build("amplitude_scale", std=0.3)(x, torch.Generator().manual_seed(0))
    ratio = scaled / x
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-4)  # one factor per channel
    assert not torch.allclose(ratio[:, 0, 0], ratio[:, 1, 0])
    warped = build("magnitude_warp", strength=0.3, knots=3)(x, torch.Generator().manual_seed(0)) / x
    assert torch.allclose(warped[:, 0], warped[:, 1], atol=1e-4) and (warped > 0).all()  # one curve over time
    noise = build("gaussian_noise", std=0.5)(torch.zeros(64, 3, 400), torch.Generator().manual_seed(0))
    assert abs(float(noise.std()) - 0.5) < 0.01 and abs(float(noise.mean())) < 0.01
    for name, option in (("amplitude_scale", "std"), ("magnitude_warp", "strength"), ("gaussian_noise", "std")):
        assert torch.allclose(build(name, **{option: 0.0})(x, torch.Generator()), x)


def test_memory_mixup_mixes_linearly_with_remembered_inputs():
    mixup = build("memory_mixup", ratio=0.4, memory_size=4)
    generator = torch.Generator().manual_seed(0)
    background = torch.full((4, 1, 10), 10.0)
    assert torch.equal(mixup(background, generator), background)  # nothing remembered yet
    out = mixup(torch.zeros(4, 1, 10), generator)
    lam = out[:, 0, 0] / 10
    assert ((lam >= 0) & (lam <= 0.4)).all() and len(lam.unique()) == 4
    assert torch.allclose(out, 10 * lam.view(4, 1, 1).expand_as(out))  # (1 − λ)·0 + λ·10
    assert int(mixup.filled) == 4


def test_sample_along_reads_between_steps_linearly():
    x = torch.arange(10.0).view(1, 1, 10)
    out = sample_along(x, 2, torch.tensor([[0.0, 2.5, 9.0, 12.0]]))
    assert out.tolist() == [[[0.0, 2.5, 9.0, 9.0]]]  # past the end: the last step


def test_a_plugin_registers_a_generic_augmentation_for_every_modality(tmp_path, monkeypatch):
    (tmp_path / "my_generic.py").write_text(
        "import torch\n"
        "from mmbyol import Augmentation, register_augmentation\n"
        "@register_augmentation('*', 'flip_sign')\n"
        "class FlipSign(Augmentation):\n"
        "    def apply(self, x, generator):\n"
        "        return -x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from mmbyol.registry import import_plugins

    try:
        import_plugins(["my_generic"])
        assert "flip_sign" in augmentation_names("timeseries") and "flip_sign" in augmentation_names("image")
        x = series()
        assert torch.equal(build("flip_sign")(x, torch.Generator()), -x)
    finally:
        AUGMENTATIONS._items.pop((GENERIC, "flip_sign"), None)
