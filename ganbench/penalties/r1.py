"""R1 / R2 zero-centred gradient penalties (Mescheder et al. 2018)."""
from dataclasses import dataclass
from enum import Enum

from torch import Tensor, nn

from .base import Penalty, check_nonnegative, input_grad_sqnorm


class On(Enum):
    real = "real"  # R1
    fake = "fake"  # R2


@dataclass
class R1(Penalty):
    """γ/2 · E‖∇ₓD(x)‖² on real samples (R1, ``on: real``) or on generated ones (R2, ``on: fake``)."""

    name = "r1"
    replicable = True
    gradient_penalty = True
    gamma: float = 10.0
    on: On = On.real

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative(gamma=self.gamma)

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        x = real if self.on is On.real else fake.detach()
        return 0.5 * self.gamma * input_grad_sqnorm(D, x, self.layout).mean(-1)
