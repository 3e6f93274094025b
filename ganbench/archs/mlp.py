"""Multi-layer perceptrons for G and D: for toy 2-D data, and the MLP "hard variants" on images."""
import math
from dataclasses import dataclass
from typing import Tuple

from torch import Tensor, nn

from ..errors import ConfigError
from .base import ACTIVATIONS, FeatureTrunk, activation, check_minibatch_discrimination, dcgan_init
from .layers import MinibatchDiscrimination


@dataclass
class MLPConfig:
    """Schema of ``conf/arch/mlp.yaml``."""

    name: str = "mlp"
    depth: int = 3  # hidden layers in each of G and D
    width: int = 128  # units per hidden layer
    activation: str = "relu"  # G's and D's hidden activation (D: leaky_relu is common too)
    z_dim: int = 2
    # Minibatch discrimination (Salimans et al. 2016) before D's last layer: 0 = off, else B kernels of
    # dimension C = mbd_dim (the authors' CIFAR-10 code: B=100, C=5).
    minibatch_discrimination: int = 0
    mbd_dim: int = 5

    def __post_init__(self) -> None:
        check_minibatch_discrimination(self.minibatch_discrimination, self.mbd_dim)
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
    #: forward takes any leading batch axes (replicas stack runs on a leading axis: ganbench/replicas.py)
    batched_forward = True

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
        return self.out(self.net(z)).view(*z.shape[:-1], *self.shape)


class Discriminator(FeatureTrunk):
    """Hidden layers ``hidden1`` .. ``hidden{depth}`` (``features``), then a linear output; with minibatch
    discrimination the last hidden layer's B similarities o(x) join its features before the output."""

    batched_forward = True

    def __init__(self, cfg: MLPConfig, shape: Tuple[int, ...]):
        super().__init__()
        self.sample_dims = len(shape)
        kernels = cfg.minibatch_discrimination
        if kernels:
            hidden = list(_mlp(math.prod(shape), 1, cfg))[:-1]  # the output layer is replaced below
            a = cfg.width
            self.net = nn.Sequential(*hidden, MinibatchDiscrimination(a, kernels, cfg.mbd_dim), nn.Linear(a + kernels, 1))
        else:
            self.net = _mlp(math.prod(shape), 1, cfg)
        if len(shape) == 3:
            self.apply(dcgan_init)
        self.name_features("hidden")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(-self.sample_dims)).squeeze(-1)

    def features(self, x: Tensor):
        return super().features(x.flatten(-self.sample_dims))
