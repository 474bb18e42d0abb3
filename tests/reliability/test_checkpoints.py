"""A checkpoint that is truncated, corrupted, of another modality or carrying pickled code is
refused with a message that says what to do; nothing in it is ever executed."""

import pathlib

import pytest
import torch

from mmbyol.checkpoint import load_checkpoint
from mmbyol.config import load_config
from mmbyol.errors import CheckpointError
from mmbyol.train import train

from ..conftest import TINY, run_cli


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory, fashion_mnist) -> bytes:
    run = train(load_config([*TINY, f"run.dir={tmp_path_factory.mktemp('good') / 'run'}"]))
    return (run / "checkpoints" / "last.pt").read_bytes()


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_a_truncated_checkpoint_is_refused_and_the_run_says_how_to_go_on(tmp_path, good_checkpoint, keep, tally):
    run = tmp_path / "run"
    path = run / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(good_checkpoint[: int(len(good_checkpoint) * keep)])
    tally["bad inputs tried"] += 1
    with pytest.raises(CheckpointError, match="truncated, corrupted.*Delete it"):
        train(load_config([*TINY, f"run.dir={run}", "resume=auto"]))


def test_flipped_bytes_are_refused_through_the_cli_in_one_paragraph(tmp_path, good_checkpoint, tally):
    corrupted = bytearray(good_checkpoint)
    for i in range(0, len(corrupted), 997):
        corrupted[i] ^= 0xFF
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(bytes(corrupted))
    tally["bad inputs tried"] += 1
    result = run_cli("train", *TINY, f"run.dir={tmp_path / 'run'}", "resume=auto", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot be loaded" in result.stderr or "not an mmbyol checkpoint" in result.stderr


def test_a_checkpoint_of_another_modality_is_refused(tmp_path, good_checkpoint, tally):
    path = tmp_path / "last.pt"
    path.write_bytes(good_checkpoint)
    tally["bad inputs tried"] += 1
    with pytest.raises(CheckpointError, match="image run, but this run is audio.*modality=image"):
        load_checkpoint(path, modality="audio")


class Planted:
    """Unpickling this would create a file: the proof that pickled code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_a_checkpoint_carrying_pickled_code_is_refused_and_the_code_never_runs(tmp_path, tally):
    marker, path = tmp_path / "code-ran", tmp_path / "evil.pt"
    torch.save({"format": 1, "step": 3, "payload": Planted(marker)}, path)
    tally["bad inputs tried"] += 1
    with pytest.raises(CheckpointError, match="never pickled code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_at_all_is_refused(tmp_path, tally):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)  # loads safely, but is not ours
    tally["bad inputs tried"] += 1
    with pytest.raises(CheckpointError, match="not an mmbyol checkpoint"):
        load_checkpoint(path)


def test_an_encoder_is_looked_for_only_in_a_run_directory(tmp_path, tally):
    from mmbyol import load_encoder

    tally["bad inputs tried"] += 4
    with pytest.raises(CheckpointError, match="is not a folder: pass the run directory"):
        load_encoder(tmp_path / "no-such-run")
    with pytest.raises(CheckpointError, match=r"is not a run directory \(no config.yaml\)"):
        load_encoder(tmp_path)
    (tmp_path / "best.yaml").write_text("seed: 0\n")  # what `mmbyol search` writes
    with pytest.raises(CheckpointError, match=r"It is a `mmbyol search` folder: .*mmbyol train config=.*best.yaml"):
        load_encoder(tmp_path)
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(CheckpointError, match="the run has not finished.*resume=auto"):
        load_encoder(tmp_path)  # a run directory without the exported encoder


def test_a_run_dir_that_names_a_file_is_refused_before_anything_is_written(tmp_path, tally):
    from mmbyol.checkpoint import open_run
    from mmbyol.config import load_config
    from mmbyol.errors import ConfigError
    from mmbyol.search import search_dir

    tally["bad inputs tried"] += 2
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    cfg = load_config([f"run.dir={notes}"])
    for opening in (open_run, search_dir):
        with pytest.raises(ConfigError, match="notes.txt is a file; a run directory is a folder"):
            opening(cfg)
    assert notes.read_text() == "mine"


def test_a_fresh_run_goes_over_no_file_of_the_users_nor_a_finished_run(tmp_path, tally):
    from omegaconf import OmegaConf

    from mmbyol.checkpoint import open_run
    from mmbyol.errors import ConfigError

    tally["bad inputs tried"] += 4
    mine = tmp_path / "mine"
    mine.mkdir()
    saved = load_config(["optim.lr=0.1"])  # a config of ours kept by hand (`mmbyol config > config.yaml`)
    for config in ("lr: 0.1\n", OmegaConf.to_yaml(saved)):  # and another tool's, under the name a run writes
        (mine / "config.yaml").write_text(config)
        for resume in ("null", "auto"):
            with pytest.raises(ConfigError, match=r"files that are not a run's \(config.yaml\).*run.dir=.*mine/run"):
                open_run(load_config([f"run.dir={mine}", f"resume={resume}"]))
        assert (mine / "config.yaml").read_text() == config
    (mine / "config.yaml").unlink()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds files that are not a run's \(notes.txt\)"):
        open_run(load_config([f"run.dir={mine}"]))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (mine / "best.yaml").write_text("seed: 0\n")  # what `mmbyol search` writes
    with pytest.raises(ConfigError, match=r"It is a `mmbyol search` folder: .*mmbyol train config=.*best.yaml"):
        open_run(load_config([f"run.dir={mine}"]))

    # the folder of a run cut short before its first checkpoint (its config names the folder), with a
    # hidden file beside it, is trained into afresh; so is a folder with hidden files alone
    run = tmp_path / "run"
    cfg = load_config([f"run.dir={run}"])
    run.mkdir()
    (run / ".DS_Store").write_bytes(b"")
    assert open_run(cfg) == (run, None)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    assert open_run(cfg) == (run, None)
    # a finished run whose checkpoint was deleted cannot be continued, and is not trained over
    (run / "encoder.safetensors").write_bytes(b"weights")
    with pytest.raises(ConfigError, match="holds a finished run .*mmbyol never overwrites a run"):
        open_run(cfg)


def test_a_file_of_the_run_that_cannot_be_written_stops_it_with_the_cause_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch, tally):
    """A full disk: torch says only "unexpected pos"; the error says what failed, the space left and
    how to go on, the last checkpoint is as it was, and no half-written file holds the space."""
    import errno

    from mmbyol import checkpoint

    tally["faults injected"] += 2
    run = tmp_path / "run"
    cfg = load_config([f"run.dir={run}"])
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    path = checkpoint.checkpoint_path(run)
    checkpoint.save_checkpoint(path, cfg, 1, model, optimizer, [{"views": {}, "rng": {}}], {})
    saved = path.read_bytes()

    def full_disk(obj, file):
        file.write(b"\0" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"Could not write the checkpoint .*last.pt \(\[enforce fail.*unexpected "
                                              r"pos 704 vs 598\); its disk has [\d,]+ MiB free. The last checkpoint "
                                              r"is intact. Make room, then continue with: mmbyol train run.dir=.*run "
                                              r"resume=auto"):
        checkpoint.save_checkpoint(path, cfg, 2, model, optimizer, [{"views": {}, "rng": {}}], {})
    assert path.read_bytes() == saved and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]

    def no_space(state, metadata):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "to_safetensors", no_space)
    with pytest.raises(CheckpointError, match=r"Could not write the encoder .*encoder.safetensors \(No space left on "
                                              r"device\);.*The last checkpoint is intact.*resume=auto"):
        checkpoint.export_encoder(run / "encoder.safetensors", cfg, model, {}, 2)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]
