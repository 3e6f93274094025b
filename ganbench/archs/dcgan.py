"""DCGAN (Radford et al. 2015) for square images whose side is a power of two (32×32 by default).

G: z → 4×4×(2ⁿ⁻¹w) → ... → R×R×w·… → R×R×C, transposed 4×4 convolutions of stride 2, batch norm + ReLU
except the output, tanh output. D mirrors it: stride-2 4×4 convolutions, LeakyReLU(0.2), a norm layer
except on the first layer, linear output. For 32×32: G z → 4×4×4w → 8×8×2w → 16×16×w → 32×32×C.

Options of Salimans et al. 2016 (ganbench/archs/layers.py): ``g_norm: virtual_batch`` (virtual batch norm in
G) and ``minibatch_discrimination: B`` (a minibatch-discrimination layer before D's last layer, which then
becomes the equivalent linear layer on the flattened 4×4 features plus the B similarities).
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import ACTIVATIONS, FeatureTrunk, activation, check_minibatch_discrimination, dcgan_init
from .layers import MinibatchDiscrimination, VirtualBatchNorm, reference_latents, run_with_reference

D_NORMS = ("auto", "batch", "layer", "none")
G_NORMS = ("batch", "virtual_batch", "none")


@dataclass
class DCGANConfig:
    """Schema of ``conf/arch/dcgan.yaml``."""

    name: str = "dcgan"
    width: int = 64  # w: 64 in Radford et al., 128 in the WGAN-GP code
    z_dim: int = 100
    # D's norm: auto = batch norm unless a gradient penalty is active (then none); layer = LayerNorm over
    # (C,H,W) as in the WGAN-GP critic.
    d_norm: str = "auto"
    # G's norm: virtual_batch = virtual batch norm (Salimans et al. 2016) against a reference batch of
    # vbn_ref_size latents drawn once (ganbench/archs/layers.py); it is kept in G's state_dict.
    g_norm: str = "batch"
    vbn_ref_size: int = 64  # the paper gives no size; 64 = the DCGAN batch size (Radford et al.)
    g_activation: str = "relu"
    d_activation: str = "leaky_relu"
    g_constant_width: bool = False  # a "hard variant" of the DRAGAN paper §5.2.3: all G layers have w·2ⁿ⁻¹
    # Minibatch discrimination (Salimans et al. 2016): 0 = off, else B kernels of dimension C = mbd_dim;
    # the authors' CIFAR-10 code uses B=100, C=5.
    minibatch_discrimination: int = 0
    mbd_dim: int = 5

    def __post_init__(self) -> None:
        check_minibatch_discrimination(self.minibatch_discrimination, self.mbd_dim)
        for key, value in (("width", self.width), ("z_dim", self.z_dim), ("vbn_ref_size", self.vbn_ref_size)):
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
        bn = cfg.g_norm != "none"  # a norm follows every layer but the last: those need no bias
        layers = [nn.ConvTranspose2d(cfg.z_dim, widths[0], 4, 1, 0, bias=not bn)]
        for i in range(n):
            if cfg.g_norm == "batch":
                layers.append(nn.BatchNorm2d(widths[i]))
            elif cfg.g_norm == "virtual_batch":
                layers.append(VirtualBatchNorm(widths[i]))
            layers.append(activation(cfg.g_activation, "arch.g_activation"))
            out = widths[i + 1] if i + 1 < n else channels
            layers.append(nn.ConvTranspose2d(widths[i], out, 4, 2, 1, bias=not bn or i + 1 == n))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        # A buffer: it follows G to its device and is saved in (and restored from) G's state_dict; None
        # (no entry in the state_dict) without virtual batch norm.
        vbn = cfg.g_norm == "virtual_batch"
        self.register_buffer("z_ref", reference_latents(cfg.vbn_ref_size, cfg.z_dim) if vbn else None)

    def forward(self, z: Tensor) -> Tensor:
        z = z.view(z.shape[0], -1, 1, 1)
        if self.z_ref is None:
            return self.net(z)
        # Virtual batch norm: the reference batch leads the batch through every layer (its statistics
        # follow the current weights); only the examples' rows are returned.
        n_ref = self.z_ref.shape[0]
        h = torch.cat([self.z_ref.view(n_ref, -1, 1, 1).to(z.dtype), z])
        return run_with_reference(self.net, h, n_ref)[n_ref:]


class Discriminator(FeatureTrunk):
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
        kernels = cfg.minibatch_discrimination
        if kernels:
            # o(x) joins the flattened 4×4 features, so the last layer (a 4×4 convolution on 4×4 maps, i.e.
            # a linear map of the flattened features) becomes a linear layer on [f(x), o(x)].
            a = c_in * side * side
            layers += [nn.Flatten(), MinibatchDiscrimination(a, kernels, cfg.mbd_dim), nn.Linear(a + kernels, 1)]
        else:
            layers.append(nn.Conv2d(c_in, 1, 4, 1, 0))  # 4×4 → 1×1, linear output
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        self.name_features("conv")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()
