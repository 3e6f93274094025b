"""DCGAN (Radford et al. 2015) for square images whose side is a power of two (32×32 by default).

G: z → 4×4×(2ⁿ⁻¹w) → ... → R×R×w·… → R×R×C, transposed 4×4 convolutions of stride 2, batch norm + ReLU
except the output, tanh output. D mirrors it: stride-2 4×4 convolutions, LeakyReLU(0.2), a norm layer
except on the first layer, linear output. For 32×32: G z → 4×4×4w → 8×8×2w → 16×16×w → 32×32×C.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor, nn

from ..errors import ConfigError
from .base import ACTIVATIONS, activation, dcgan_init

D_NORMS = ("auto", "batch", "layer", "none")
G_NORMS = ("batch", "none")


@dataclass
class DCGANConfig:
    """Schema of ``conf/arch/dcgan.yaml``."""

    name: str = "dcgan"
    width: int = 64  # w: 64 in Radford et al., 128 in the WGAN-GP code
    z_dim: int = 100
    # D's norm: auto = batch norm unless a gradient penalty is active (then none); layer = LayerNorm over
    # (C,H,W) as in the WGAN-GP critic.
    d_norm: str = "auto"
    g_norm: str = "batch"
    g_activation: str = "relu"
    d_activation: str = "leaky_relu"
    g_constant_width: bool = False  # a "hard variant" of the DRAGAN paper §5.2.3: all G layers have w·2ⁿ⁻¹

    def __post_init__(self) -> None:
        for key, value in (("width", self.width), ("z_dim", self.z_dim)):
            if value < 1:
                raise ConfigError(f"{key}: must be an integer >= 1 (got {value})")
        if self.d_norm not in D_NORMS:
            raise ConfigError(f"d_norm: unknown option '{self.d_norm}'; allowed: {', '.join(D_NORMS)}")
        if self.g_norm not in G_NORMS:
            raise ConfigError(f"g_norm: unknown option '{self.g_norm}'; allowed: {', '.join(G_NORMS)}")
        for key in ("g_activation", "d_activation"):
            if getattr(self, key) not in ACTIVATIONS:
                raise ConfigError(f"{key}: unknown activation '{getattr(self, key)}'; allowed: {', '.join(ACTIVATIONS)}")


def _num_upsamplings(resolution: int) -> int:
    n = int(round(math.log2(resolution))) - 2
    if resolution < 8 or 2 ** (n + 2) != resolution:
        raise ConfigError(f"arch=dcgan: dataset.resolution must be a power of two >= 8 (got {resolution})")
    return n


def _d_norm_layer(kind: str, channels: int, side: int) -> Optional[nn.Module]:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # normalises over (C, H, W) per sample, with per-channel affine
    return None


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig, shape: Tuple[int, int, int]):
        super().__init__()
        channels, resolution, _ = shape
        n = _num_upsamplings(resolution)
        self.z_dim = cfg.z_dim
        widths = [cfg.width * 2 ** (n - 1 - i) for i in range(n)]
        if cfg.g_constant_width:
            widths = [widths[0]] * n
        bn = cfg.g_norm == "batch"
        layers = [nn.ConvTranspose2d(cfg.z_dim, widths[0], 4, 1, 0, bias=not bn)]
        for i in range(n):
            if bn:
                layers.append(nn.BatchNorm2d(widths[i]))
            layers.append(activation(cfg.g_activation, "arch.g_activation"))
            out = widths[i + 1] if i + 1 < n else channels
            layers.append(nn.ConvTranspose2d(widths[i], out, 4, 2, 1, bias=not bn or i + 1 == n))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig, shape: Tuple[int, int, int], norm: str):
        super().__init__()
        channels, resolution, _ = shape
        n = _num_upsamplings(resolution)
        layers = []
        c_in, side = channels, resolution
        for i in range(n):
            c_out = cfg.width * 2**i
            norm_layer = None if i == 0 else _d_norm_layer(norm, c_out, side // 2)
            layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm_layer is None))
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(activation(cfg.d_activation, "arch.d_activation"))
            c_in, side = c_out, side // 2
        layers.append(nn.Conv2d(c_in, 1, 4, 1, 0))  # 4×4 → 1×1, linear output
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()
