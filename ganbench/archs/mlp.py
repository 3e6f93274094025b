"""Multi-layer perceptrons for G and D: for toy 2-D data, and the MLP "hard variants" on images."""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor, nn

from ..errors import ConfigError
from .base import ACTIVATIONS, FeatureTrunk, activation, check_minibatch_discrimination, dcgan_init
from .layers import Maxout, MinibatchDiscrimination

G_NORMS = ("none", "batch")


@dataclass
class MLPConfig:
    """Schema of ``conf/arch/mlp.yaml``."""

    name: str = "mlp"
    depth: int = 3  # hidden layers of G, and of D unless d_depth
    width: int = 128  # units per hidden layer (G's, and D's unless d_width; maxout units with d_maxout)
    # D's own depth and width when they differ from G's (PacGAN: G 4 × 400, D 3 × 200); null = depth, width.
    d_depth: Optional[int] = None
    d_width: Optional[int] = None
    activation: str = "relu"  # G's and D's hidden activation (D: leaky_relu is common too; not D's with d_maxout)
    z_dim: int = 2
    # G's norm after each hidden linear layer, before the activation: none, or batch (BatchNorm1d; the linear
    # layer then has no bias, which the norm's shift replaces). PacGAN's G: 4 × (FC 400 + BN + ReLU).
    g_norm: str = "none"
    # D's hidden layers as maxout layers (Goodfellow et al. 2013): 0 = off, else k >= 2 pieces per unit, each
    # layer Linear(n_in, width·k) then the max over each unit's k pieces (width units, no other activation).
    # PacGAN's D: 3 × maxout(200 units, 5 pieces) → linear.
    d_maxout: int = 0
    # Minibatch discrimination (Salimans et al. 2016) before D's last layer: 0 = off, else B kernels of
    # dimension C = mbd_dim (the authors' CIFAR-10 code: B=100, C=5).
    minibatch_discrimination: int = 0
    mbd_dim: int = 5

    def __post_init__(self) -> None:
        check_minibatch_discrimination(self.minibatch_discrimination, self.mbd_dim)
        for key in ("depth", "width", "z_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be an integer >= 1 (got {getattr(self, key)})")
        for key in ("d_depth", "d_width"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be null (the same as {key[2:]}) or an integer >= 1 "
                                  f"(got {getattr(self, key)})")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation: unknown activation '{self.activation}'; allowed: {', '.join(ACTIVATIONS)}")
        if self.g_norm not in G_NORMS:
            raise ConfigError(f"g_norm: unknown option '{self.g_norm}'; allowed: {', '.join(G_NORMS)}")
        if self.d_maxout < 0 or self.d_maxout == 1:
            raise ConfigError(f"d_maxout: must be 0 (off) or a number of pieces >= 2 (got {self.d_maxout})")


def _mlp(n_in: int, n_out: int, depth: int, width: int, act: str, norm: str = "none", pieces: int = 0) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units, then a linear output layer. Each hidden layer is
    Linear → [BatchNorm1d if norm=batch] → activation, or with ``pieces`` = k > 0 Linear(·, width·k) → Maxout(k)."""
    layers = []
    for i in range(depth):
        fan_in = n_in if i == 0 else width
        if pieces:
            layers += [nn.Linear(fan_in, width * pieces), Maxout(pieces)]
            continue
        layers.append(nn.Linear(fan_in, width, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(width))
        layers.append(activation(act, "arch.activation"))
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    #: forward takes any leading batch axes (replicas stack runs on a leading axis: ganbench/replicas.py);
    #: not with g_norm=batch, whose BatchNorm1d takes (B, C) only (replicas then run G under vmap).
    batched_forward = True

    def __init__(self, cfg: MLPConfig, shape: Tuple[int, ...]):
        super().__init__()
        self.z_dim = cfg.z_dim
        self.shape = tuple(shape)
        self.batched_forward = cfg.g_norm == "none"
        self.net = _mlp(cfg.z_dim, math.prod(shape), cfg.depth, cfg.width, cfg.activation, norm=cfg.g_norm)
        # Images live in [-1, 1]; points are unbounded.
        self.out = nn.Tanh() if len(shape) == 3 else nn.Identity()
        if len(shape) == 3:
            self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.net(z)).view(*z.shape[:-1], *self.shape)


class Discriminator(FeatureTrunk):
    """Hidden layers ``hidden1`` .. ``hidden{depth}`` (``features``; maxout layers with d_maxout), then a
    linear output; with minibatch discrimination the last hidden layer's B similarities o(x) join its
    features before the output. ``shape`` is D's input sample shape: the packed shape with pack > 1."""

    batched_forward = True

    def __init__(self, cfg: MLPConfig, shape: Tuple[int, ...]):
        super().__init__()
        self.sample_dims = len(shape)
        kernels = cfg.minibatch_discrimination
        width = cfg.d_width or cfg.width
        net = _mlp(math.prod(shape), 1, cfg.d_depth or cfg.depth, width, cfg.activation, pieces=cfg.d_maxout)
        if kernels:
            hidden = list(net)[:-1]  # the output layer is replaced below
            a = width
            self.net = nn.Sequential(*hidden, MinibatchDiscrimination(a, kernels, cfg.mbd_dim), nn.Linear(a + kernels, 1))
        else:
            self.net = net
        if len(shape) == 3:
            self.apply(dcgan_init)
        self.name_features("hidden")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(-self.sample_dims)).squeeze(-1)

    def features(self, x: Tensor):
        return super().features(x.flatten(-self.sample_dims))
