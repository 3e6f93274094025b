"""The gradient regulariser of Nagarajan & Kolter 2017 ("Gradient descent GAN optimization is locally stable")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .base import Penalty
from .consensus import check_weight, d_outputs, fake_with_graph, grad_sqnorm


@dataclass
class NagarajanKolter(Penalty):
    """The generator adds η‖∇_{θ_D} V‖²; the discriminator's loss is unchanged:

        L_G' = L_G + η‖∇_{θ_D} V(θ_D, θ_G)‖²,   V = -L_D (the value D maximises, for the loss in use),

    on the generator step's batch: the last real batch D saw (``game.real``) and the generator step's fake
    ``game.fake_g`` (with G's graph), at D's current parameters. ∇_{θ_D}V is built with create_graph, so the
    term is differentiated w.r.t. θ_G (the generator is pushed to where D's gradient is small: where D has
    nothing left to gain). ‖∇V‖² = ‖∇L_D‖², so the sign convention of V does not matter. θ_D is treated as
    a constant (a detached copy), so the term never reaches D's gradient.

    Nagarajan & Kolter write it for G minimising V itself (``objective=minimax``, the authors' code);
    here it is added to whichever L_G the objective uses. Both dynamics: with alternating steps (the
    paper's and the authors' code's schedule) D has taken its step; with simultaneous steps the term is at
    the common point. The fake is what D sees: under simultaneous steps the step's own noisy fake; under
    alternating steps ``game.noisy(fake_g)``, which is one extra noise draw when instance noise is on (no
    draw otherwise). D's extra forward pass leaves batch-norm buffers as they were.

    ``every``: the term is added on every N-th generator step with weight η·N (lazy, by game.g_step,
    which the checkpoint restores). No state across steps.

    η = 0.5: the authors' code (locuslab/gradient_regularized_gan, gaussian-toy.py, regularizer_weight=0.5);
    REFERENCE.md states no default.
    """

    name = "nk"
    #: D's loss gets nothing, so the dynamics may skip __call__; they call g_extra on every generator step
    #: regardless of adds_loss (alternating.py / simultaneous.py), which is where this regulariser lives.
    adds_loss = False
    eta: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weight("eta", self.eta)

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        """Nothing is added to D's loss."""
        return real.new_zeros(())

    def bind(self, game: Any) -> None:
        self.game = game

    def g_extra(self, game: Any) -> Tensor:
        if game.g_step % self.every != 0:
            return game.zero
        from ..dynamics.simultaneous import Simultaneous

        D = game.D
        fake = fake_with_graph(game, game.fake) if isinstance(game, Simultaneous) else game.noisy(game.fake_g)
        # θ_D = the parameters D's optimizer trains (requires_grad cannot tell: alternating freezes D for
        # the generator step). Detached leaves: ∇_{θ_D}V is taken at D's current values, and the graph
        # ends there, so backward of G's loss puts nothing into D's .grad.
        trained = {id(q) for group in game.players.opt_D.param_groups for q in group["params"]}
        params = {n: q.detach().requires_grad_(id(q) in trained) for n, q in D.named_parameters()}

        real_out, fake_out = d_outputs(D, game.real, fake, params)
        value = -game.loss.d_loss(real_out, fake_out)
        return self.eta * self.every * grad_sqnorm(value, [q for q in params.values() if q.requires_grad])
