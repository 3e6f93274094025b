"""Errors that ganbench reports to the user as one line (no traceback unless HYDRA_FULL_ERROR=1), and the
condenser that turns any Hydra / OmegaConf / ganbench exception into that line."""
import re


class GanbenchError(Exception):
    """Base class: a problem the user can fix, reported as a single line."""


class ConfigError(GanbenchError):
    """A config value is missing, unknown, of the wrong type or out of range."""


class DataError(GanbenchError):
    """A dataset cannot be found, downloaded or decoded."""


class CheckpointError(GanbenchError):
    """A checkpoint is corrupt or does not match the run's config."""


def one_line_error(ex: BaseException) -> str:
    """Condense Hydra / OmegaConf / ganbench errors to a single line naming the key and the allowed values."""
    text = str(ex)
    match = re.search(r"Could not find '([^']+)'\s*\n\s*\nAvailable options in '([^']+)':\s*\n((?:\s+\S+\n?)+)", text)
    if match:
        options = ", ".join(o.strip() for o in match.group(3).split() if o.strip())
        wrong = match.group(1).rsplit("/", 1)[-1]
        return f"{match.group(2)}: unknown option '{wrong}'; allowed: {options}"
    match = re.search(r"Could not override '([^']+)'", text)
    if match:
        return f"{match.group(1)}: unknown key (add it with +{match.group(1)}=... only if you mean to)"
    match = re.search(r"Could not find '([^']+)'", text)
    if match:
        return f"unknown config '{match.group(1)}'"
    cause = ex.__cause__
    if cause is not None and not isinstance(ex, GanbenchError) and str(cause):
        inner = one_line_error(cause)
        first = text.strip().splitlines()[0] if text.strip() else type(ex).__name__
        return f"{first}: {inner}" if inner not in first else first
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    full_key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    first = lines[0] if lines else type(ex).__name__
    if isinstance(ex, GanbenchError):
        return first
    if full_key:
        return f"{full_key}: {first}"
    return f"{type(ex).__name__}: {first}"
