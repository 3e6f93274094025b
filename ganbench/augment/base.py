"""The augmentation interface: what D sees of a batch, drawn from the run's own random streams."""
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

from ..replicas import SINGLE, Layout


@dataclass
class Augment:
    """A differentiable map of a batch of D's inputs (real and fake alike), applied in the D and the G step
    before instance noise and packing (``Game.noisy``), so that gradients reach G through it.

    ``x`` is one run's batch (B, C, H, W) or N replicas' (N, B, C, H, W) (``layout``); every random draw goes
    through ``layout.draw``, so each run draws from its own stream (its global RNG, or its replica's
    generator): the checkpoint's RNG states make resume exact.
    """

    name = "base"
    #: Whether the augmentation is the identity (the game then skips it: no draw, bit-identical runs).
    identity = False

    def __call__(self, x: Tensor, layout: Layout = SINGLE) -> Tensor:
        raise NotImplementedError

    # ---- per-sample draws, shaped (*batch, 1, 1, 1) to broadcast over an image ----
    @staticmethod
    def _sample_shape(x: Tensor, layout: Layout) -> Tuple[int, ...]:
        return (x.shape[layout.batch_dims - 1],) + (1,) * (x.dim() - layout.batch_dims)

    def uniform(self, x: Tensor, layout: Layout) -> Tensor:
        """U[0, 1) per sample."""
        shape = self._sample_shape(x, layout)
        return layout.draw(lambda g: torch.rand(shape, generator=g, device=x.device, dtype=x.dtype), x.device)

    def integers(self, x: Tensor, layout: Layout, low: int, high: int) -> Tensor:
        """An integer in [low, high) per sample (int64)."""
        shape = self._sample_shape(x, layout)
        return layout.draw(lambda g: torch.randint(low, high, shape, generator=g, device=x.device), x.device)
