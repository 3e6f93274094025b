"""Alternating updates: ``objective.n_dis`` discriminator steps, then one generator step on fresh noise."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Game, has_batchnorm


@dataclass
class Alternating(Game):
    """The standard GAN schedule (Goodfellow et al. 2014, Algorithm 1; WGAN's n_critic = 5).

    Each of the ``n_dis`` discriminator steps draws a fresh real batch x and fake batch x̃ = G(z) and takes
    one optimizer step on L_D(D(x), D(x̃)) + penalty; the generator then takes one step on L_G(D(G(z')))
    with fresh z', D's parameters frozen. The penalty's weight is multiplied by ``penalty.every`` on the
    steps it runs (lazy regularisation). With instance noise every input of D (real, fake, and the
    generator step's fake) gets its own noise draw; the penalty sees the noisy inputs D sees.
    """

    name = "alternating"
    replicable = True

    def setup(self) -> None:
        # Without batch norm in D, real and fake can share one forward pass: identical maths, one launch.
        self.d_batchnorm = has_batchnorm(self.D)

    def d_forward(self, real: Tensor, fake: Tensor):
        if self.d_batchnorm:
            return self.D(real), self.D(fake)
        dim = self.layout.cat_dim
        return self.D(torch.cat([real, fake], dim)).split(self.batch_size, dim)

    def d_steps(self):
        """The ``n_dis`` discriminator steps; returns the last one's (L_D, penalty, D(x), D(x̃))."""
        G, D, p = self.G, self.D, self.players
        loss, penalty = self.loss, self.penalty
        for _ in range(self.n_dis):
            real = self.noisy(self.real_batch())
            with torch.no_grad():
                fake = self.noisy(G(self.latent()))
            self.real, self.fake = real, fake
            real_out, fake_out = self.d_forward(real, fake)
            d_loss = loss.d_loss(real_out, fake_out)
            pen = self.zero
            if penalty.adds_loss and self.d_step % penalty.every == 0:
                pen = penalty(D, real, fake) * penalty.every
            p.opt_D.zero_grad(set_to_none=True)
            self.layout.total(d_loss + pen).backward()
            p.opt_D.step()
            penalty.after_d_step(D)
            self.d_step += 1
        return d_loss, pen, real_out, fake_out

    def g_outputs(self, real_out: Tensor):
        """D's verdict for the generator step: (D(G(z')), the D(x) that G's loss may use)."""
        return self.D(self.noisy(self.fake_g)), real_out.detach()

    def step(self) -> Tensor:
        G, D, p = self.G, self.D, self.players
        d_loss, pen, real_out, fake_out = self.d_steps()

        # The generator's step; D's parameters need no gradient here.
        D.requires_grad_(False)
        self.fake_g = G(self.latent())
        fake_out_g, real_for_g = self.g_outputs(real_out)
        g_loss = self.loss.g_loss(fake_out_g, real_for_g) + self.loss.g_extra(self) + self.penalty.g_extra(self)
        p.opt_G.zero_grad(set_to_none=True)
        self.zero_extra_grads()
        self.layout.total(g_loss).backward()
        p.opt_G.step()
        self.step_extra()
        D.requires_grad_(True)
        if p.G_avg is not None:
            p.G_avg.update_parameters(G)
        self.g_step += 1
        with torch.no_grad():
            mean = self.layout.run_mean
            return torch.stack([d_loss, g_loss, pen, mean(real_out), mean(fake_out)]).detach()
