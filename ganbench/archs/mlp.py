"""Multi-layer perceptrons for G and D: for toy 2-D data, and the MLP "hard variants" on images."""
import math
from dataclasses import dataclass
from typing import Tuple

from torch import Tensor, nn

from ..errors import ConfigError
from .base import ACTIVATIONS, activation, dcgan_init


@dataclass
class MLPConfig:
    """Schema of ``conf/arch/mlp.yaml``."""

    name: str = "mlp"
    depth: int = 3  # hidden layers in each of G and D
    width: int = 128  # units per hidden layer
    activation: str = "relu"  # G's and D's hidden activation (D: leaky_relu is common too)
    z_dim: int = 2

    def __post_init__(self) -> None:
        for key in ("depth", "width", "z_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be an integer >= 1 (got {getattr(self, key)})")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation: unknown activation '{self.activation}'; allowed: {', '.join(ACTIVATIONS)}")


def _mlp(n_in: int, n_out: int, cfg: MLPConfig) -> nn.Sequential:
    layers = []
    for i in range(cfg.depth):
        layers += [nn.Linear(n_in if i == 0 else cfg.width, cfg.width), activation(cfg.activation, "arch.activation")]
    layers.append(nn.Linear(cfg.width if cfg.depth else n_in, n_out))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(self, cfg: MLPConfig, shape: Tuple[int, ...]):
        super().__init__()
        self.z_dim = cfg.z_dim
        self.shape = tuple(shape)
        self.net = _mlp(cfg.z_dim, math.prod(shape), cfg)
        # Images live in [-1, 1]; points are unbounded.
        self.out = nn.Tanh() if len(shape) == 3 else nn.Identity()
        if len(shape) == 3:
            self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.net(z)).view(z.shape[0], *self.shape)


class Discriminator(nn.Module):
    def __init__(self, cfg: MLPConfig, shape: Tuple[int, ...]):
        super().__init__()
        self.net = _mlp(math.prod(shape), 1, cfg)
        if len(shape) == 3:
            self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).flatten()
