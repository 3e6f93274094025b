"""The non-saturating GAN loss ("vanilla GAN" in the DRAGAN paper)."""
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .base import Loss


@dataclass
class NonSaturating(Loss):
    """L_D = E softplus(-D(x)) + E softplus(D(x̃));  L_G = E softplus(-D(x̃)) (= -E log σ(D(x̃)))."""

    name = "nonsaturating"

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return F.softplus(-fake_out).mean()
