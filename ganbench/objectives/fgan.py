"""f-GAN (Nowozin, Cseke & Tomioka 2016): variational divergence minimisation for any f-divergence.

D_f(P‖Q) = ∫ q f(p/q) ≥ sup_T E_P[T(x)] - E_Q[f*(T(x̃))], with f* the Fenchel conjugate of f. The critic is
T = g_f(V), V = D's raw output and g_f an output activation that maps ℝ into the domain of f*, so

    F(V) = E_P[g_f(V(x))] - E_Q[f*(g_f(V(x̃)))].

D maximises F (``d_loss = -F``). G either minimises F (``g_form: saddle``, the paper's saddle point) or
maximises E_Q[g_f(V(x̃))] (``g_form: nonsaturating``, the paper's "-log D"-style alternative, the default).
The bound is tight at T* = f'(p/q).

The seven divergences, with g_f and f* exactly as in Nowozin et al. 2016, Table 2 (= REFERENCE.md), and f from
their Table 1:

    divergence   f(u)                                g_f(v)                  f*(t)             dom f*
    kl           u log u                             v                       exp(t-1)          ℝ
    reverse_kl   -log u                              -exp(-v)                -1 - log(-t)      t < 0
    pearson      (u-1)²                              v                       t²/4 + t          ℝ
    hellinger    (√u-1)²  (squared Hellinger)        1 - exp(-v)             t/(1-t)           t < 1
    js           -(u+1)log((1+u)/2) + u log u        log 2 - log(1+exp(-v))  -log(2 - exp(t))  t < log 2
    gan          u log u - (u+1) log(u+1)            -log(1+exp(-v))         -log(1 - exp(t))  t < 0
    tv           ½|u-1|                              ½ tanh(v)               t                 |t| ≤ ½

Numerics. The loss never evaluates g_f and f* one after the other: it uses f*(g_f(v)) in closed form,

    kl: exp(v-1)   reverse_kl: v - 1   pearson: v²/4 + v   hellinger: exp(v) - 1
    js: softplus(v) - log 2   gan: softplus(v)   tv: ½ tanh(v),

(e.g. gan: -log(1 - σ(v)) = -log σ(-v) = softplus(v); js: 2 - exp(log 2 + log σ(v)) = 2σ(-v)), and g_f with
softplus / logsigmoid (``log(1+exp(-v)) = softplus(-v)``), never log(1+exp(·)). What is left is a bare
exponential in four places: exp(v-1) (kl, fakes), exp(-v) (reverse_kl, reals and the nonsaturating G loss),
exp(-v) and exp(v) (hellinger, reals and fakes). Their true values overflow float32 above v ≈ 88; no rewriting
makes e^{10⁴} finite. These exponentials are continued linearly above ``EXP_LINEAR_ABOVE`` = 30 (see
``exp_lin``): exact (and bit-identical to torch.exp/expm1) for arguments ≤ 30, and for larger arguments the
tangent line at 30, which keeps value and slope continuous (C¹), finite for |v| up to ~10³⁰/e³⁰ in float32, and
still pushes D the right way (its slope stays e³⁰ > 0). A loss term of e³⁰ ≈ 10¹³ is far outside any working
training run, so the objective is unchanged wherever it is meaningful. softplus, logsigmoid and tanh are finite
with finite gradients for every finite input; the polynomial (pearson) is finite while v² is (|v| < 1.8·10¹⁹
in float32).
"""
import math
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Loss

#: Above this argument the exponentials of the loss are continued by their tangent line (see exp_lin).
EXP_LINEAR_ABOVE = 30.0
LOG2 = math.log(2.0)


class Divergence(Enum):
    """The rows of Nowozin et al. 2016, Table 2 (REFERENCE.md's f-GAN table)."""

    kl = "kl"  # Kullback-Leibler KL(P‖Q)
    reverse_kl = "reverse_kl"  # KL(Q‖P)
    pearson = "pearson"  # Pearson χ²
    hellinger = "hellinger"  # squared Hellinger
    js = "js"  # Jensen-Shannon (Nowozin's f: 2·JSD)
    gan = "gan"  # the GAN divergence, 2·JSD - log 4
    tv = "tv"  # total variation


class GForm(Enum):
    """How the generator uses F."""

    nonsaturating = "nonsaturating"  # G maximises E_Q g_f(V(x̃))  (the "-log D" trick of the paper)
    saddle = "saddle"  # G minimises F (the saddle point of the paper's objective)


def exp_lin(x: Tensor, above: float = EXP_LINEAR_ABOVE) -> Tensor:
    """exp(x) for x ≤ a; exp(a)·(1 + x - a), the tangent at a, for x > a.

    Written as exp(x̂)·(1 + x - x̂) with x̂ = min(x, a), so that neither branch is ever evaluated at an
    overflowing argument (a torch.where over an inf branch would give NaN gradients) and the gradient is
    exp(x̂) on both sides.
    """
    xc = x.clamp(max=above)
    return torch.exp(xc) * (1 + (x - xc))


