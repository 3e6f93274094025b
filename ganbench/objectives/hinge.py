"""The hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .base import Loss


@dataclass
class Hinge(Loss):
    """L_D = E relu(1 - D(x)) + E relu(1 + D(x̃));  L_G = -E D(x̃)."""

    name = "hinge"
    replicable = True

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return F.relu(1.0 - real_out).mean(-1) + F.relu(1.0 + fake_out).mean(-1)

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return -fake_out.mean(-1)
