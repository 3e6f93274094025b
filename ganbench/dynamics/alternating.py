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
    generator step's fake) gets its own noise draw; the penalty sees the noisy inputs D sees. With ``pack=m``
    every input of D is packed (``noisy``): the B = train.batch_size·m samples of a batch become D's
    train.batch_size packs, and so its outputs' rows.
    """

    name = "alternating"
    replicable = True
    supports_fp16 = True

    def setup(self) -> None:
        # Without batch norm in D, real and fake can share one forward pass: identical maths, one launch.
        self.d_batchnorm = has_batchnorm(self.D)

    def d_forward(self, real: Tensor, fake: Tensor):
        if self.d_batchnorm:
            return self.D(real), self.D(fake)
        dim = self.layout.cat_dim
        # real.shape[dim] is train.batch_size: samples, or packs of m samples with pack=m.
        return self.D(torch.cat([real, fake], dim)).split(real.shape[dim], dim)

    def d_objective(self, real: Tensor, fake: Tensor, penalised: bool):
        """One discriminator step's terms: (L_D, the weighted penalty, D(x), D(x̃)). With train.compile this
        function (and its backward) is compiled, the penalty's input gradient included."""
        real_out, fake_out = self.d_forward(real, fake)
        d_loss = self.loss.d_loss(real_out, fake_out)
        pen = self.zero
        if penalised:
            if self.scalers:  # fp16: the penalty's forward and input gradient in fp32 (ganbench/precision.py)
                from ..precision import full_precision

                with full_precision(self.device):
                    pen = self.penalty(self.D, real.float(), fake.float())
            else:
                pen = self.penalty(self.D, real, fake)
            if self.penalty.every > 1:
                pen = pen * self.penalty.every
        return d_loss, pen, real_out, fake_out

    def d_steps(self):
        """The ``n_dis`` discriminator steps; returns the last one's (L_D, penalty, D(x), D(x̃))."""
        G, D, p = self.G, self.D, self.players
        penalty = self.penalty
        for _ in range(self.n_dis):
            real = self.noisy(self.real_batch())
            with torch.no_grad():
                fake = self.noisy(G(self.latent()))
            self.real, self.fake = real, fake
            penalised = penalty.adds_loss and self.d_step % penalty.every == 0
            d_loss, pen, real_out, fake_out = self.d_objective(real, fake, penalised)
            p.opt_D.zero_grad(set_to_none=True)
            self.backward(self.layout.total(d_loss + pen if penalised else d_loss), "D")
            self.update("D", p.opt_D)
            penalty.after_d_step(D)
            self.d_step += 1
        return d_loss, pen, real_out, fake_out

    def g_objective(self, z: Tensor, real_out: Tensor) -> Tensor:
        """The generator step's loss L_G(D(G(z))) plus the objective's and penalty's generator terms
        (compiled with train.compile)."""
        self.fake_g = self.G(z)
        fake_out_g, real_for_g = self.g_outputs(real_out)
        return self.with_g_extras(self.loss.g_loss(fake_out_g, real_for_g))

    def with_g_extras(self, g_loss: Tensor) -> Tensor:
        """L_G plus the objective's and the penalty's generator terms; the default terms (``self.zero``) are
        not added (adding 0 changes nothing but costs two operations and their backward every step)."""
        for extra in (self.loss.g_extra(self), self.penalty.g_extra(self)):
            if extra is not self.zero:
                g_loss = g_loss + extra
        return g_loss

    def compile_steps(self) -> None:
        from ..compiled import compiled

        self.d_objective = compiled(self.d_objective, "D step", self.compile_mode)
        self.g_objective = compiled(self.g_objective, "G step", self.compile_mode)

    def g_outputs(self, real_out: Tensor):
        """D's verdict for the generator step: (D(G(z')), the D(x) that G's loss may use)."""
        return self.D(self.noisy(self.fake_g)), real_out.detach()

    def step(self) -> Tensor:
        G, D, p = self.G, self.D, self.players
        d_loss, pen, real_out, fake_out = self.d_steps()

        # The generator's step; D's parameters need no gradient here.
        D.requires_grad_(False)
        g_loss = self.g_objective(self.latent(), real_out)
        p.opt_G.zero_grad(set_to_none=True)
        self.zero_extra_grads()
        self.backward(self.layout.total(g_loss), "G")
        # The extra players (an objective's encoder, ...) learn from the generator's loss, so from its scale.
        self.update("G", p.opt_G, *[o for o in p.extra_opt.values() if o is not None])
        D.requires_grad_(True)
        if p.G_avg is not None:
            p.G_avg.update_parameters(G)
        self.g_step += 1
        with torch.no_grad():
            mean = self.layout.run_mean
            return torch.stack([d_loss, g_loss, pen, mean(real_out), mean(fake_out)]).detach()
