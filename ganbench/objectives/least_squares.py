"""The least-squares GAN loss (Mao et al. 2017)."""
from dataclasses import dataclass

from torch import Tensor

from .base import Loss


@dataclass
class LeastSquares(Loss):
    """L_D = ½E(D(x)-b)² + ½E(D(x̃)-a)²;  L_G = ½E(D(x̃)-c)².

    Defaults a=0, b=1, c=1; the Pearson-χ² setting of the paper is a=-1, b=1, c=0.
    """

    name = "least_squares"
    replicable = True
    a: float = 0.0
    b: float = 1.0
    c: float = 1.0

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return 0.5 * (real_out - self.b).square().mean(-1) + 0.5 * (fake_out - self.a).square().mean(-1)

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return 0.5 * (fake_out - self.c).square().mean(-1)
