"""The WGAN-GP CIFAR-10 ResNet (Gulrajani et al. 2017, the released ``gan_cifar_resnet.py``), unconditional.

Pre-activation residual blocks of two 3×3 convolutions ("same" padding), ReLU; ``dim`` filters everywhere
(DIM_G = DIM_D = 128 in the reference); z ∈ ℝ¹²⁸.

- **Up block** (G): [norm, ReLU, nearest ×2 upsampling, conv3×3 (c_in → c_out), norm, ReLU, conv3×3] plus the
  shortcut [×2 upsampling, conv1×1]. (The reference's ``UpsampleConv`` tiles 4 copies of the input and applies
  ``depth_to_space``: nearest-neighbour upsampling.)
- **Down block** (D): [norm, ReLU, conv3×3 (c_in → c_in), norm, ReLU, conv3×3 (c_in → c_out), 2×2 mean pool]
  plus the shortcut [conv1×1, 2×2 mean pool] (``ConvMeanPool``).
- **Plain block**: [norm, ReLU, conv3×3, norm, ReLU, conv3×3] plus the identity shortcut (a conv1×1 when the
  widths differ, which they never do here).
- **Optimized first D block** (``OptimizedResBlockDisc1``): [conv3×3 (C → dim), ReLU, conv3×3, 2×2 mean pool] plus
  the shortcut [2×2 mean pool, conv1×1 (C → dim)]; no norm.

G: Linear(z_dim → 4·4·dim), reshape to dim×4×4, ``plain_blocks`` plain blocks at 4×4 (0 in the reference;
BogoNet's random depth), log₂(R) − 2 up blocks (3 for 32×32: 4 → 8 → 16 → 32), norm, ReLU, conv3×3 (dim → C),
tanh. Norm = batch norm (NORMALIZATION_G = True) or none.

D: the optimized block (R → R/2), down blocks until the maps are 8×8 (one for 32×32: 16 → 8), ``plain_blocks``
plain blocks (2 in the reference), ReLU, the mean over the spatial positions (``pool: sum``: their sum, as
SNGAN's ResNet D), Linear(dim → 1). Norm inside the
blocks = none (NORMALIZATION_D = False, the reference's setting) or layer (its alternative: LayerNorm over
(C, H, W) per sample, per-channel affine).

For 32×32 with the defaults that is exactly the reference: G = Linear, 3 up blocks, BN-ReLU-conv3×3-tanh;
D = optimized block, 1 down block, 2 plain blocks, ReLU, mean pool, Linear. Other square sides that are powers
of two >= 8 adapt as stated (more or fewer up/down blocks); any other size is refused in one line.

Initialisation as the reference's tflib: convolutions uniform with std √(4/(fan_in + fan_out)) for the
residual branch's convolutions ("he_init", = xavier_uniform with gain √2), √(2/(fan_in + fan_out)) for the
shortcuts and G's output convolution (Glorot); linear layers Glorot uniform; biases 0; norm scales 1, shifts 0.
fan_in = c_in·k², fan_out = c_out·k².

The SNGAN CIFAR-10 ResNet (Miyato et al. 2018, Appendix B.4, their code's ``SNResNetDiscriminator`` and
``ResNetGenerator``) is this network with other keys (``conf/arch/sngan_resnet.yaml``): G dim 256, D dim 128
with the same 4 blocks (the optimized one, 1 down block, 2 plain blocks), the sum pool (``pool: sum``) and
spectral normalisation on every layer of D (``spectral_norm``; objective=sngan sets it). Its code's
initialisation (Glorot uniform with gain √2 in the residual branch, 1 in the shortcuts) is the one above.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import apply_spectral_norm

G_NORMS = ("batch", "none")
D_NORMS = ("none", "layer")
POOLS = ("mean", "sum")


def _check(prefix: str, dim: int, z_dim: Optional[int], plain_blocks: int, norm: str, norms) -> None:
    for key, value in (("dim", dim), ("z_dim", z_dim)):
        if value is not None and value < 1:
            raise ConfigError(f"{prefix}{key}: must be an integer >= 1 (got {value})")
    if plain_blocks < 0:
        raise ConfigError(f"{prefix}plain_blocks: must be an integer >= 0 (got {plain_blocks})")
    if norm not in norms:
        raise ConfigError(f"{prefix}norm: unknown option '{norm}'; allowed: {', '.join(norms)}")


@dataclass
class GConfig:
    """Schema of ``conf/arch/g/resnet.yaml``."""

    name: str = "resnet"
    dim: int = 128  # DIM_G
    z_dim: int = 128
    norm: str = "batch"  # NORMALIZATION_G = True: batch norm; none
    plain_blocks: int = 0  # residual blocks at 4×4 before the up blocks (0 in the reference)
    spectral_norm: bool = False  # Miyato et al. 2018 on every convolution and linear layer (SAGAN/BigGAN's G SN)

    def __post_init__(self) -> None:
        _check("", self.dim, self.z_dim, self.plain_blocks, self.norm, G_NORMS)


@dataclass
class DConfig:
    """Schema of ``conf/arch/d/resnet.yaml``."""

    name: str = "resnet"
    dim: int = 128  # DIM_D
    norm: str = "none"  # NORMALIZATION_D = False; layer = its layer norm
    plain_blocks: int = 2  # plain residual blocks after the downsampling ones (2 in the reference)
    # The spatial reduction before the output layer: mean (WGAN-GP's reference) or sum (SNGAN's ResNet D,
    # Miyato et al.'s code: F.sum over the 8×8 positions, 64 × the mean for 32×32 inputs).
    pool: str = "mean"
    spectral_norm: bool = False  # Miyato et al. 2018 on every convolution and linear layer (the SNGAN D)

    def __post_init__(self) -> None:
        _check("", self.dim, None, self.plain_blocks, self.norm, D_NORMS)
        if self.pool not in POOLS:
            raise ConfigError(f"pool: unknown option '{self.pool}'; allowed: {', '.join(POOLS)}")


@dataclass
class ResNetConfig:
    """Schema of the pair node ``conf/arch/resnet.yaml``: ``dim`` for both sides, G's ``z_dim``."""

    name: str = "resnet"
    dim: int = 128
    z_dim: int = 128

    def __post_init__(self) -> None:
        _check("", self.dim, self.z_dim, 0, "none", ("none",))

    def sides(self) -> Tuple[GConfig, DConfig]:
        return GConfig(dim=self.dim, z_dim=self.z_dim), DConfig(dim=self.dim)


