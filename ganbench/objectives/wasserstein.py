"""The Wasserstein critic loss (Arjovsky et al. 2017; WGAN and WGAN-GP)."""
from dataclasses import dataclass

from torch import Tensor

from .base import Loss


@dataclass
class Wasserstein(Loss):
    """L_D = E D(x̃) - E D(x);  L_G = -E D(x̃).  The Lipschitz constraint comes from the penalty."""

    name = "wasserstein"
    replicable = True

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return fake_out.mean(-1) - real_out.mean(-1)

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return -fake_out.mean(-1)
