"""The WGAN-GP gradient penalty (Gulrajani et al. 2017)."""
from dataclasses import dataclass

from torch import Tensor, nn

from .base import Penalty, check_nonnegative, input_grad_norm, per_sample_uniform


@dataclass
class WGANGP(Penalty):
    """λ·E(‖∇D(x̂)‖ - k)², x̂ = εx + (1-ε)x̃, ε ~ U[0,1] per sample; λ=10, k=1 (two-sided, as the paper)."""

    name = "wgan_gp"
    replicable = True
    gradient_penalty = True
    lambda_: float = 10.0
    k: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative(lambda_=self.lambda_, k=self.k)

    def interpolate(self, real: Tensor, fake: Tensor) -> Tensor:
        eps = per_sample_uniform(real, self.layout)
        return eps * real + (1 - eps) * fake

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        x_hat = self.interpolate(real, fake.detach())
        return self.lambda_ * (input_grad_norm(D, x_hat, layout=self.layout) - self.k).square().mean(-1)
