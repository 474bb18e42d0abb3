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
