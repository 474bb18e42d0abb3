import pytest

from mmbyol.config import load_config
from mmbyol.errors import ConfigError


def test_modality_file_composes_over_base():
    cfg = load_config([])
    assert cfg.modality == "image" and cfg.data.name == "fashion-mnist" and cfg.encoder.name == "small_cnn"
    assert cfg.optim.trust_coefficient == 1e-3 and cfg.trainer.checkpoint_every == 500  # from base.yaml
    assert cfg.optim.name == "adamw"  # image.yaml refines base.yaml
    assert [a["name"] for a in cfg.augment.view1][0] == "random_resized_crop"


def test_overrides_refine_with_types_and_yaml_flow_lists():
    cfg = load_config(["trainer.epochs=3", "optim.lr=0.5", "encoder.cifar_stem=true",
                       "augment.view2=[{name: solarize, p: 0.5}]"])
    assert cfg.trainer.epochs == 3 and cfg.optim.lr == 0.5 and cfg.encoder.cifar_stem is True
    assert list(cfg.augment.view2) == [{"name": "solarize", "p": 0.5}]


@pytest.mark.parametrize("override, message", [
    ("trainer.epoch=3", r"Unknown config key 'trainer.epoch'.*Did you mean 'trainer.epochs'"),  # a typo
    ("data.batch_size=abc", r"'data.batch_size'.*abc"),  # a wrong type
    ("optim.name=lasr", "optim.name='lasr'.*Did you mean 'lars'"),  # not a choice
    ("trainer.epochs", "key=value"),  # not an override
    ("eval.label_draws=0", "eval.label_draws must be at least 1"),  # caught before any features are extracted
    ("eval.l2_grid=[]", r"eval.l2_grid=\[\] must list one or more L2 strengths"),
    ("eval.l2_grid=[-1.0]", "eval.l2_grid.*one value fixes the probe's L2"),
    # values that trained nothing, trained on without a word, or ended in torch's traceback
    ("trainer.epochs=0", r"trainer.epochs must be at least 1, got 0 \(or set trainer.max_steps\)"),
    ("trainer.max_steps=0", "trainer.max_steps must be at least 1, or null, got 0"),
    ("data.limit=0", "data.limit must be at least 1"),
    ("optim.lr=0", "optim.lr must be more than 0"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay must be 0 or more"),
    ("model.tau_base=1.5", r"model.tau_base must be in \[0, 1\], got 1.5"),
    ("optim.momentum=1", r"optim.momentum must be in \[0, 1\)"),
    ("model.hidden_dim=0", "model.hidden_dim must be at least 1"),
    ("search.tau_base=[0.5, 1.2]", "low <= high <= 1"),
])
def test_bad_overrides_name_the_key_and_what_to_do(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config([override])


def test_a_path_given_as_an_override_is_answered_with_the_key_it_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("modality: image\n")
    (tmp_path / "exp.yaml").write_text("trainer:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"run is a run's folder: continue it with run.dir=run resume=auto, or take "
                                          r"its settings with config=run/config.yaml"):
        load_config(["run"])
    with pytest.raises(ConfigError, match="A file of settings is given as config=exp.yaml"):
        load_config(["exp.yaml"])
    with pytest.raises(ConfigError, match=r"p: 0.2}\]'. `mmbyol config` shows every key"):  # neither: no hint
        load_config(["elsewhere"])


def test_the_limits_themselves_are_accepted():
    cfg = load_config(["trainer.epochs=0", "trainer.max_steps=1", "model.tau_base=1", "optim.momentum=0",
                       "optim.weight_decay=0", "optim.warmup_epochs=0", "search.tau_base=[0.5, 1.0]"])
    assert (cfg.trainer.max_steps, cfg.model.tau_base, cfg.optim.momentum) == (1, 1.0, 0.0)


def test_unknown_modality_lists_the_available_ones():
    with pytest.raises(ConfigError, match="Unknown modality 'imag'.*Did you mean 'image'"):
        load_config(["modality=imag"])


def test_missing_plugin_module_says_what_to_install():
    with pytest.raises(ConfigError, match="Cannot import plugin module 'no_such_plugin'"):
        load_config(["plugins=[no_such_plugin]"])


def test_saved_config_is_the_base_for_resume():
    saved = load_config(["trainer.epochs=2"])
    from mmbyol.config import to_container

    cfg = load_config(["optim.lr=0.1"], base=to_container(saved))
    assert cfg.trainer.epochs == 2 and cfg.optim.lr == 0.1


def test_a_config_file_refines_the_modality_defaults_and_the_command_line_wins(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("modality: audio\ntrainer:\n  epochs: 3\noptim:\n  lr: 0.5\n"
                    "augment:\n  view2:\n    - {name: gain, p: 0.5}\n")
    cfg = load_config([f"config={path}", "optim.lr=0.25"])
    assert cfg.modality == "audio" and cfg.encoder.name == "byola_cnn_small"  # the file chose the modality
    assert cfg.trainer.epochs == 3 and cfg.optim.lr == 0.25  # the file over audio.yaml, the command line over both
    assert cfg.optim.name == "adamw"  # audio.yaml's, untouched by the file
    assert list(cfg.augment.view2) == [{"name": "gain", "p": 0.5}]
    assert load_config(["modality=text", f"config={path}"]).modality == "text"  # the command line wins here too


def test_a_path_beginning_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = tmp_path / "my.yaml"
    path.write_text("run:\n  dir: ~/runs/a\n")
    cfg = load_config(["data.name=image-folder", "data.root=~/photos", f"config={path}"])  # as the shell passes them
    assert (cfg.data.root, cfg.run.dir) == (str(tmp_path / "photos"), str(tmp_path / "runs" / "a"))
    cfg = load_config(["modality=timeseries", "data.name=array-file", "data.train=~/x.npy", "data.test=a~/b.npy"])
    assert (cfg.data.train, cfg.data.test) == (str(tmp_path / "x.npy"), "a~/b.npy")


def test_naming_another_encoder_starts_its_section_afresh(tmp_path):
    fcn = {"name": "fcn", "channels": [64, 128, 64], "pool": "meanmax"}
    assert dict(load_config(["modality=timeseries"]).encoder) == fcn
    assert dict(load_config(["modality=timeseries", "encoder.pool=max"]).encoder) == {**fcn, "pool": "max"}
    switch = ["encoder.name=patch_transformer", "encoder.d=32"]
    for order in (switch, switch[::-1]):
        assert dict(load_config(["modality=timeseries", *order]).encoder) == {"name": "patch_transformer", "d": 32}
    assert dict(load_config(["modality=timeseries", "encoder={name: resnet1d, pool: max}"]).encoder) == {
        "name": "resnet1d", "pool": "max"}
    path = tmp_path / "my.yaml"
    path.write_text("encoder:\n  name: resnet1d\n  kernels: [7, 5, 3]\n")
    cfg = load_config(["modality=timeseries", f"config={path}", "encoder.pool=mean"])
    assert dict(cfg.encoder) == {"name": "resnet1d", "kernels": [7, 5, 3], "pool": "mean"}
    assert dict(load_config(["modality=audio", "encoder.name=byola_cnn"]).encoder) == {"name": "byola_cnn"}
    assert load_config(["modality=text", "encoder.name=bert", "encoder.layers=4"]).encoder.hidden == 256  # same name


def test_a_typo_in_a_config_file_is_the_command_lines_error_naming_the_file(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("trainer:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as from_file:
        load_config([f"config={path}"])
    with pytest.raises(ConfigError) as from_command_line:
        load_config(["trainer.epoch=3"])
    assert str(from_file.value) == f"{from_command_line.value} (in {path})"
    assert "Did you mean 'trainer.epochs'" in str(from_file.value)


@pytest.mark.parametrize("text, message", [
    (None, "does not exist"),
    ("- a\n- b\n", "must hold a mapping"),
    ("trainer: [1\n", "is not valid YAML"),
    ("trainer:\n  epochs: many\n", "'trainer.epochs'.*many"),
])
def test_a_bad_config_file_says_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "my.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config([f"config={path}"])


def test_a_preset_is_the_published_recipe_over_its_modality_and_the_command_line_refines_it(tmp_path):
    cfg = load_config(["preset=cifar10-resnet18"])
    assert cfg.modality == "image" and cfg.preset == "cifar10-resnet18"
    data, optim = cfg.data, cfg.optim
    assert (data.name, data.image_size, data.batch_size, cfg.encoder.name) == ("cifar10", 32, 256, "resnet18")
    assert (optim.name, optim.lr, optim.weight_decay, optim.trust_coefficient, optim.trust_clip) == (
        "lars", 1.0, 1e-5, 0.02, True)
    assert (cfg.model.hidden_dim, cfg.model.projection_dim, cfg.model.tau_base, cfg.trainer.epochs) == (
        4096, 256, 0.99, 1000)
    assert [a["name"] for a in cfg.augment.view2][-1] == "solarize" and len(cfg.augment.view1) == 4
    assert cfg.eval == load_config(["modality=image"]).eval  # what a preset leaves alone stays the modality's
    (tmp_path / "mine.yaml").write_text("trainer:\n  epochs: 5\n")
    cfg = load_config(["preset=imagenet-resnet50", f"config={tmp_path / 'mine.yaml'}", "data.batch_size=512"])
    assert (cfg.trainer.epochs, cfg.data.batch_size, cfg.encoder.name, cfg.model.tau_base) == (
        5, 512, "resnet50", 0.996)


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="cifar10-resnet18, imagenet-resnet50"):
        load_config(["preset=cifar10"])
