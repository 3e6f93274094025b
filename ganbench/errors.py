"""Errors that ganbench reports to the user as one line (no traceback unless HYDRA_FULL_ERROR=1)."""


class GanbenchError(Exception):
    """Base class: a problem the user can fix, reported as a single line."""


class ConfigError(GanbenchError):
    """A config value is missing, unknown, of the wrong type or out of range."""


class DataError(GanbenchError):
    """A dataset cannot be found, downloaded or decoded."""


class CheckpointError(GanbenchError):
    """A checkpoint is corrupt or does not match the run's config."""
