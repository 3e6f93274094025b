"""DRAGAN: penalise the discriminator's input gradients around the real data (Kodali et al. 2017, §2.4)."""
from dataclasses import dataclass
from enum import Enum

from torch import Tensor, nn

from .base import Penalty, check_nonnegative, input_grad_norm, input_grad_sqnorm, per_sample_uniform


class Form(Enum):
    """The three penalty forms of the paper, with g = ∇ₓD(x̂)."""

    centered = "centered"  # λ E(‖g‖ - k)²   (eq. 1; used in all of the paper's experiments)
    squared = "squared"  # λ E‖g‖²
    hinge = "hinge"  # λ E max(0, ‖g‖² - k)


class Noise(Enum):
    """Where the gradient is taken: x̂, a perturbation of a real batch x."""

    # The authors' code: x_p = x + 0.5·std(x)·u, u ~ U[0,1) elementwise, std one scalar over the batch;
    # x̂ = x + α(x_p - x), α ~ U[0,1] per sample.
    reference = "reference"
    # The paper's text: x̂ = x + δ, δ ~ N(0, c·I).
    gaussian = "gaussian"


@dataclass
class DRAGAN(Penalty):
    """λ·E_x̂[(‖∇ₓD(x̂)‖ - k)²] (centered), λ·E‖∇ₓD(x̂)‖² (squared) or λ·E max(0, ‖∇ₓD(x̂)‖² - k) (hinge),
    with x̂ a perturbed real sample (``noise``: ``reference`` = the authors' code, ``gaussian`` = N(0, c·I)).

    Defaults λ=10, k=1 (paper); c=10 is the paper's "c ≈ 10", the variance of δ; ``scale`` = 0.5 is the
    multiplier of std(x) in the reference perturbation.
    """

    name = "dragan"
    replicable = True
    gradient_penalty = True
    lambda_: float = 10.0
    k: float = 1.0
    form: Form = Form.centered
    noise: Noise = Noise.reference
    c: float = 10.0
    scale: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative(lambda_=self.lambda_, k=self.k, c=self.c, scale=self.scale)

    def perturb(self, x: Tensor) -> Tensor:
        """x̂ for a real batch x, under the configured noise model."""
        layout = self.layout
        if self.noise is Noise.gaussian:
            return x + self.c**0.5 * layout.randn_like(x)
        # std over the whole batch, population form (numpy's x.std(), as in the authors' code).
        x_p = x + self.scale * layout.std(x) * layout.rand_like(x)
        return x + per_sample_uniform(x, layout) * (x_p - x)

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        x_hat = self.perturb(real)
        if self.form is Form.centered:
            per_sample = (input_grad_norm(D, x_hat, layout=self.layout) - self.k).square()
        elif self.form is Form.squared:
            per_sample = input_grad_sqnorm(D, x_hat, self.layout)
        else:
            per_sample = (input_grad_sqnorm(D, x_hat, self.layout) - self.k).clamp_min(0)
        return self.lambda_ * per_sample.mean(-1)
