"""PacGAN packing (Lin et al. 2018, "PacGAN: The power of two samples in generative adversarial networks").

With ``pack=m`` the discriminator judges m samples at once: m samples concatenated along the feature axis
form one packed sample. ``train.batch_size`` counts D's inputs, that is packs: each D step draws
train.batch_size·m real and as many generated samples and D judges train.batch_size packs of each, and the
generator step likewise generates train.batch_size·m samples (PacGAN's code draws its batch of 100 packs of m
samples per step; the paper keeps everything but D's input unchanged). A batch of B samples becomes B/m packed
samples,

    pack_m(x)_i = [x_{i·m}, x_{i·m+1}, …, x_{i·m+m-1}]   (concatenated along the first sample axis),

so points (B, d) become (B/m, m·d) and images (B, C, H, W) become (B/m, m·C, H, W), the channels of the
m images stacked as PacGAN's image code stacks them. Real packs are made of m real samples, fake packs of
m generated ones; the samples of a batch are independent draws, so packing consecutive samples is packing
m independent samples. With replicas (ganbench/replicas.py) every run's batch is packed on its own:
(N, B, *sample) → (N, B/m, m·sample₀, *sample[1:]).

``pack=1`` is no packing: ``pack`` returns its input itself and the batch is train.batch_size samples, so
runs are bit-identical to unpacked ones.
"""
from __future__ import annotations

from typing import Tuple

from torch import Tensor


def packed_shape(shape: Tuple[int, ...], m: int) -> Tuple[int, ...]:
    """The shape of one packed sample of m samples of ``shape``: (m·shape₀, *shape[1:])."""
    shape = tuple(shape)
    return (m * shape[0],) + shape[1:]


def pack(x: Tensor, m: int, batch_dims: int = 1) -> Tensor:
    """``x`` of shape (*lead, B, *sample) with ``batch_dims`` = len(lead) + 1, as (*lead, B/m, m·sample₀,
    *sample[1:]): sample i·m + j fills the j-th block of the first sample axis of packed sample i."""
    if m == 1:
        return x
    axis = batch_dims - 1  # the batch axis
    batch = x.shape[axis]
    if batch % m:
        raise ValueError(f"pack: a batch of {batch} samples cannot be packed by {m}")
    # Row-major order: the m consecutive samples of a pack are adjacent in memory, so merging the pack axis
    # into the first sample axis is a reshape (a view of a contiguous batch).
    return x.reshape(*x.shape[:axis], batch // m, m * x.shape[axis + 1], *x.shape[axis + 2:])
