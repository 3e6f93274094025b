"""Consensus optimization (Mescheder, Nowozin & Geiger 2017, "The Numerics of GANs", §3.2 and Algorithm 1)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Penalty


def check_weight(key: str, value: float) -> None:
    """A regulariser weight: finite and >= 0 (``not value >= 0`` also refuses NaN)."""
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"{key}: must be a finite number >= 0 (got {value})")


def grad_sqnorm(loss: Tensor, params: List[Tensor]) -> Tensor:
    """‖∂loss/∂params‖₂² summed over all the parameters, differentiable (create_graph=True).

    Parameters the loss does not use (e.g. a bias that cancels in the Wasserstein loss) contribute 0.
    """
    if not params or not loss.requires_grad:
        return loss.new_zeros(())
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    terms = [g.square().sum() for g in grads if g is not None]
    return torch.stack(terms).sum() if terms else loss.new_zeros(())


def d_outputs(D: nn.Module, real: Tensor, fake: Tensor, params: Optional[Dict[str, Tensor]] = None
              ) -> Tuple[Tensor, Tensor]:
    """D(real), D(fake) as the dynamics' d_forward computes them (one pass over the concatenation, or two
    when batch norm couples the samples of a batch), with ``params`` in place of D's parameters (default:
    D's own, so the graph reaches them).

    D's buffers are passed as copies: the regulariser's extra forward pass must not move batch norm's
    running statistics (or its batch counter) a second time in one step. (Restoring them afterwards
    would not do: batch norm's backward checks that its running statistics were not modified in place.)
    """
    values: Dict[str, Tensor] = dict(D.named_parameters()) if params is None else dict(params)
    values.update({n: b.clone() for n, b in D.named_buffers()})

    def forward(x: Tensor) -> Tensor:
        return torch.func.functional_call(D, values, (x,))

    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules()):
        return forward(real), forward(fake)
    real_out, fake_out = forward(torch.cat([real, fake])).split(real.shape[0])
    return real_out, fake_out


def fake_with_graph(game: Any, fake: Tensor) -> Tensor:
    """The fake batch D saw in this simultaneous step (``fake``, instance noise included), carrying the
    generator's graph: fake + (x̃ - x̃.detach()) has fake's exact values and ∂/∂x̃ = I, x̃ = game.fake_g.

    Instance noise is additive and independent of θ_G, so this is exactly ∂(x̃ + σε)/∂θ_G, without a new draw.
    """
    fake_g = game.fake_g
    return fake.detach() + (fake_g - fake_g.detach())


@dataclass
class Consensus(Penalty):
    """Consensus optimization: both players add γR to their losses, R = ½‖v‖²,

        v = (∂L_D/∂θ_D, ∂L_G/∂θ_G),   R = ½(‖∂L_D/∂θ_D‖² + ‖∂L_G/∂θ_G‖²),

    the joint gradient field of the game (each player's loss w.r.t. its own parameters), evaluated at one
    point: the step's real batch x and fake batch x̃ = G(z). L_D, L_G are the objective's d_loss / g_loss
    (its g_extra terms and extra players are not part of v). R is differentiated through (create_graph),
    so D's gradient is ∂L_D/∂θ_D + γ∂R/∂θ_D and G's is ∂L_G/∂θ_G + γ∂R/∂θ_G: Algorithm 1's update
    v - γ∇R of the maximising players' field, written for minimised losses (the sign of v does not
    change ‖v‖²).

    Only ``dynamics=simultaneous``: Mescheder et al. define consensus optimization on the simultaneous
    gradient field (one point, both gradients, then both steps) and analyse exactly that update; with
    alternating steps there is no common point (D has moved, n_dis times, before G's step), and a D-side R
    would need a second generator forward pass on fresh noise. ``bind`` refuses any other dynamics.

    R is computed once per step: ``__call__`` (D's side) builds it with D's forward pass on the step's real
    batch and on the step's fake batch with G's graph (``game.fake_g``), caches it, and ``g_extra`` (G's
    side, same step) returns γR from the cache, so both players regularise the same R. The extra forward
    pass of D leaves batch-norm buffers as they were. ``every``: on every N-th step both players add
    γR·N, on the others neither does. No state across steps (nothing to checkpoint).

    γ = 10: Mescheder et al.'s experiments use γ = 10 (REFERENCE.md states no default).
    """

    name = "consensus"
    gamma: float = 10.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weight("gamma", self.gamma)
        self._cache: Optional[Tuple[Tensor, Tensor]] = None

    def bind(self, game: Any) -> None:
        from ..dynamics.simultaneous import Simultaneous

        if not isinstance(game, Simultaneous):
            raise ConfigError(f"dynamics.name: penalty=consensus needs dynamics=simultaneous (got {game.name}): "
                              "consensus optimization regularises both players' gradients at one common point; "
                              "allowed: simultaneous")
        self.game = game
        self._cache = None

    def regulariser(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        """R = ½‖v‖² at (real, fake), with fake carrying G's graph; differentiable in θ_D and θ_G."""
        game = self.game
        real_out, fake_out = d_outputs(D, real, fake)
        d_loss = game.loss.d_loss(real_out, fake_out)
        # real_out undetached: if L_G depends on D(x) (a relativistic loss) its θ_G-gradient depends on θ_D through it.
        g_loss = game.loss.g_loss(fake_out, real_out)
        return 0.5 * (grad_sqnorm(d_loss, game.d_params) + grad_sqnorm(g_loss, game.g_params))

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        r = self.regulariser(D, real, fake_with_graph(self.game, fake))
        # Keyed by the step's fake_g tensor: g_extra of the same step finds it, a later step never does.
        self._cache = (r, self.game.fake_g)
        return self.gamma * r

    def g_extra(self, game: Any) -> Tensor:
        cache, self._cache = self._cache, None
        if cache is None or cache[1] is not game.fake_g:
            # A lazy step (d_step % every != 0): D did not add γR either.
            return game.zero
        return self.gamma * self.every * cache[0]
