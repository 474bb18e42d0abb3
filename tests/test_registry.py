import pytest

from mmbyol import list_names, register_augmentation
from mmbyol.augment import Augmentation
from mmbyol.errors import ConfigError
from mmbyol.registry import AUGMENTATIONS, ENCODERS, import_plugins


def test_builtin_names_are_listed():
    assert "image" in list_names("modalities")
    assert {"small_cnn", "resnet18", "resnet50"} <= set(list_names("encoders", "image"))
    assert {"fashion-mnist", "cifar10", "image-folder"} <= set(list_names("datasets", "image"))


def test_decorator_registers_and_duplicates_are_refused():
    @register_augmentation("image", "test_identity")
    class Identity(Augmentation):
        def apply(self, x, generator):
            return x

    assert AUGMENTATIONS.get("image", "test_identity") is Identity
    with pytest.raises(ValueError, match="already registered"):
        register_augmentation("image", "test_identity")(type("Other", (Augmentation,), {}))


def test_unknown_name_lists_available_and_suggests():
    with pytest.raises(ConfigError) as error:
        ENCODERS.get("image", "resnet81")
    assert "Did you mean 'resnet18'" in str(error.value) and "small_cnn" in str(error.value)
    with pytest.raises(ConfigError, match="Unknown encoder 'SMALL_CNN'.*Did you mean 'small_cnn'"):
        ENCODERS.get("image", "SMALL_CNN")


@pytest.mark.parametrize("name, expected", [
    ("FCN", "fcn"), ("gunpoint", "GunPoint"), ("GunPiont", "GunPoint"), ("fnc", "fcn"), ("wavelet", None)])
def test_the_closest_name_differs_in_case_or_by_a_typo(name, expected):
    from mmbyol.errors import closest

    assert closest(name, ["GunPoint", "fcn", "resnet1d", "Gunpoint_old"]) == expected


def test_a_plugin_that_takes_a_builtin_name_is_told_to_rename_it(tmp_path, monkeypatch):
    (tmp_path / "clashing_plugin.py").write_text(
        "from mmbyol import Augmentation, register_augmentation\n"
        "@register_augmentation('audio', 'mixup')\n"
        "class Mixup(Augmentation):\n"
        "    def apply(self, x, generator):\n"
        "        return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"Plugin module 'clashing_plugin' .*'mixup' for modality 'audio' is already "
                                          r"registered by mmbyol\. Rename yours"):
        import_plugins(["clashing_plugin"])