PairConfig = ResNetConfig


def fit_error(cfg, shape: Tuple[int, ...]) -> Optional[str]:
    if len(shape) != 3:
        return f"resnet needs image data (got points of shape {tuple(shape)})"
    side = shape[1]
    if shape[1] != shape[2] or side < 8 or 2 ** int(round(math.log2(side))) != side:
        return f"resnet needs dataset.resolution to be a power of two >= 8 (32 in the reference; got {side})"
    return None


def _conv(c_in: int, c_out: int, k: int, he: bool) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, k, 1, k // 2)
    nn.init.xavier_uniform_(conv.weight, gain=math.sqrt(2.0) if he else 1.0)
    nn.init.zeros_(conv.bias)
    return conv


def _linear(n_in: int, n_out: int) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class ResidualBlock(nn.Module):
    """shortcut(x) + residual(x); ``resample``: "up", "down" or None (see the module docstring)."""

    def __init__(self, c_in: int, c_out: int, resample: Optional[str], norm: str):
        super().__init__()
        self.resample = resample
        mid = c_in if resample == "down" else c_out
        up = [nn.Upsample(scale_factor=2, mode="nearest")] if resample == "up" else []
        pool = [nn.AvgPool2d(2)] if resample == "down" else []
        self.residual = nn.Sequential(
            _norm(norm, c_in), nn.ReLU(), *up, _conv(c_in, mid, 3, he=True),
            _norm(norm, mid), nn.ReLU(), _conv(mid, c_out, 3, he=True), *pool)
        if resample is None and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(*up, _conv(c_in, c_out, 1, he=False), *pool)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.residual(x)


