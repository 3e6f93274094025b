"""Unrolled GAN (Metz et al. 2017): the generator's loss is taken at the discriminator unrolled K steps ahead,
differentiating through those steps; the discriminator itself takes its normal steps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.func import functional_call

from ..errors import ConfigError
from .alternating import Alternating
from .base import Game

INNER = ("sgd", "adam")

TensorDict = Dict[str, Tensor]


def _sqrt0(v: Tensor) -> Tensor:
    """√v with derivative 0 (not ∞) where v = 0, so that a parameter whose gradient is exactly 0 (a dead
    unit) does not turn the generator's gradient into 0·∞ = NaN; the value is √v everywhere."""
    positive = v > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, v, torch.ones_like(v))), torch.zeros_like(v))


@dataclass
class Unrolled(Alternating):
    """Unrolled GAN (Metz et al. 2017, "Unrolled Generative Adversarial Networks", §2).

    The discriminator takes its ``objective.n_dis`` normal steps exactly as in ``Alternating`` (same
    batches, same RNG draws, penalty included). The generator then minimises its loss at a functional copy
    of D unrolled K steps ahead, differentiating through the unroll:

        θ_D^0 = θ_D,   θ_D^{k+1} = θ_D^k − η · u(∇_{θ_D^k} L_D(θ_G, θ_D^k)),   G minimises L_G(θ_G, θ_D^K(θ_G, θ_D))

    so dL_G/dθ_G = ∂L_G/∂θ_G + ∂L_G/∂θ_D^K · dθ_D^K/dθ_G; the second term (the unrolled D's reaction to
    G) is what keeps G from collapsing onto the mode D currently misjudges. The inner gradients are taken
    with ``create_graph=True`` because each θ_D^{k+1} depends on θ_G through the fake batch G(z_k).

    Each inner step draws a fresh real batch and a fresh fake batch (with grad) and descends the
    objective's plain L_D: Metz et al. unroll D's loss, so a penalty, its lazy schedule and weight
    clipping are not applied to the unrolled copy (instance noise is, as D's own inputs get it). A loss that
    reads the step's inputs (``game.real`` / ``game.fake``: lsgan_qi's margin Δ(x_i, G(z_i))) reads the inner
    step's own batches there, the outer D step's again once the unroll is done.
    ``inner=sgd``: u(g) = g (plain SGD, no momentum or weight decay). ``inner=adam`` (Metz et al.'s
    choice): a differentiable Adam step continuing D's moment estimates from ``opt_D``'s state, with
    opt_D's betas, eps and weight decay; at inner step j (t = opt_D's step count + j + 1)

        g ← g + λθ,  m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,  θ ← θ − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)

    (torch.optim.Adam's update; the moments' dependence on θ_G is differentiated too). η = ``inner_lr``, or
    opt_D's learning rate when null.

    The unroll never touches the real players: D's parameters, opt_D's state, D's buffers (batch-norm
    statistics) and G's buffers are read, never written — the copies of the buffers evolve through the
    unroll in train mode, as D's own steps would move them. The generator step's forward through D runs
    on the unrolled copy, so D's buffers move only on D's own steps (in ``Alternating`` the generator
    step's forward also feeds D's batch-norm statistics; with k > 0 it does not).

    G's loss is ``g_loss(D^K(G(z')), D^K(x))`` with x the last inner step's real batch. D^K(x) is not
    detached: through θ_D^K it depends on θ_G, and a G loss that uses D(x) (f-GAN's saddle form) gets that
    term of Metz et al.'s f(θ_G, θ_D^K); every other loss here ignores it. The objective's and penalty's
    ``g_extra`` terms see the live players, as in ``Alternating``.

    With ``objective.n_dis`` > 1 all of D's normal steps come first and the unroll starts from where they
    leave θ_D (and opt_D's moments): K is G's look-ahead, independent of n_dis.

    k = 0 is ``Alternating``'s step itself (bit-identical: no extra draws). The unroll costs K extra
    forward and double-backward passes of D and K extra G forwards per generator step, all kept in memory
    until the generator's backward.
    """

    name = "unrolled"
    supports_fp16 = False  # its updates do not go through Game.backward/update (loss scaling)
    # Batched: the functional copy of a replicated D holds the stacked parameters, the inner Adam step is
    # elementwise, and the inner gradient is that of the replicas' summed losses (each replica's own).
    replicable = True

    def compile_steps(self) -> None:  # its generator step differentiates through K optimizer steps of D
        Game.compile_steps(self)
    #: K, the unroll steps (Metz et al. use 5 in most experiments).
    k: int = 5
    #: The unrolled copy's optimizer: adam (Metz et al.) continues opt_D's moments; sgd takes θ − ηg.
    inner: str = "adam"
    #: η of the inner steps; None = opt_D's learning rate.
    inner_lr: Optional[float] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise ConfigError(f"k: must be an integer >= 0 (0 = plain alternating training; got {self.k!r})")
        if self.inner not in INNER:
            raise ConfigError(f"inner: unknown inner optimizer '{self.inner}'; allowed: {', '.join(INNER)}")
        if self.inner_lr is not None and not self.inner_lr > 0:
            raise ConfigError(f"inner_lr: must be > 0, or null for D's optimizer lr (got {self.inner_lr})")

    def setup(self) -> None:
        super().setup()
        opt_D = self.players.opt_D
        if self.k > 0 and self.inner == "adam" and not isinstance(opt_D, torch.optim.Adam):
            raise ConfigError(f"dynamics.inner: adam continues D's Adam moments, but D's optimizer is "
                              f"{type(opt_D).__name__}; set dynamics.inner=sgd or optimizer=adam")
        # The inner steps update the parameters opt_D trains, with that parameter group's settings.
        group_of = {id(q): group for group in opt_D.param_groups for q in group["params"]}
        self.d_trained: List[Tuple[str, dict]] = [
            (n, group_of[id(q)]) for n, q in self.D.named_parameters() if id(q) in group_of and q.requires_grad]

    # ---- the unroll: functional copies of D, never the real D ----
    def d_out(self, params: TensorDict, x: Tensor) -> Tensor:
        return functional_call(self.D, params, (x,))

    def d_forward_at(self, params: TensorDict, real: Tensor, fake: Tensor) -> Tuple[Tensor, Tensor]:
        """``d_forward`` on the copy ``params``: one pass over [real; fake] unless D has batch norm."""
        if self.d_batchnorm:
            return self.d_out(params, real), self.d_out(params, fake)
        dim = self.layout.cat_dim
        return self.d_out(params, torch.cat([real, fake], dim)).split(real.shape[dim], dim)

    def fake_batch(self, g_buffers: TensorDict) -> Tensor:
        """G(z) on fresh z, with grad to G's live parameters; G's buffers are the copies ``g_buffers``."""
        G = self.G
        return functional_call(G, {**dict(G.named_parameters()), **g_buffers}, (self.latent(),))

    def unroll(self) -> Tuple[TensorDict, Tensor]:
        """θ_D^K (D's parameters and buffer copies, one dict for ``functional_call``) and the last inner
        real batch; the parameters are functions of θ_G (autograd graph kept)."""
        D, opt_D = self.D, self.players.opt_D
        # Detached leaves: the inner gradients are taken w.r.t. them, G's backward never reaches D's .grad.
        live = dict(D.named_parameters())
        params: TensorDict = {n: live[n].detach().requires_grad_(True) for n, _ in self.d_trained}
        frozen = {n: q.detach() for n, q in live.items() if n not in params}
        buffers = {n: b.clone() for n, b in D.named_buffers()}
        g_buffers = {n: b.clone() for n, b in self.G.named_buffers()}
        names = list(params)
        groups = dict(self.d_trained)
        moments: Dict[str, Tuple[Tensor, Tensor, float]] = {}
        if self.inner == "adam":
            for n in names:
                st = opt_D.state.get(live[n], {})
                if "exp_avg" in st:
                    # Adam keeps its step count on the CPU (not capturable/fused): no device sync here.
                    moments[n] = (st["exp_avg"], st["exp_avg_sq"], float(st["step"]))
                else:  # a parameter D's optimizer has not stepped yet: Adam's zero initial moments
                    zeros = torch.zeros_like(params[n])
                    moments[n] = (zeros, zeros, 0.0)
        real = None
        # A loss may read the step's inputs besides D's outputs (lsgan_qi's margin Δ(x_i, G(z_i))): during the
        # unroll these are each inner step's own batches, so that Δ pairs the very samples whose L(x) and
        # L(G(z)) the hinge compares; afterwards they are the outer D step's again, for the generator step.
        outer = self.real, self.fake
        try:
            for _ in range(self.k):
                real = self.noisy(self.real_batch())
                fake = self.noisy(self.fake_batch(g_buffers))
                self.real, self.fake = real, fake
                state = {**params, **frozen, **buffers}
                real_out, fake_out = self.d_forward_at(state, real, fake)
                d_loss = self.layout.total(self.loss.d_loss(real_out, fake_out))
                grads = torch.autograd.grad(d_loss, [params[n] for n in names], create_graph=True, allow_unused=True)
                new = {}
                for n, g in zip(names, grads):
                    q, group = params[n], groups[n]
                    if g is None:  # the loss does not depend on this parameter: its gradient is 0
                        g = torch.zeros_like(q)
                    lr = self.inner_lr if self.inner_lr is not None else group["lr"]
                    if self.inner == "sgd":
                        new[n] = q - lr * g
                        continue
                    beta1, beta2 = group["betas"]
                    if group["weight_decay"]:
                        g = g + group["weight_decay"] * q
                    m, v, t = moments[n]
                    t += 1
                    m = beta1 * m + (1 - beta1) * g
                    v = beta2 * v + (1 - beta2) * g * g
                    moments[n] = (m, v, t)
                    bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
                    new[n] = q - (lr / bc1) * m / (_sqrt0(v) / bc2 ** 0.5 + group["eps"])
                params = new
        finally:
            self.real, self.fake = outer
        return {**params, **frozen, **buffers}, real

    def g_outputs(self, real_out: Tensor):
        """G's step sees D unrolled k steps ahead, θ_D^K(θ_G), and the last inner real batch's D^K(x).
        k=0 is Alternating's verdict, bit for bit (no extra draws)."""
        if self.k == 0:
            return super().g_outputs(real_out)
        unrolled, real_k = self.unroll()
        real_out_k, fake_out_g = self.d_forward_at(unrolled, real_k, self.noisy(self.fake_g))
        return fake_out_g, real_out_k
