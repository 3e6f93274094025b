"""The saturating minimax loss of Goodfellow et al. 2014."""
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .base import Loss


@dataclass
class Minimax(Loss):
    """L_D = E softplus(-D(x)) + E softplus(D(x̃));  L_G = -E softplus(D(x̃)) (= E log(1 - σ(D(x̃))))."""

    name = "minimax"

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return F.softplus(-real_out).mean() + F.softplus(fake_out).mean()

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return -F.softplus(fake_out).mean()
