"""Multi-layer perceptrons for G and D: for toy 2-D data, and the MLP "hard variants" on images.

Each side has its own schema (``GConfig``: ``conf/arch/g/mlp.yaml``, ``DConfig``: ``conf/arch/d/mlp.yaml``);
``MLPConfig`` is the pair node ``conf/arch/mlp.yaml`` (one ``depth``/``width``/``activation`` for both
sides, ``d_depth``/``d_width`` for D's own), and ``MLPConfig.sides()`` maps it to the two side configs
exactly as the side YAML files read it (``${gb.shared:...}``; ganbench/archs/__init__.py).

A hidden layer is Linear → [BatchNorm1d, G only] → activation, or (D, ``maxout: k``) Linear(·, width·k) →
Maxout(k); the output layer is linear (tanh after it for G on images, whose data live in [-1, 1]). ``widths``
gives every hidden layer its own width (BogoNet's MLPs: ganbench/archs/bogonet.py).
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

from torch import Tensor, nn

from ..errors import ConfigError
from .base import ACTIVATIONS, FeatureTrunk, activation, apply_spectral_norm, check_minibatch_discrimination, dcgan_init
from .layers import Maxout, MinibatchDiscrimination

G_NORMS = ("none", "batch")
INITS = ("auto", "dcgan", "torch", "he_normal")


def _check_common(depth: int, width: int, widths: Optional[List[int]], act: str, init: str, act_key: str) -> None:
    for key, value in (("depth", depth), ("width", width)):
        if value < 1:
            raise ConfigError(f"{key}: must be an integer >= 1 (got {value})")
    if widths is not None and (not widths or any(not isinstance(w, int) or w < 1 for w in widths)):
        raise ConfigError(f"widths: must be null (depth layers of width units) or a non-empty list of integers >= 1 "
                          f"(got {list(widths)})")
    if act not in ACTIVATIONS:
        raise ConfigError(f"{act_key}: unknown activation '{act}'; allowed: {', '.join(ACTIVATIONS)}")
    if init not in INITS:
        raise ConfigError(f"init: unknown option '{init}'; allowed: {', '.join(INITS)}")


@dataclass
class GConfig:
    """Schema of ``conf/arch/g/mlp.yaml``: an MLP generator."""

    name: str = "mlp"
    depth: int = 3  # hidden layers
    width: int = 128  # units per hidden layer
    widths: Optional[List[int]] = None  # per-layer widths (replaces depth and width); null = depth × width
    activation: str = "relu"
    z_dim: int = 100  # arch=mlp sets 2 (its toy data); 100 = DCGAN's, for images
    # After each hidden linear layer, before the activation: none, or batch (BatchNorm1d; the linear layer then
    # has no bias, which the norm's shift replaces). PacGAN's G: 4 × (FC 400 + BN + ReLU).
    norm: str = "none"
    # Weight init: auto = dcgan on images, torch on points; dcgan = N(0, 0.02); torch = PyTorch's default;
    # he_normal = N(0, 2/fan_in), the DRAGAN authors' MNIST notebook ("xavier_init"). Biases 0 except torch.
    init: str = "auto"
    # Spectral normalisation (Miyato et al. 2018) of every linear layer, the output layer included.
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        _check_common(self.depth, self.width, self.widths, self.activation, self.init, "activation")
        if self.z_dim < 1:
            raise ConfigError(f"z_dim: must be an integer >= 1 (got {self.z_dim})")
        if self.norm not in G_NORMS:
            raise ConfigError(f"norm: unknown option '{self.norm}'; allowed: {', '.join(G_NORMS)}")

    @property
    def hidden(self) -> List[int]:
        return list(self.widths) if self.widths is not None else [self.width] * self.depth


@dataclass
class DConfig:
    """Schema of ``conf/arch/d/mlp.yaml``: an MLP discriminator."""

    name: str = "mlp"
    depth: int = 3
    width: int = 128  # units per hidden layer (maxout units with maxout)
    widths: Optional[List[int]] = None
    activation: str = "leaky_relu"  # (not used with maxout); arch=mlp gives its own (relu)
    # Maxout layers (Goodfellow et al. 2013): 0 = off, else k >= 2 pieces per unit, each layer
    # Linear(n_in, width·k) then the max over each unit's k pieces. PacGAN's D: 3 × maxout(200, 5) → linear.
    maxout: int = 0
    # Minibatch discrimination (Salimans et al. 2016) before D's last layer: 0 = off, else B kernels of
    # dimension C = mbd_dim (the authors' CIFAR-10 code: B=100, C=5).
    minibatch_discrimination: int = 0
    mbd_dim: int = 5
    init: str = "auto"
    # Spectral normalisation (Miyato et al. 2018) of every linear layer: the hidden ones (maxout's included)
    # and, our choice where the paper has no MLP, the output layer too, as every layer of its CNNs
    # (minibatch discrimination's T is not normalised).
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        check_minibatch_discrimination(self.minibatch_discrimination, self.mbd_dim)
        _check_common(self.depth, self.width, self.widths, self.activation, self.init, "activation")
        if self.maxout < 0 or self.maxout == 1:
            raise ConfigError(f"maxout: must be 0 (off) or a number of pieces >= 2 (got {self.maxout})")

    @property
    def hidden(self) -> List[int]:
        return list(self.widths) if self.widths is not None else [self.width] * self.depth


@dataclass
class MLPConfig:
    """Schema of the pair node ``conf/arch/mlp.yaml`` (and of the pairs built on it, e.g. mlp1)."""

    name: str = "mlp"
    depth: int = 3  # hidden layers of G, and of D unless d_depth
    width: int = 128  # units per hidden layer (G's, and D's unless d_width; maxout units with d_maxout)
    # D's own depth and width when they differ from G's (PacGAN: G 4 × 400, D 3 × 200); null = depth, width.
    d_depth: Optional[int] = None
    d_width: Optional[int] = None
    activation: str = "relu"  # G's and D's hidden activation (G's only with d_maxout)
    z_dim: int = 2
    g_norm: str = "none"
    d_maxout: int = 0
    minibatch_discrimination: int = 0
    mbd_dim: int = 5
    init: str = "auto"  # both sides' weight init (GConfig.init)

    def __post_init__(self) -> None:
        check_minibatch_discrimination(self.minibatch_discrimination, self.mbd_dim)
        _check_common(self.depth, self.width, None, self.activation, self.init, "activation")
        if self.z_dim < 1:
            raise ConfigError(f"z_dim: must be an integer >= 1 (got {self.z_dim})")
        for key in ("d_depth", "d_width"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be null (the same as {key[2:]}) or an integer >= 1 "
                                  f"(got {getattr(self, key)})")
        if self.g_norm not in G_NORMS:
            raise ConfigError(f"g_norm: unknown option '{self.g_norm}'; allowed: {', '.join(G_NORMS)}")
        if self.d_maxout < 0 or self.d_maxout == 1:
            raise ConfigError(f"d_maxout: must be 0 (off) or a number of pieces >= 2 (got {self.d_maxout})")

    def sides(self) -> Tuple[GConfig, DConfig]:
        return (GConfig(depth=self.depth, width=self.width, activation=self.activation, z_dim=self.z_dim,
                        norm=self.g_norm, init=self.init),
                DConfig(depth=self.d_depth or self.depth, width=self.d_width or self.width, activation=self.activation,
                        maxout=self.d_maxout, minibatch_discrimination=self.minibatch_discrimination,
                        mbd_dim=self.mbd_dim, init=self.init))


PairConfig = MLPConfig


def fit_error(cfg, shape: Tuple[int, ...]) -> Optional[str]:
    """An MLP takes samples of any shape (flattened)."""
    return None


def _mlp(n_in: int, n_out: int, hidden: List[int], act: str, norm: str = "none", pieces: int = 0) -> nn.Sequential:
    """Hidden layers of ``hidden[i]`` units, then a linear output layer. Each hidden layer is
    Linear → [BatchNorm1d if norm=batch] → activation, or with ``pieces`` = k > 0 Linear(·, width·k) → Maxout(k)."""
    layers = []
    fan_in = n_in
    for width in hidden:
        if pieces:
            layers += [nn.Linear(fan_in, width * pieces), Maxout(pieces)]
        else:
            layers.append(nn.Linear(fan_in, width, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation(act, "arch.activation"))
        fan_in = width
    layers.append(nn.Linear(fan_in, n_out))
    return nn.Sequential(*layers)


def he_normal_init(module: nn.Module) -> None:
    """The DRAGAN authors' MNIST notebook ("xavier_init"): weights ~ N(0, 2/fan_in), biases 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / module.in_features))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _initialise(net: nn.Module, init: str, image: bool) -> None:
    if init == "auto":
        init = "dcgan" if image else "torch"
    if init == "dcgan":
        net.apply(dcgan_init)
    elif init == "he_normal":
        net.apply(he_normal_init)


