"""The SNGAN "standard CNN" (Miyato et al. 2018, Table 3), for square images whose side is a multiple of 8
(32×32 for CIFAR-10: M_g = M/8 = 4). ``w`` = ``width`` (64 in the paper).

G (Table 3a): z ∈ ℝ¹²⁸ ~ N(0, I); Linear(z → M_g·M_g·8w), batch norm over those M_g·M_g·8w features, ReLU,
reshape to 8w × M_g × M_g; three 4×4 stride-2 transposed convolutions (8w → 4w → 2w → w; 512 → 256 → 128 → 64),
each followed by batch norm and ReLU; a 3×3 stride-1 convolution (w → C); tanh. The table does not list the
batch norm and ReLU after the dense layer; the authors' code (chainer-gan-lib ``DCGANGenerator``:
``relu(bn0(l0(z)))``) has them, and so do we. A layer followed by batch norm has no bias (the norm's shift
replaces it).

D (Table 3b), LeakyReLU with slope 0.1 after every convolution, no normalisation layer:
  conv3×3 s1 (C → w), conv4×4 s2 (w → w), conv3×3 s1 (w → 2w), conv4×4 s2 (2w → 2w),
  conv3×3 s1 (2w → 4w), conv4×4 s2 (4w → 4w), conv3×3 s1 (4w → 8w), Linear(M_g·M_g·8w → 1).
For w = 64: 64, 64, 128, 128, 256, 256, 512 channels, the table's. (The authors' code, chainer-gan-lib
``SNDCGANDiscriminator``, doubles one layer earlier, 64, 128, 128, 256, 256, 512, 512; we follow the paper's
table.) Spectral normalisation is the side key ``spectral_norm`` (objective=sngan turns it on for D), applied to
every convolution and the linear layer.

Initialisation: N(0, 0.02) weights, zero biases (the code's ``wscale=0.02``); batch-norm scales N(1, 0.02).
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor, nn

from ..errors import ConfigError
from .base import FeatureTrunk, apply_spectral_norm, dcgan_init

#: LeakyReLU's slope in D (Table 3b: "lReLU", α = 0.1).
D_SLOPE = 0.1


def _check(prefix: str, width: int, z_dim: Optional[int]) -> None:
    for key, value in (("width", width), ("z_dim", z_dim)):
        if value is not None and value < 1:
            raise ConfigError(f"{prefix}{key}: must be an integer >= 1 (got {value})")


@dataclass
class GConfig:
    """Schema of ``conf/arch/g/sngan.yaml``."""

    name: str = "sngan"
    width: int = 64  # w: the layers have 8w, 4w, 2w, w channels (512 ... 64 in Table 3a)
    z_dim: int = 128  # Table 3a: z ∈ ℝ¹²⁸
    spectral_norm: bool = False  # SN on G too (SAGAN, BigGAN); off in SNGAN

    def __post_init__(self) -> None:
        _check("", self.width, self.z_dim)


@dataclass
class DConfig:
    """Schema of ``conf/arch/d/sngan.yaml``."""

    name: str = "sngan"
    width: int = 64  # w: the convolutions have w, w, 2w, 2w, 4w, 4w, 8w channels (Table 3b)
    spectral_norm: bool = False  # the SNGAN D has it: objective=sngan sets arch.d.spectral_norm=true

    def __post_init__(self) -> None:
        _check("", self.width, None)


@dataclass
class SNGANConfig:
    """Schema of the pair node ``conf/arch/sngan.yaml``: ``width`` of both sides, G's ``z_dim``."""

    name: str = "sngan"
    width: int = 64
    z_dim: int = 128

    def __post_init__(self) -> None:
        _check("", self.width, self.z_dim)

    def sides(self) -> Tuple[GConfig, DConfig]:
        return GConfig(width=self.width, z_dim=self.z_dim), DConfig(width=self.width)


PairConfig = SNGANConfig


def fit_error(cfg, shape: Tuple[int, ...]) -> Optional[str]:
    if len(shape) != 3:
        return f"sngan needs image data (got points of shape {tuple(shape)})"
    if shape[1] != shape[2] or shape[1] < 8 or shape[1] % 8:
        return f"sngan needs square images whose side is a multiple of 8 (32 for CIFAR-10; got {shape[1]}×{shape[2]})"
    return None


class Generator(nn.Module):
    def __init__(self, cfg: GConfig, shape: Tuple[int, int, int]):
        super().__init__()
        err = fit_error(cfg, shape)
        if err:
            raise ConfigError(f"arch.g: {err}")
        channels, side, _ = shape
        w, self.z_dim, self.bottom = cfg.width, cfg.z_dim, side // 8
        self.input = nn.Sequential(nn.Linear(cfg.z_dim, self.bottom ** 2 * 8 * w, bias=False),
                                   nn.BatchNorm1d(self.bottom ** 2 * 8 * w), nn.ReLU())
        layers = []
        for c_in, c_out in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.Conv2d(w, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if cfg.spectral_norm:
            apply_spectral_norm(self)

    def forward(self, z: Tensor) -> Tensor:
        h = self.input(z.flatten(1))
        return self.net(h.view(z.shape[0], -1, self.bottom, self.bottom))


class Discriminator(FeatureTrunk):
    """Hidden activations ``conv1`` .. ``conv7`` (``features``, for feature matching), then the linear output."""

    def __init__(self, cfg: DConfig, shape: Tuple[int, int, int]):
        super().__init__()
        err = fit_error(cfg, shape)
        if err:
            raise ConfigError(f"arch.d: {err}")
        channels, side, _ = shape
        w = cfg.width
        plan = [(channels, w, 3, 1), (w, w, 4, 2), (w, 2 * w, 3, 1), (2 * w, 2 * w, 4, 2),
                (2 * w, 4 * w, 3, 1), (4 * w, 4 * w, 4, 2), (4 * w, 8 * w, 3, 1)]
        layers = []
        for c_in, c_out, k, stride in plan:
            layers += [nn.Conv2d(c_in, c_out, k, stride, 1), nn.LeakyReLU(D_SLOPE)]
        layers += [nn.Flatten(), nn.Linear(math.prod((8 * w, side // 8, side // 8)), 1)]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if cfg.spectral_norm:
            apply_spectral_norm(self.net)
        self.name_features("conv")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()


def generator(cfg: GConfig, shape: Tuple[int, ...]) -> nn.Module:
    return Generator(cfg, shape)


def discriminator(cfg: DConfig, shape: Tuple[int, ...]) -> nn.Module:
    return Discriminator(cfg, shape)
