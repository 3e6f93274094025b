"""Structured-config helpers: a node merged into a dataclass schema, with every failure as one ConfigError line
naming the key. The bottom layer of configuration: ganbench/config.py and each component's own schema (archs,
augment, dynamics, the GMM lab) use it, and it imports nothing of ganbench but errors.
"""
import dataclasses
import typing
from typing import Any, Type, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import ConfigError, reword, unknown_key_message

T = TypeVar("T")


def _first_line(text: str) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


def structured(schema: Type[T], node: Any, prefix: str) -> T:
    """Merge ``node`` into ``schema`` and instantiate it, turning every failure into a one-line ConfigError.

    Range checks live in each schema's ``__post_init__`` and raise ConfigError with the key relative to
    the node; ``prefix`` (e.g. ``penalty``) makes it the full key.
    """
    allowed = [f.name for f in dataclasses.fields(schema)]
    if isinstance(node, DictConfig):
        node = resolved(node, prefix)
    if node is not None and not isinstance(node, dict):
        raise ConfigError(f"{prefix}: must be a mapping of {', '.join(allowed)} (got {node!r})")
    unknown = [k for k in (node or {}) if k not in allowed]
    if unknown:
        raise ConfigError(unknown_key_message(f"{prefix}.{unknown[0]}", allowed))
    check_containers(schema, node or {}, prefix)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node or {})
        return OmegaConf.to_object(merged)
    except ConfigError as err:
        raise ConfigError(f"{prefix}.{err}") from None
    except ConfigKeyError as err:
        raise ConfigError(unknown_key_message(f"{prefix}.{err.full_key}", allowed)) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = reword(_first_line(getattr(err, "msg", None) or err))
        raise ConfigError(f"{prefix}.{key}: {msg}") from None


# What a list field holds, by element type, and an example of one: for "must be a list of ..." lines.
_LIST_OF = {int: ("integers", "[1,2]"), float: ("numbers", "[0.5,0.9]"), str: ("names", "[a,b]")}


def check_containers(schema: Type[Any], node: dict, prefix: str) -> None:
    """A list- or mapping-typed field of ``schema`` (or of a schema nested in it) given a scalar: one line
    naming the key and the type expected, where OmegaConf would say "AnyNode is not a ListConfig" or
    "Cannot assign str to Dict[str, float]"."""
    try:
        hints = typing.get_type_hints(schema)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: OmegaConf's own check remains
        hints = {}
    for f in dataclasses.fields(schema):
        value, key = node.get(f.name), f"{prefix}.{f.name}"
        kind = hints.get(f.name, f.type)
        if value is None:
            continue
        origin = typing.get_origin(kind)
        if origin is list and not isinstance(value, list):
            what, example = _LIST_OF.get((typing.get_args(kind) or (None,))[0], ("values", "[a,b]"))
            raise ConfigError(f"{key}: must be a list of {what} such as {example} (got {value!r})")
        if origin is dict and not isinstance(value, dict):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            example = ", ".join(f"{k}: {v}" for k, v in default.items()) if default else "a: 1, b: 2"
            raise ConfigError(f"{key}: must be a mapping such as {{{example}}} (got {value!r})")
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            if not isinstance(value, dict):
                allowed = ", ".join(g.name for g in dataclasses.fields(kind))
                raise ConfigError(f"{key}: must be a mapping of {allowed} (got {value!r})")
            check_containers(kind, value, key)


def resolved(node: Any, prefix: str) -> Any:
    """``node`` as plain containers with interpolations resolved; a broken ``${...}`` is a ConfigError."""
    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        where = f"{prefix}.{key}" if key and prefix else (key or prefix or "config")
        raise ConfigError(f"{where}: cannot resolve interpolation ({_first_line(getattr(err, 'msg', None) or err)})"
                          ) from None


def positive(prefix: str = "", **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ConfigError(f"{prefix}{key}: must be > 0 (got {value})")


def at_least_one(prefix: str = "", **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ConfigError(f"{prefix}{key}: must be an integer >= 1 (got {value})")
