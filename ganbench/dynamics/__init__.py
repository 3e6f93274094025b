"""The game step: who is trained, in what order and how. One class per file; ``conf/dynamics/*.yaml``
configure them (``dynamics=alternating`` is the default)."""
import sys

from ..registry import discover
from .base import Game, Players

DYNAMICS = discover(sys.modules[__name__], Game)

__all__ = ["DYNAMICS", "Game", "Players"]


def build_dynamics(node) -> Game:
    """The ``dynamics`` config node as its typed, validated Game (not yet bound to players)."""
    from omegaconf import OmegaConf

    from ..schema import structured
    from ..errors import ConfigError

    values = dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {"name": "alternating"}
    name = values.pop("name", None)
    if name not in DYNAMICS:
        raise ConfigError(f"dynamics.name: unknown dynamics '{name}'; allowed: {', '.join(DYNAMICS)}")
    return structured(DYNAMICS[name], values, "dynamics")
