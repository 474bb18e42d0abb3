"""User-facing errors: each says what was wrong and what to do about it."""


class MMBYOLError(Exception):
    """An error caused by input or configuration; the CLI prints it as one paragraph, no traceback."""


class ConfigError(MMBYOLError):
    """A config key, value or override that cannot be used."""


class DataError(MMBYOLError):
    """A data set that is missing, empty or unreadable."""


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
