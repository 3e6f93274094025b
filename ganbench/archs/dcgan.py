"""DCGAN (Radford et al. 2015) for square images whose side is a power of two (32×32 by default).

G: z → 4×4×(2ⁿ⁻¹w) → ... → R×R×w·… → R×R×C, transposed convolutions of stride 2 (4×4 kernels, or 5×5 with
``kernel: 5``, the size of Radford et al.'s TensorFlow code), batch norm + ReLU except the output, tanh
output. D mirrors it: stride-2 convolutions, LeakyReLU(0.2), a norm layer except on the first layer, a linear
4×4 → 1×1 output. For 32×32: G z → 4×4×4w → 8×8×2w → 16×16×w → 32×32×C.

Each side has its own schema (``GConfig``: ``conf/arch/g/dcgan.yaml``, ``DConfig``: ``conf/arch/d/dcgan.yaml``);
``DCGANConfig`` is the pair node ``conf/arch/dcgan.yaml`` (one key for both sides, such as ``width``, or
``g_``/``d_`` prefixed keys for one), and ``DCGANConfig.sides()`` maps it to the two side configs exactly as
the side YAML files read it (``${gb.shared:...}``; ganbench/archs/__init__.py).

Options of Salimans et al. 2016 (ganbench/archs/layers.py): ``g_norm: virtual_batch`` (virtual batch norm in
G) and ``minibatch_discrimination: B`` (a minibatch-discrimination layer before D's last layer, which then
becomes the equivalent linear layer on the flattened 4×4 features plus the B similarities).
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import ACTIVATIONS, FeatureTrunk, activation, apply_spectral_norm, check_minibatch_discrimination, dcgan_init
from .layers import MinibatchDiscrimination, VirtualBatchNorm, reference_latents, run_with_reference

D_NORMS = ("auto", "batch", "layer", "none")
G_NORMS = ("batch", "virtual_batch", "none")
KERNELS = (4, 5)


def _check(prefix: str = "", **fields) -> None:
    """The checks both sides share: sizes >= 1, a known activation, a supported kernel size."""
    for key in ("width", "z_dim", "vbn_ref_size"):
        if key in fields and fields[key] < 1:
            raise ConfigError(f"{prefix}{key}: must be an integer >= 1 (got {fields[key]})")
    for key in ("activation", "g_activation", "d_activation"):
        if key in fields and fields[key] not in ACTIVATIONS:
            raise ConfigError(f"{prefix}{key}: unknown activation '{fields[key]}'; allowed: {', '.join(ACTIVATIONS)}")
    if "kernel" in fields and fields["kernel"] not in KERNELS:
        raise ConfigError(f"{prefix}kernel: must be 4 or 5 (the size of the stride-2 convolutions; got {fields['kernel']})")


def _check_option(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown option '{value}'; allowed: {', '.join(allowed)}")


@dataclass
class GConfig:
    """Schema of ``conf/arch/g/dcgan.yaml``: a DCGAN generator."""

    name: str = "dcgan"
    width: int = 64  # w: 64 in Radford et al., 128 in the WGAN-GP code
    z_dim: int = 100
    # batch, virtual_batch (Salimans et al. 2016: against a reference batch of vbn_ref_size latents drawn
    # once, kept in G's state_dict) or none (a "hard variant" of the DRAGAN paper §5.2.3).
    norm: str = "batch"
    vbn_ref_size: int = 64  # the paper gives no size; 64 = the DCGAN batch size (Radford et al.)
    activation: str = "relu"
    constant_width: bool = False  # every layer has the first layer's w·2ⁿ⁻¹ filters (DRAGAN paper §5.2.3)
    kernel: int = 4  # the stride-2 transposed convolutions: 4×4 (padding 1) or 5×5 (padding 2, output padding 1)
    # Spectral normalisation (Miyato et al. 2018) of every (transposed) convolution, batch norm kept: G's SN
    # as SAGAN and BigGAN use it (base.apply_spectral_norm).
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        _check(width=self.width, z_dim=self.z_dim, vbn_ref_size=self.vbn_ref_size, activation=self.activation,
               kernel=self.kernel)
        _check_option("norm", self.norm, G_NORMS)


@dataclass
class DConfig:
    """Schema of ``conf/arch/d/dcgan.yaml``: a DCGAN discriminator."""

    name: str = "dcgan"
    width: int = 64
    # auto = batch norm unless a gradient penalty is active (then none); layer = LayerNorm over (C,H,W) as in
    # the WGAN-GP critic; batch with a gradient penalty is warned about.
    norm: str = "auto"
    activation: str = "leaky_relu"
    kernel: int = 4  # the stride-2 convolutions: 4×4 (padding 1) or 5×5 (padding 2)
    # Minibatch discrimination (Salimans et al. 2016): 0 = off, else B kernels of dimension C = mbd_dim;
    # the authors' CIFAR-10 code uses B=100, C=5.
    minibatch_discrimination: int = 0
    mbd_dim: int = 5
    # Spectral normalisation (Miyato et al. 2018) of every convolution and linear layer (not of minibatch
    # discrimination's T); norm=auto then resolves to none, as in Miyato et al.'s discriminators.
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        check_minibatch_discrimination(self.minibatch_discrimination, self.mbd_dim)
        _check(width=self.width, activation=self.activation, kernel=self.kernel)
        _check_option("norm", self.norm, D_NORMS)


@dataclass
class DCGANConfig:
    """Schema of the pair node ``conf/arch/dcgan.yaml`` (and of the pairs built on it): the keys both DCGAN
    sides of the pair read. ``sides()`` gives the side configs they make."""

    name: str = "dcgan"
    width: int = 64  # w of G and D
    z_dim: int = 100
    d_norm: str = "auto"
    g_norm: str = "batch"
    vbn_ref_size: int = 64
    g_activation: str = "relu"
    d_activation: str = "leaky_relu"
    g_constant_width: bool = False
    kernel: int = 4
    minibatch_discrimination: int = 0
    mbd_dim: int = 5

    def __post_init__(self) -> None:
        check_minibatch_discrimination(self.minibatch_discrimination, self.mbd_dim)
        _check(width=self.width, z_dim=self.z_dim, vbn_ref_size=self.vbn_ref_size, g_activation=self.g_activation,
               d_activation=self.d_activation, kernel=self.kernel)
        _check_option("d_norm", self.d_norm, D_NORMS)
        _check_option("g_norm", self.g_norm, G_NORMS)

    def sides(self) -> Tuple[GConfig, DConfig]:
        return (GConfig(width=self.width, z_dim=self.z_dim, norm=self.g_norm, vbn_ref_size=self.vbn_ref_size,
                        activation=self.g_activation, constant_width=self.g_constant_width, kernel=self.kernel),
                DConfig(width=self.width, norm=self.d_norm, activation=self.d_activation, kernel=self.kernel,
                        minibatch_discrimination=self.minibatch_discrimination, mbd_dim=self.mbd_dim))


PairConfig = DCGANConfig


def _num_upsamplings(resolution: int) -> int:
    n = int(round(math.log2(resolution))) - 2 if resolution > 0 else -1
    if resolution < 8 or 2 ** (n + 2) != resolution:
        raise ConfigError(f"arch=dcgan: dataset.resolution must be a power of two >= 8 (got {resolution})")
    return n


def fit_error(cfg, shape: Tuple[int, ...]) -> Optional[str]:
    """Why a DCGAN side cannot take samples of ``shape``, or None: square images whose side is a power of two >= 8."""
    if len(shape) != 3:
        return f"dcgan needs image data (got points of shape {tuple(shape)})"
    side = shape[1]
    if shape[1] != shape[2] or side < 8 or 2 ** int(round(math.log2(side))) != side:
        return f"dcgan needs dataset.resolution to be a power of two >= 8 (got {side})"
    return None


def _d_norm_layer(kind: str, channels: int) -> Optional[nn.Module]:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # normalises over (C, H, W) per sample, with per-channel affine
    return None


def _stride2(kernel: int) -> Tuple[int, int]:
    """(padding, output padding) of a stride-2 (transposed) convolution that exactly halves (doubles) an even side."""
    return (1, 0) if kernel == 4 else (2, 1)


class Generator(nn.Module):
    def __init__(self, cfg: Union[GConfig, DCGANConfig], shape: Tuple[int, int, int]):
        super().__init__()
        if isinstance(cfg, DCGANConfig):
            cfg = cfg.sides()[0]
        channels, resolution, _ = shape
        n = _num_upsamplings(resolution)
        self.z_dim = cfg.z_dim
        widths = [cfg.width * 2 ** (n - 1 - i) for i in range(n)]
        if cfg.constant_width:
            widths = [widths[0]] * n
        pad, out_pad = _stride2(cfg.kernel)
        bn = cfg.norm != "none"  # a norm follows every layer but the last: those need no bias
        layers = [nn.ConvTranspose2d(cfg.z_dim, widths[0], 4, 1, 0, bias=not bn)]  # 1×1 → 4×4
        for i in range(n):
            if cfg.norm == "batch":
                layers.append(nn.BatchNorm2d(widths[i]))
            elif cfg.norm == "virtual_batch":
                layers.append(VirtualBatchNorm(widths[i]))
            layers.append(activation(cfg.activation, "arch.g.activation"))
            out = widths[i + 1] if i + 1 < n else channels
            layers.append(nn.ConvTranspose2d(widths[i], out, cfg.kernel, 2, pad, output_padding=out_pad,
                                             bias=not bn or i + 1 == n))
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if cfg.spectral_norm:
            apply_spectral_norm(self.net)
        # A buffer: it follows G to its device and is saved in (and restored from) G's state_dict; None
        # (no entry in the state_dict) without virtual batch norm.
        vbn = cfg.norm == "virtual_batch"
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
    """``norm``: the norm layer kind (batch, layer, none); default the config's, which must not be ``auto``
    (the arch builder resolves auto from the penalty: ganbench/archs/__init__.py)."""

    def __init__(self, cfg: Union[DConfig, DCGANConfig], shape: Tuple[int, int, int], norm: Optional[str] = None):
        super().__init__()
        if isinstance(cfg, DCGANConfig):
            cfg = cfg.sides()[1]
        norm = cfg.norm if norm is None else norm
        if norm == "auto":
            raise ValueError("dcgan.Discriminator: resolve norm=auto first (batch, or none with a gradient penalty)")
        channels, resolution, _ = shape
        n = _num_upsamplings(resolution)
        pad, _ = _stride2(cfg.kernel)
        layers = []
        c_in, side = channels, resolution
        for i in range(n):
            c_out = cfg.width * 2**i
            norm_layer = None if i == 0 else _d_norm_layer(norm, c_out)
            layers.append(nn.Conv2d(c_in, c_out, cfg.kernel, 2, pad, bias=norm_layer is None))
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(activation(cfg.activation, "arch.d.activation"))
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
        if cfg.spectral_norm:
            apply_spectral_norm(self.net)
        self.name_features("conv")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()


def generator(cfg: GConfig, shape: Tuple[int, ...]) -> nn.Module:
    return Generator(cfg, shape)


def discriminator(cfg: DConfig, shape: Tuple[int, ...]) -> nn.Module:
    return Discriminator(cfg, shape)
