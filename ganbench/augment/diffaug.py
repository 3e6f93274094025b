"""DiffAugment (Zhao, Liu, Lin, Zhu & Han 2020, "Differentiable Augmentation for Data-Efficient GAN Training")."""
from dataclasses import dataclass, field
from typing import List

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import ConfigError
from ..replicas import SINGLE, Layout
from .base import Augment

POLICIES = ("color", "translation", "cutout")


@dataclass
class DiffAugment(Augment):
    """The same random differentiable transforms on every batch D sees, real and generated, in both players'
    steps: T(x) with T drawn afresh for each sample. The authors' policy and magnitudes (their
    DiffAugment_pytorch.py), applied in ``policy``'s order, each to every sample:

    - color: brightness x + (u₁ - ½); saturation m_c + 2u₂·(x - m_c), m_c the mean over channels at each pixel;
      contrast m + (u₃ + ½)·(x - m), m the image's mean; u₁, u₂, u₃ ~ U[0, 1);
    - translation: a shift by integers (s_h, s_w), each uniform in [-r·H, r·H] (r·H rounded), r =
      ``translation_ratio``; pixels shifted in from outside are 0 (mid-grey in [-1, 1]);
    - cutout: a (c·H) × (c·W) box (rounded) of zeros, c = ``cutout_ratio``, centred at a uniform integer
      position (offset in [0, H + 1 - (c·H mod 2)), the box's top row at offset - ⌊c·H/2⌋), cut at the border.

    Images only (the transforms read channels and pixels).
    """

    name = "diffaug"
    #: Transforms, in order: any of color, translation, cutout (the paper's "Color + Translation + Cutout").
    policy: List[str] = field(default_factory=lambda: list(POLICIES))
    translation_ratio: float = 0.125  # the authors' 1/8 of the image side
    cutout_ratio: float = 0.5  # the authors' half of the image side

    def __post_init__(self) -> None:
        unknown = [p for p in self.policy if p not in POLICIES]
        if unknown or not self.policy:
            raise ConfigError(f"policy: must be a non-empty list of {', '.join(POLICIES)} "
                              f"(e.g. [color,translation]; got {list(self.policy)})")
        for key in ("translation_ratio", "cutout_ratio"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{key}: must be in [0, 1] (got {getattr(self, key)})")

    def __call__(self, x: Tensor, layout: Layout = SINGLE) -> Tensor:
        for transform in self.policy:
            x = getattr(self, transform)(x, layout)
        return x

    def color(self, x: Tensor, layout: Layout) -> Tensor:
        x = x + (self.uniform(x, layout) - 0.5)
        mean = x.mean(dim=-3, keepdim=True)
        x = (x - mean) * (self.uniform(x, layout) * 2) + mean
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        return (x - mean) * (self.uniform(x, layout) + 0.5) + mean

    def translation(self, x: Tensor, layout: Layout) -> Tensor:
        h, w = x.shape[-2:]
        sh, sw = int(h * self.translation_ratio + 0.5), int(w * self.translation_ratio + 0.5)
        return shift(x, self.integers(x, layout, -sh, sh + 1), self.integers(x, layout, -sw, sw + 1))

    def cutout(self, x: Tensor, layout: Layout) -> Tensor:
        h, w = x.shape[-2:]
        ch, cw = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
        top = self.integers(x, layout, 0, h + (1 - ch % 2)) - ch // 2
        left = self.integers(x, layout, 0, w + (1 - cw % 2)) - cw // 2
        return x * keep_mask(x, top, left, ch, cw)


def shift(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Each image moved down by dy and right by dx pixels (per-sample integers, shaped (*batch, 1, 1, 1)):
    out[..., i, j] = x[..., i - dy, j - dx], 0 outside the image."""
    h, w = x.shape[-2:]
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    dy, dx = dy.reshape(-1, 1, 1), dx.reshape(-1, 1, 1)
    # Indices into the image padded by one zero pixel: a source outside the image reads the padding.
    rows = (torch.arange(h, device=x.device).view(1, h, 1) - dy + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) - dx + 1).clamp(0, w + 1)
    padded = F.pad(flat, (1, 1, 1, 1))
    batch = torch.arange(flat.shape[0], device=x.device).view(-1, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols]  # (M, H, W, C)
    return out.permute(0, 3, 1, 2).reshape(*lead, *x.shape[-3:])


def keep_mask(x: Tensor, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """1 outside each sample's box [top, top + height) × [left, left + width), 0 inside; shaped
    (*batch, 1, H, W) to multiply x."""
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    top, left = top.reshape(-1, 1), left.reshape(-1, 1)
    inside_rows = (rows >= top) & (rows < top + height)
    inside_cols = (cols >= left) & (cols < left + width)
    cut = inside_rows[:, :, None] & inside_cols[:, None, :]
    return (~cut).to(x.dtype).reshape(*x.shape[:-3], 1, h, w)
