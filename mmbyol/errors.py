"""User-facing errors: each says what was wrong and what to do about it."""

import difflib
from collections.abc import Iterable
from pathlib import Path


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``name`` was most likely meant to be, or None: one that differs only in case
    (``FCN`` for ``fcn``, ``gunpoint`` for ``GunPoint``), else the closest by ``difflib``, compared
    without case."""
    by_lower = {}
    for candidate in candidates:
        by_lower.setdefault(candidate.lower(), candidate)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    return by_lower[close[0]] if close else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` Did you mean 'X'?`` for the closest candidate (see :func:`closest`), or an empty string."""
    match = closest(name, candidates)
    return f" Did you mean {match!r}?" if match else ""


def search_folder_hint(folder: Path) -> str:
    """For a message about a folder that is no run directory: where it is the folder of
    ``mmbyol search`` (it holds ``best.yaml``), what to do with it instead; else nothing."""
    if not (folder / "best.yaml").is_file():
        return ""
    return (f" It is a `mmbyol search` folder: train the recipe it found with `mmbyol train "
            f"config={folder / 'best.yaml'}`, then evaluate that run; its report is {folder / 'report.md'}.")


class MMBYOLError(Exception):
    """An error caused by input or configuration; the CLI prints it as one paragraph, no traceback."""


class ConfigError(MMBYOLError):
    """A config key, value or override that cannot be used."""


class DataError(MMBYOLError):
    """A data set that is missing, empty or unreadable."""


class InputShapeError(DataError, ValueError):
    """Input of another shape than the encoder trained on (series with another number of channels):
    a ValueError to code that calls the encoder, a one-paragraph error at the command line."""


class CheckpointError(MMBYOLError):
    """A checkpoint or exported encoder that cannot be loaded."""


class TrainingDiverged(MMBYOLError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Stopped(KeyboardInterrupt):
    """Training stopped on a signal after saving a checkpoint: Ctrl-C (SIGINT), or SIGTERM or SIGUSR1,
    which clusters send before they pre-empt a job. The CLI exits with 128 + ``signum``, the code a
    process killed by that signal has, so a scheduler sees the job as interrupted and can requeue it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
