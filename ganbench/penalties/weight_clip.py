"""WGAN weight clipping (Arjovsky et al. 2017): a projection after each critic step, not a loss term."""
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Penalty


@dataclass
class WeightClip(Penalty):
    """After every critic step clamp every parameter of D to [-clip, clip] (clip = 0.01)."""

    name = "weight_clip"
    replicable = True
    adds_loss = False
    lazy = False  # clips after every D step
    clip: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip <= 0:
            raise ConfigError(f"clip: must be > 0 (got {self.clip})")

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        return real.new_zeros(())

    @torch.no_grad()
    def after_d_step(self, D: nn.Module) -> None:
        for p in D.parameters():
            p.clamp_(-self.clip, self.clip)