class Generator(nn.Module):
    #: forward takes any leading batch axes (replicas stack runs on a leading axis: ganbench/replicas.py);
    #: not with g_norm=batch, whose BatchNorm1d takes (B, C) only (replicas then run G under vmap).
    batched_forward = True

    def __init__(self, cfg: Union[GConfig, MLPConfig], shape: Tuple[int, ...]):
        super().__init__()
        if isinstance(cfg, MLPConfig):
            cfg = cfg.sides()[0]
        self.z_dim = cfg.z_dim
        self.shape = tuple(shape)
        self.batched_forward = cfg.norm == "none"
        self.net = _mlp(cfg.z_dim, math.prod(shape), cfg.hidden, cfg.activation, norm=cfg.norm)
        # Images live in [-1, 1]; points are unbounded.
        self.out = nn.Tanh() if len(shape) == 3 else nn.Identity()
        _initialise(self, cfg.init, len(shape) == 3)
        if cfg.spectral_norm:
            apply_spectral_norm(self.net)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.net(z)).view(*z.shape[:-1], *self.shape)


class Discriminator(FeatureTrunk):
    """Hidden layers ``hidden1`` .. ``hidden{depth}`` (``features``; maxout layers with maxout), then a
    linear output; with minibatch discrimination the last hidden layer's B similarities o(x) join its
    features before the output. ``shape`` is D's input sample shape: the packed shape with pack > 1."""

    batched_forward = True

    def __init__(self, cfg: Union[DConfig, MLPConfig], shape: Tuple[int, ...]):
        super().__init__()
        if isinstance(cfg, MLPConfig):
            cfg = cfg.sides()[1]
        self.sample_dims = len(shape)
        kernels = cfg.minibatch_discrimination
        hidden = cfg.hidden
        net = _mlp(math.prod(shape), 1, hidden, cfg.activation, pieces=cfg.maxout)
        if kernels:
            a = hidden[-1]
            self.net = nn.Sequential(*list(net)[:-1], MinibatchDiscrimination(a, kernels, cfg.mbd_dim),
                                     nn.Linear(a + kernels, 1))
        else:
            self.net = net
        _initialise(self, cfg.init, len(shape) == 3)
        if cfg.spectral_norm:
            apply_spectral_norm(self.net)
        self.name_features("hidden")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(-self.sample_dims)).squeeze(-1)

    def features(self, x: Tensor):
        return super().features(x.flatten(-self.sample_dims))


def generator(cfg: GConfig, shape: Tuple[int, ...]) -> nn.Module:
    return Generator(cfg, shape)


def discriminator(cfg: DConfig, shape: Tuple[int, ...]) -> nn.Module:
    return Discriminator(cfg, shape)
