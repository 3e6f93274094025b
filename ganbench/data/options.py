"""Reading and checking dataset config values; every problem is a one-line ConfigError."""

from __future__ import annotations

from ganbench.errors import ConfigError


def number(cfg, key: str, default: float, *, positive: bool = True) -> float:
    """dataset.<key> as a float, > 0 (or >= 0 with positive=False)."""
    value = cfg.get(key, default)
    try:
        value = float(default if value is None else value)
    except (TypeError, ValueError):
        raise ConfigError(f"dataset.{key}: must be a number (got {value!r})") from None
    if value < 0 or (positive and value == 0) or value != value:
        raise ConfigError(f"dataset.{key}: must be a number {'> 0' if positive else '>= 0'} (got {value})")
    return value


def integer(cfg, key: str, default: int, allowed: tuple | None = None) -> int:
    """dataset.<key> as a positive int, optionally one of ``allowed``."""
    value = cfg.get(key, default)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
        raise ConfigError(f"dataset.{key}: must be an integer (got {value!r})")
    value = int(value)
    if value <= 0 or (allowed is not None and value not in allowed):
        expected = "one of " + ", ".join(map(str, allowed)) if allowed else "an integer > 0"
        raise ConfigError(f"dataset.{key}: must be {expected} (got {value})")
    return value


def split(cfg, default: str | None, *, any_name: bool = False) -> str | None:
    """dataset.split: train | test, or (folders, any_name=True) null or any sub-folder name."""
    value = cfg.get("split", default)
    if any_name:
        if value is None or (isinstance(value, str) and value and "/" not in value):
            return value
        raise ConfigError(f"dataset.split: must be null or a sub-folder name such as train or test (got {value!r})")
    if value not in ("train", "test"):
        raise ConfigError(f"dataset.split: must be train or test (got {value!r})")
    return value


def on_device(cfg) -> str:
    """dataset.on_device normalised to "auto" | "true" | "false"."""
    value = cfg.get("on_device", "auto")
    text = str(value).lower()
    if text in ("auto", "none"):
        return "auto"
    if text in ("true", "1", "yes"):
        return "true"
    if text in ("false", "0", "no"):
        return "false"
    raise ConfigError(f"dataset.on_device: must be auto, true or false (got {value!r})")


def workers(cfg) -> int | None:
    """dataset.decode_workers: None for auto (one per CPU core), else a positive int."""
    value = cfg.get("decode_workers", "auto")
    if value is None or value == "auto":
        return None
    return integer(cfg, "decode_workers", 1)
