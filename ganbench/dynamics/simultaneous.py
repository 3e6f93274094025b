"""Simultaneous updates: both players' gradients at the same point, then both steps."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError
from .alternating import Alternating
from .base import Game


@dataclass
class Simultaneous(Alternating):
    """Simultaneous gradient steps (Mescheder et al. 2017, "The Numerics of GANs", §2):
    θ_D ← θ_D − η∇_{θ_D} L_D(θ_D, θ_G) and θ_G ← θ_G − η∇_{θ_G} L_G(θ_D, θ_G), both gradients taken
    before either player moves, on one real batch x and one fake batch x̃ = G(z).

    On the bilinear game min_x max_y xy these steps spiral outwards (the Jacobian's eigenvalues are
    ±i, so each step multiplies the distance to the equilibrium by √(1+η²)); alternating steps stay
    on a bounded orbit. One discriminator step per generator step (objective.n_dis=1).
    """

    name = "simultaneous"
    supports_fp16 = False  # its updates do not go through Game.backward/update (loss scaling)

    def compile_steps(self) -> None:  # both gradients come from one autograd.grad call, not the objectives
        Game.compile_steps(self)

    def setup(self) -> None:
        super().setup()
        if self.n_dis != 1:
            raise ConfigError(f"objective.n_dis: dynamics=simultaneous updates both players once per step; "
                              f"set objective.n_dis=1 (got {self.n_dis})")
        self.d_params = [q for q in self.D.parameters() if q.requires_grad]
        self.g_params = [q for q in self.G.parameters() if q.requires_grad]

    def step(self) -> Tensor:
        G, D, p = self.G, self.D, self.players
        loss, penalty = self.loss, self.penalty
        real = self.noisy(self.real_batch())
        self.fake_g = G(self.latent())
        fake = self.noisy(self.fake_g)
        self.real, self.fake = real, fake.detach()
        real_out, fake_out = self.d_forward(real, fake)
        d_loss = loss.d_loss(real_out, fake_out)
        pen = self.zero
        if penalty.adds_loss and self.d_step % penalty.every == 0:
            pen = penalty(D, real, fake.detach()) * penalty.every
        g_loss = self.with_g_extras(loss.g_loss(fake_out, real_out.detach()))
        # The extra players (an objective's encoder, ...) learn from the generator's loss.
        g_side = self.g_params + [q for m in p.extra.values() for q in m.parameters() if q.requires_grad]
        total = self.layout.total
        d_grads = torch.autograd.grad(total(d_loss + pen), self.d_params, retain_graph=True, allow_unused=True)
        g_grads = torch.autograd.grad(total(g_loss), g_side, allow_unused=True)
        for params, grads in ((self.d_params, d_grads), (g_side, g_grads)):
            for q, g in zip(params, grads):
                q.grad = g
        p.opt_D.step()
        p.opt_G.step()
        self.step_extra()
        penalty.after_d_step(D)
        self.d_step += 1
        if p.G_avg is not None:
            p.G_avg.update_parameters(G)
        self.g_step += 1
        with torch.no_grad():
            mean = self.layout.run_mean
            return torch.stack([d_loss, g_loss, pen, mean(real_out), mean(fake_out)]).detach()
