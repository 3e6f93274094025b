"""No augmentation: D sees the batches as they are."""
from dataclasses import dataclass

from torch import Tensor

from ..replicas import SINGLE, Layout
from .base import Augment


@dataclass
class NoAugment(Augment):
    """x ↦ x."""

    name = "none"
    identity = True

    def __call__(self, x: Tensor, layout: Layout = SINGLE) -> Tensor:
        return x