def expm1_lin(x: Tensor, above: float = EXP_LINEAR_ABOVE) -> Tensor:
    """exp(x) - 1 with expm1's accuracy near 0, continued linearly above ``above`` as ``exp_lin``."""
    xc = x.clamp(max=above)
    return torch.expm1(xc) + torch.exp(xc) * (x - xc)


def log1mexp(t: Tensor) -> Tensor:
    """log(1 - exp(t)) for t ≤ 0, accurate everywhere (Mächler 2012: expm1 near 0, log1p far from it)."""
    return torch.where(t > -LOG2, torch.log(-torch.expm1(t)), torch.log1p(-torch.exp(t)))


def activation(divergence: Divergence, v: Tensor) -> Tensor:
    """The output activation g_f(v) of Nowozin et al. 2016, Table 2 (stable forms; see the module doc)."""
    if divergence is Divergence.kl or divergence is Divergence.pearson:
        return v
    if divergence is Divergence.reverse_kl:
        return -exp_lin(-v)  # -exp(-v)
    if divergence is Divergence.hellinger:
        return -expm1_lin(-v)  # 1 - exp(-v)
    if divergence is Divergence.js:
        return LOG2 - F.softplus(-v)  # log 2 - log(1+exp(-v))
    if divergence is Divergence.gan:
        return F.logsigmoid(v)  # -log(1+exp(-v))
    if divergence is Divergence.tv:
        return 0.5 * torch.tanh(v)
    raise ValueError(divergence)


def conjugate(divergence: Divergence, t: Tensor) -> Tensor:
    """The Fenchel conjugate f*(t) of Table 2 on its domain, +inf outside it (the conjugate's true value).

    The training loss uses ``conjugate_of_activation`` instead; this is the table's f* itself.
    """
    inf = torch.full_like(t, math.inf)
    if divergence is Divergence.kl:
        return torch.exp(t - 1)
    if divergence is Divergence.reverse_kl:
        inside = t < 0
        return torch.where(inside, -1 - torch.log(-torch.where(inside, t, -torch.ones_like(t))), inf)
    if divergence is Divergence.pearson:
        return t.square() / 4 + t
    if divergence is Divergence.hellinger:
        inside = t < 1
        return torch.where(inside, t / (1 - torch.where(inside, t, torch.zeros_like(t))), inf)
    if divergence is Divergence.js:
        # -log(2 - exp(t)) = -log 2 - log(1 - exp(t - log 2))
        inside = t < LOG2
        return torch.where(inside, -LOG2 - log1mexp(torch.where(inside, t, torch.zeros_like(t)) - LOG2), inf)
    if divergence is Divergence.gan:
        inside = t < 0
        return torch.where(inside, -log1mexp(torch.where(inside, t, -torch.ones_like(t))), inf)
    if divergence is Divergence.tv:
        return torch.where(t.abs() <= 0.5, t, inf)
    raise ValueError(divergence)


def conjugate_of_activation(divergence: Divergence, v: Tensor) -> Tensor:
    """f*(g_f(v)) in closed form (the table's f* at the table's g_f, simplified; see the module doc)."""
    if divergence is Divergence.kl:
        return exp_lin(v - 1)  # exp(v - 1)
    if divergence is Divergence.reverse_kl:
        return v - 1  # -1 - log(exp(-v))
    if divergence is Divergence.pearson:
        return v.square() / 4 + v
    if divergence is Divergence.hellinger:
        return expm1_lin(v)  # (1 - e^{-v}) / e^{-v} = e^v - 1
    if divergence is Divergence.js:
        return F.softplus(v) - LOG2  # -log(2 - 2σ(v)) = -log 2 - log σ(-v)
    if divergence is Divergence.gan:
        return F.softplus(v)  # -log(1 - σ(v)) = -log σ(-v)
    if divergence is Divergence.tv:
        return 0.5 * torch.tanh(v)
    raise ValueError(divergence)


@dataclass
class FGAN(Loss):
    """f-GAN (Nowozin et al. 2016, eq. 6 and Table 2): F = E_P[g_f(V(x))] - E_Q[f*(g_f(V(x̃)))].

    L_D = -F.  L_G = -E_Q[g_f(V(x̃))] (``g_form: nonsaturating``) or L_G = F (``g_form: saddle``; its E_P term
    is constant in G and only makes the logged value F).  ``divergence``: kl, reverse_kl, pearson, hellinger,
    js, gan, tv. With divergence=gan, L_D is the standard GAN loss, the nonsaturating L_G is E softplus(-V(x̃))
    and the saddle L_G is -E softplus(V(x̃)) + const (the minimax GAN).
    """

    name = "fgan"
    replicable = True
    divergence: Divergence = Divergence.gan
    g_form: GForm = GForm.nonsaturating

    def objective(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """F = E_P g_f(V(x)) - E_Q f*(g_f(V(x̃))): the variational lower bound of D_f(P‖Q)."""
        return (activation(self.divergence, real_out).mean(-1)
                - conjugate_of_activation(self.divergence, fake_out).mean(-1))

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return -self.objective(real_out, fake_out)

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        if self.g_form is GForm.saddle:
            return self.objective(real_out, fake_out)
        return -activation(self.divergence, fake_out).mean(-1)
