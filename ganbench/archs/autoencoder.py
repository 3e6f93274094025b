"""An autoencoder discriminator for energy-based GANs (EBGAN, Zhao, Mathieu & LeCun 2017).

D(x) = (1/d) ‖Dec(Enc(x)) - x‖²: the per-sample mean squared reconstruction error over the d dimensions of
x (the paper's energy; its code uses the mean squared error). D(x) ≥ 0; it is low on the data and high
elsewhere. The network is built as the mirror of the arch's classifier D, so every arch option that shapes
D (width, depth, activation, norm — none under a gradient penalty) shapes the autoencoder the same way:

- Enc = D's layers with D's 1-wide output layer replaced by a ``code_dim``-wide one of the same kind, the
  code layer (no activation after it: a linear bottleneck). arch=mlp: Linear(d, w), act, ..., Linear(w, code);
  arch=dcgan: the stride-2 4×4 convolutions (norm except on the first, LeakyReLU), then a 4×4 convolution
  on the 4×4 map to a 1×1×code code, as the paper's DCGAN-style encoder.
- Dec mirrors Enc layer by layer (Linear(a, b) → Linear(b, a), Conv2d(a, b, k, s, p) →
  ConvTranspose2d(b, a, k, s, p), in reverse order), with D's norm kind and activation after every layer
  but the last, as the DCGAN generator; arch=dcgan: code → 4×4 → ... → R×R×C. The output is linear (no
  tanh): the energy is a distance, so it needs no squashing.
"""
from __future__ import annotations

import copy
from typing import List, Optional

from torch import Tensor, nn

from ..errors import ConfigError
from .base import ACTIVATIONS, dcgan_init, mirror_of_discriminator


def _mirror(layer: nn.Module, bias: bool) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.out_features, layer.in_features, bias=bias)
    # A convolution of kernel k, stride s, padding p maps an even side n to n/s; its transpose gives
    # (n/s − 1)s − 2p + k, which is n again with the output padding (k − 2p) mod s (0 for DCGAN's 4×4
    # kernels with padding 1, 1 for 5×5 kernels with padding 2).
    (k, _), (st, _), (pad, _) = layer.kernel_size, layer.stride, layer.padding
    return nn.ConvTranspose2d(layer.out_channels, layer.in_channels, layer.kernel_size, layer.stride,
                              layer.padding, output_padding=(k - 2 * pad) % st, bias=bias)


def _norm_like(norm: Optional[nn.Module], channels: int) -> Optional[nn.Module]:
    """A fresh norm of ``norm``'s kind for ``channels`` (the norms arch=dcgan's D can have)."""
    if isinstance(norm, nn.BatchNorm2d):
        return nn.BatchNorm2d(channels)
    if isinstance(norm, nn.GroupNorm):
        return nn.GroupNorm(norm.num_groups, channels)
    return None


class AutoencoderD(nn.Module):
    """D(x) = mean over dimensions of (Dec(Enc(x)) - x)², shape (B,); ``encode(x)`` = Enc(x) flattened, (B, code).

    Build it with ``from_discriminator``. The pull-away term of EBGAN reads the codes with ``encode``.
    """

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, flatten_input: bool):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.flatten_input = flatten_input  # an MLP autoencoder sees images as flat vectors

    @classmethod
    def from_discriminator(cls, D: nn.Module, code_dim: int, image: bool) -> "AutoencoderD":
        """The autoencoder mirroring the classifier ``D`` (arch=mlp's or arch=dcgan's) with a ``code_dim``-wide
        code; re-initialised as the arch initialises D (DCGAN's N(0, 0.02) on images, PyTorch's defaults on
        2-D points)."""
        if code_dim < 1:
            raise ConfigError(f"objective.code_dim: must be an integer >= 1 (got {code_dim})")
        if getattr(D, "uses_minibatch_discrimination", lambda: False)():
            raise ConfigError("arch.minibatch_discrimination: an autoencoder D has no classifier layer to add the "
                              "batch similarities to, and its energy is per sample; set arch.minibatch_discrimination=0")
        body, head, flat = mirror_of_discriminator(D, code_dim, "ebgan")
        encoder = nn.Sequential(*body, head)

        acts = tuple(type(f()) for f in ACTIVATIONS.values())
        act = next((m for m in body if isinstance(m, acts)), None)
        norm = next((m for m in body if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))), None)
        weights = [m for m in encoder if isinstance(m, (nn.Linear, nn.Conv2d))]
        layers: List[nn.Module] = []
        for i, w in enumerate(reversed(weights)):
            last_layer = i == len(weights) - 1
            out = w.in_features if isinstance(w, nn.Linear) else w.in_channels
            norm_layer = None if last_layer else _norm_like(norm, out)
            layers.append(_mirror(w, bias=norm_layer is None))  # a norm's shift replaces the bias
            if not last_layer:
                if norm_layer is not None:
                    layers.append(norm_layer)
                if act is not None:
                    layers.append(copy.deepcopy(act))
        ae = cls(encoder, nn.Sequential(*layers), flatten_input=flat)
        if image:
            ae.apply(dcgan_init)
        return ae

    def encode(self, x: Tensor) -> Tensor:
        """Enc(x), flattened to (B, code_dim)."""
        return self.encoder(x.flatten(1) if self.flatten_input else x).flatten(1)

    def reconstruct(self, x: Tensor) -> Tensor:
        """Dec(Enc(x)), of x's shape."""
        h = self.encoder(x.flatten(1) if self.flatten_input else x)
        return self.decoder(h).view_as(x)

    def forward(self, x: Tensor) -> Tensor:
        """The energy (1/d)‖Dec(Enc(x)) - x‖² per sample, shape (B,)."""
        return (self.reconstruct(x) - x).flatten(1).square().mean(1)