class OptimizedBlock(nn.Module):
    """D's first block: conv3×3, ReLU, conv3×3, mean pool; shortcut mean pool, conv1×1; no norm."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.residual = nn.Sequential(_conv(c_in, c_out, 3, he=True), nn.ReLU(), _conv(c_out, c_out, 3, he=True),
                                      nn.AvgPool2d(2))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2), _conv(c_in, c_out, 1, he=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.residual(x)


class Generator(nn.Module):
    def __init__(self, cfg: GConfig, shape: Tuple[int, int, int]):
        super().__init__()
        err = fit_error(cfg, shape)
        if err:
            raise ConfigError(f"arch.g: {err}")
        channels, side, _ = shape
        self.z_dim, self.dim = cfg.z_dim, cfg.dim
        n_up = int(round(math.log2(side))) - 2
        self.input = _linear(cfg.z_dim, 4 * 4 * cfg.dim)
        blocks = [ResidualBlock(cfg.dim, cfg.dim, None, cfg.norm) for _ in range(cfg.plain_blocks)]
        blocks += [ResidualBlock(cfg.dim, cfg.dim, "up", cfg.norm) for _ in range(n_up)]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(_norm(cfg.norm, cfg.dim), nn.ReLU(), _conv(cfg.dim, channels, 3, he=False), nn.Tanh())
        if cfg.spectral_norm:
            apply_spectral_norm(self)

    def forward(self, z: Tensor) -> Tensor:
        h = self.input(z.flatten(1)).view(z.shape[0], self.dim, 4, 4)
        return self.out(self.blocks(h))


class Discriminator(nn.Module):
    """Also names its hidden activations for feature matching: ``block1`` .. ``blockN`` (each block's output)
    and ``pool`` (the mean-pooled ReLU features, the input of the output layer: the last hidden layer)."""

    def __init__(self, cfg: DConfig, shape: Tuple[int, int, int]):
        super().__init__()
        err = fit_error(cfg, shape)
        if err:
            raise ConfigError(f"arch.d: {err}")
        channels, side, _ = shape
        blocks: List[nn.Module] = [OptimizedBlock(channels, cfg.dim)]
        side //= 2
        while side > 8:
            blocks.append(ResidualBlock(cfg.dim, cfg.dim, "down", cfg.norm))
            side //= 2
        blocks += [ResidualBlock(cfg.dim, cfg.dim, None, cfg.norm) for _ in range(cfg.plain_blocks)]
        self.blocks = nn.Sequential(*blocks)
        self.relu = nn.ReLU()
        self.output = _linear(cfg.dim, 1)
        self.pool = cfg.pool
        self.feature_names = [f"block{i + 1}" for i in range(len(blocks))] + ["pool"]
        if cfg.spectral_norm:
            apply_spectral_norm(self)

    def _reduce(self, h: Tensor) -> Tensor:
        return h.sum((2, 3)) if self.pool == "sum" else h.mean((2, 3))

    def pooled(self, x: Tensor) -> Tensor:
        return self._reduce(self.relu(self.blocks(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.pooled(x)).flatten()

    def features(self, x: Tensor) -> Dict[str, Tensor]:
        out, h = {}, x
        for i, block in enumerate(self.blocks):
            h = block(h)
            out[f"block{i + 1}"] = h
        out["pool"] = self._reduce(self.relu(h))
        return out


def generator(cfg: GConfig, shape: Tuple[int, ...]) -> nn.Module:
    return Generator(cfg, shape)


def discriminator(cfg: DConfig, shape: Tuple[int, ...]) -> nn.Module:
    return Discriminator(cfg, shape)
