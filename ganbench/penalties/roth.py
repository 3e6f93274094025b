"""The Roth et al. 2017 regulariser ("Stabilizing Training of Generative Adversarial Networks through
Regularization"), in its form for the GAN objective with ψ = D's raw output (REFERENCE.md)."""
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor, nn

from .base import Penalty, check_nonnegative


def output_and_grad_sqnorm(D: nn.Module, x: Tensor) -> Tuple[Tensor, Tensor]:
    """ψ(x) and ‖∇ₓψ(x)‖₂² per sample (shape (B,) each) from one forward pass, both differentiable in D.

    Samples are independent (no batch norm in D for gradient penalties), so ∇ of Σψ(xᵢ) w.r.t. xᵢ is ∇ψ(xᵢ).
    """
    x = x.detach().requires_grad_(True)
    out = D(x).reshape(x.shape[0])
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return out, grad.flatten(1).square().sum(dim=1)


@dataclass
class Roth(Penalty):
    """γ/2 · Ω,  Ω = E_P[(1-σ(ψ(x)))² ‖∇ₓψ(x)‖²] + E_Q[σ(ψ(x̃))² ‖∇ₓψ(x̃)‖²],  ψ = D's raw output.

    Roth et al. 2017's regulariser for the GAN objective: the squared input-gradient norm on reals is
    weighted by (1-σ(ψ))², on fakes by σ(ψ)², i.e. by the squared derivative of the GAN loss w.r.t. ψ, so
    that samples D already classifies confidently are barely penalised. The weights are differentiated too (Ω as written).
    (1-σ(ψ)) is computed as σ(-ψ), which has no cancellation for large ψ.

    γ = 2: Roth et al. use γ₀ = 2 in most of their experiments (REFERENCE.md states no default). The paper anneals γ over training in some experiments; there is no
    annealing here: γ is constant.
    """

    name = "roth"
    gradient_penalty = True
    gamma: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative(gamma=self.gamma)

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        real_out, real_sq = output_and_grad_sqnorm(D, real)
        fake_out, fake_sq = output_and_grad_sqnorm(D, fake.detach())
        omega = ((torch.sigmoid(-real_out).square() * real_sq).mean()
                 + (torch.sigmoid(fake_out).square() * fake_sq).mean())
        return 0.5 * self.gamma * omega
