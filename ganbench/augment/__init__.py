"""Differentiable augmentations of D's inputs, one class per file; ``conf/augment/*.yaml`` configure them."""
import sys
from typing import Any

from ..errors import ConfigError
from ..registry import discover
from .base import Augment

AUGMENTS = discover(sys.modules[__name__], Augment)


def build_augment(node: Any) -> Augment:
    """The augmentation a config's ``augment`` node names (a missing node: none). Raises ConfigError."""
    from omegaconf import DictConfig, OmegaConf

    from ..schema import structured

    if node is None:
        return AUGMENTS["none"]()
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    name = values.pop("name", None)
    if name not in AUGMENTS:
        raise ConfigError(f"augment.name: unknown augmentation {name!r}; allowed: {', '.join(AUGMENTS)}")
    return structured(AUGMENTS[name], values, "augment")


__all__ = ["Augment", "AUGMENTS", "build_augment"]
