"""The Loss-Sensitive GAN (Qi 2017, "LS-GAN" in the survey; not Mao's least-squares ``lsgan``)."""
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .base import Loss

ACTIVATIONS = ("relu", "softplus")
REDUCTIONS = ("sum", "mean")


@dataclass
class LossSensitive(Loss):
    """D's output is a loss function L_θ(x) = a(D(x)) ≥ 0 (a = relu, as Qi's lsgan.lua, or softplus).

    L_D = E_x L(x) + λ E_{x,z} (Δ(x, G(z)) + L(x) - L(G(z)))₊,   L_G = E_z L(G(z)),
    Δ(x, x̃) = s·‖x - x̃‖₁ (``distance_reduce=sum``, the L1 norm, as nn.PairwiseDistance(1) in Qi's code; or
    the mean over dimensions), real and fake paired row by row: the D step's batches ``game.real[i]`` and
    ``game.fake[i]`` (the fake is detached, so Δ is a constant margin for D; in dynamics=unrolled's inner
    steps the game sets them to each inner step's own batches). The Lipschitz regularisation of
    L_θ is weight decay on D's optimizer (the recipe sets ``optimizer.d.weight_decay``), not a term here.
    """

    name = "loss_sensitive"
    higher_is_real = False  # D is the loss function L(x): lower = more real
    lam: float = 1.0  # λ: weight of the hinge (margin) term
    margin_scale: float = 1.0  # s: scale of Δ (Qi's code: 0.0002 on 64×64×3 images, the paper's τ)
    distance_reduce: str = "sum"  # sum: ‖x - x̃‖₁ | mean: ‖x - x̃‖₁ / dim
    activation: str = "relu"  # L = relu(D) (Qi's code) | softplus(D) (smooth, never exactly zero)

    def __post_init__(self) -> None:
        if not self.lam > 0:
            raise ConfigError(f"lam: must be > 0 (got {self.lam})")
        if not self.margin_scale >= 0:
            raise ConfigError(f"margin_scale: must be >= 0 (got {self.margin_scale})")
        if self.distance_reduce not in REDUCTIONS:
            raise ConfigError(f"distance_reduce: unknown option '{self.distance_reduce}'; allowed: {', '.join(REDUCTIONS)}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation: unknown option '{self.activation}'; allowed: {', '.join(ACTIVATIONS)}")
        self.game: Any = None

    def bind(self, game: Any) -> None:
        self.game = game  # d_loss reads the D step's input batches for the margin Δ

    def loss_function(self, out: Tensor) -> Tensor:
        """L_θ = a(D): the non-negative loss function of the paper."""
        return F.relu(out) if self.activation == "relu" else F.softplus(out)

    def margin(self, real: Tensor, fake: Tensor) -> Tensor:
        """Δ(x_i, x̃_i) = s·Σ_d |x_i - x̃_i| (or the mean over d), per pair, shape (B,)."""
        diff = (real - fake).flatten(1).abs()
        dist = diff.sum(1) if self.distance_reduce == "sum" else diff.mean(1)
        return self.margin_scale * dist

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        if self.game is None or self.game.real is None or self.game.fake is None:
            raise RuntimeError("loss_sensitive: d_loss needs the game's input batches; call bind(game) first")
        real, fake = self.game.real, self.game.fake
        if real.shape[0] != fake.shape[0]:
            raise RuntimeError(f"loss_sensitive: real and fake batches must pair up (got {real.shape[0]} and {fake.shape[0]})")
        L_real, L_fake = self.loss_function(real_out), self.loss_function(fake_out)
        delta = self.margin(real, fake.detach()).to(L_real.dtype)
        return L_real.mean() + self.lam * F.relu(delta + L_real - L_fake).mean()

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return self.loss_function(fake_out).mean()
