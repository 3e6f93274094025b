"""The GMM-GAN in closed form (Li, Madry, Peebles, Schmidt, "Towards Understanding the Dynamics of GANs", §2.2).

Generator  G_μ(x) = ½φ(x−μ₁) + ½φ(x−μ₂)  (two unit-variance Gaussians, uniform weights).
Discriminator  D = 1[ℓ₁,r₁] + 1[ℓ₂,r₂]  with  ℓ₁ ≤ r₁ ≤ ℓ₂ ≤ r₂.
Loss  L(μ,ℓ,r) = E_{G_μ*}[D] + E_{G_μ}[1−D] = 1 + Σᵢ ∫_{ℓᵢ}^{rᵢ} F(x) dx,  F = G_μ* − G_μ.

Everything is exact (no sampling) and batched, components first: ``mu`` is (2, *batch), the
discriminator ``ends`` is (4, *batch) holding (ℓ₁, r₁, ℓ₂, r₂) in this order, and the target μ* is
(2,) or (2, *batch). Components first keeps the batch innermost, so that compiled kernels vectorise over
runs. Endpoints may be ±inf (the optimal discriminator's intervals can be unbounded).
"""
import math
from typing import List

import torch
from torch import Tensor

INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# ∂L/∂ℓᵢ = −F(ℓᵢ), ∂L/∂rᵢ = +F(rᵢ): the sign of each endpoint in (ℓ₁, r₁, ℓ₂, r₂).
ENDPOINT_SIGNS = (-1.0, 1.0, -1.0, 1.0)


def column(values, like: Tensor) -> Tensor:
    """A (k, 1, ..., 1) tensor of ``values`` that broadcasts against ``like`` (k, *batch)."""
    out = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return out.reshape(out.shape[0], *([1] * (like.dim() - 1)))


def endpoint_signs(ends: Tensor) -> Tensor:
    """(−1, +1, −1, +1) shaped to broadcast against ``ends`` (4, *batch)."""
    return column(ENDPOINT_SIGNS, ends)


def as_target(target: Tensor, mu) -> Tensor:
    """μ* (2,) or (2, *batch), broadcastable against ``mu`` ((2, *batch) or a list of two (*batch))."""
    like = mu[0]
    target = torch.as_tensor(target, dtype=like.dtype, device=like.device)
    return target.reshape(2, *([1] * like.dim())) if target.dim() == 1 else target


def normal_pdf(x: Tensor) -> Tensor:
    """φ(x) = exp(−x²/2)/√(2π)."""
    return torch.exp(-0.5 * x * x) * INV_SQRT_2PI


def normal_cdf(x: Tensor) -> Tensor:
    """Φ(x) = ½ erfc(−x/√2); erfc keeps the lower tail accurate."""
    return 0.5 * torch.erfc(-x * (1.0 / math.sqrt(2.0)))


def mixture_pdf(x: Tensor, mu: Tensor) -> Tensor:
    """G_μ(x) = ½φ(x−μ₁) + ½φ(x−μ₂);  x broadcasts against μⱼ (*batch), e.g. (n, *batch) or (*batch)."""
    return 0.5 * (normal_pdf(x - mu[0]) + normal_pdf(x - mu[1]))


def mixture_cdf(x: Tensor, mu: Tensor) -> Tensor:
    """∫_{−∞}^x G_μ = ½Φ(x−μ₁) + ½Φ(x−μ₂)."""
    return 0.5 * (normal_cdf(x - mu[0]) + normal_cdf(x - mu[1]))


def pdf_difference(x: Tensor, mu: Tensor, target: Tensor) -> Tensor:
    """F(x) = G_μ*(x) − G_μ(x): the discriminator gains where F > 0 and loses where F < 0."""
    return mixture_pdf(x, as_target(target, mu)) - mixture_pdf(x, mu)


def pdf_difference_slope(x: Tensor, mu: Tensor, target: Tensor) -> Tensor:
    """F'(x) = ½Σⱼ −(x−μ*ⱼ)φ(x−μ*ⱼ) + ½Σⱼ (x−μⱼ)φ(x−μⱼ)."""
    target = as_target(target, mu)
    total = 0.0
    for j in range(2):
        dt, dg = x - target[j], x - mu[j]
        total = total + dg * normal_pdf(dg) - dt * normal_pdf(dt)
    return 0.5 * total


def loss(mu: Tensor, ends: Tensor, target: Tensor) -> Tensor:
    """L(μ,ℓ,r) = 1 + Σᵢ ∫_{ℓᵢ}^{rᵢ} (G_μ* − G_μ) dx, with ∫_a^b G_μ = ½Σⱼ (Φ(b−μⱼ) − Φ(a−μⱼ)).

    ``ends``: (4, *batch) or a list of four (*batch) tensors.
    """
    target = as_target(target, mu)
    l1, r1, l2, r2 = (mixture_cdf(e, target) - mixture_cdf(e, mu) for e in ends)
    return 1.0 + (r1 - l1) + (r2 - l2)


def grad_mu_parts(mu, ends) -> List[Tensor]:
    """[∂L/∂μ₁, ∂L/∂μ₂] with ∂L/∂μⱼ = ½ Σᵢ [φ(rᵢ−μⱼ) − φ(ℓᵢ−μⱼ)]; μ and ends as tensors or lists of parts."""
    l1, r1, l2, r2 = ends
    return [0.5 * (normal_pdf(r1 - m) - normal_pdf(l1 - m) + normal_pdf(r2 - m) - normal_pdf(l2 - m)) for m in mu]


def grad_mu(mu: Tensor, ends: Tensor) -> Tensor:
    """∂L/∂μ -> (2, *batch); ``ends``: (4, *batch) or a list of four."""
    return torch.stack(grad_mu_parts(mu, ends))


def grad_ends(mu: Tensor, ends: Tensor, target: Tensor) -> Tensor:
    """∂L/∂ℓᵢ = −F(ℓᵢ), ∂L/∂rᵢ = F(rᵢ)  -> (4, *batch) in the order (ℓ₁, r₁, ℓ₂, r₂)."""
    return endpoint_signs(ends) * pdf_difference(ends, mu, target)


# ---------------------------------------------------------------------------------------------------------
# The optimal discriminator: the set {F > 0}.
#
# Up to the positive factor e^{−x²/2}/(2√(2π)), F(x) is the exponential sum g(x) = Σₖ cₖ e^{λₖx} with
# λ = (μ*₁, μ*₂, μ₁, μ₂) and cₖ = ±e^{−λₖ²/2} (+ for the target, − for the generator). Sort λ ascending.
# Rolle's theorem on g·e^{−λ₀x} shows that the zeros of g are separated by those of the three-term sum
# g₁ = Σ_{k≥1} cₖ(λₖ−λ₀)e^{λₖx}, and those in turn by the single zero of the two-term sum
# g₂ = Σ_{k≥2} cₖ(λₖ−λ₀)(λₖ−λ₁)e^{λₖx}, which is explicit. So F has at most three zero crossings, and each
# is bracketed on a piece where it is the only one: no grid, no missed pair of zeros.
# Zeros further than WINDOW from every mean are dropped: there φ < 1e−22, so they change neither L nor ∇L.
# ---------------------------------------------------------------------------------------------------------
WINDOW = 10.0
SECTION_POINTS = 15   # interior points per pass: each pass shrinks a bracket 16-fold
SECTION_PASSES = 5    # 16⁵ ≈ 10⁶: a bracket of width ≤ 30 ends up < 3e-5 wide ...
NEWTON_STEPS = 3      # ... and Newton, quadratic from there, reaches float64 round-off


def _exponential_sum(mu: Tensor, target: Tensor):
    """λ sorted ascending with log|cₖ| and sign(cₖ) of F's exponential-sum form, each (4, *batch)."""
    target = as_target(target, mu).expand_as(mu)
    rates = torch.cat([target, mu], 0)
    signs = torch.cat([torch.ones_like(target), -torch.ones_like(mu)], 0)
    rates, order = rates.sort(0)
    return rates, -0.5 * rates * rates, signs.gather(0, order)


def _eval_sum(x: Tensor, rates: Tensor, log_abs: Tensor, signs: Tensor, derivative: bool = False):
    """Σₖ sₖ e^{log|cₖ| + λₖx} (and its x-derivative), both scaled by the same e^{−max}: signs are exact
    and nothing overflows.  x (m, *batch), coefficients (K, *batch) -> (m, *batch). log|c| = −inf drops a term.
    """
    exponents = log_abs.unsqueeze(0) + rates.unsqueeze(0) * x.unsqueeze(1)      # (m, K, *batch)
    top = exponents.amax(1, keepdim=True).clamp_min(torch.finfo(exponents.dtype).min)  # all terms zero: no NaN
    terms = signs.unsqueeze(0) * torch.exp(exponents - top)
    value = terms.sum(1)
    if not derivative:
        return value
    return value, (terms * rates.unsqueeze(0)).sum(1)


def _solve_in_brackets(lo: Tensor, hi: Tensor, rates: Tensor, log_abs: Tensor, signs: Tensor) -> Tensor:
    """The zero of the sum in each bracket [lo, hi] (m, *batch) where it changes sign, else NaN.

    Multisection (a few passes over SECTION_POINTS points, vectorised) then Newton steps kept inside the
    final bracket. A fixed amount of work and no data-dependent control flow: it compiles and vectorises.
    """
    f_lo = _eval_sum(lo, rates, log_abs, signs)
    has_root = (f_lo * _eval_sum(hi, rates, log_abs, signs)) < 0
    fractions = torch.arange(SECTION_POINTS + 2, dtype=lo.dtype, device=lo.device) / (SECTION_POINTS + 1)
    fractions = fractions.reshape(1, -1, *([1] * (lo.dim() - 1)))
    a, b = lo, hi
    for _ in range(SECTION_PASSES):
        points = a.unsqueeze(1) + (b - a).unsqueeze(1) * fractions                # (m, P+2, *batch)
        values = _eval_sum(points.flatten(0, 1), rates, log_abs, signs).reshape(points.shape)
        changed = (values * f_lo.unsqueeze(1)) <= 0                                # sign differs from f(lo)
        changed[:, -1] = True                                                      # (no root: any bracket)
        first = changed.to(torch.int8).argmax(1, keepdim=True).clamp_min(1)
        b = points.gather(1, first).squeeze(1)
        a = points.gather(1, first - 1).squeeze(1)
    x = 0.5 * (a + b)
    for _ in range(NEWTON_STEPS):
        value, slope = _eval_sum(x, rates, log_abs, signs, derivative=True)
        newton = x - value / slope
        x = torch.where((newton >= a) & (newton <= b), newton, x)  # NaN/inf/outside: keep the midpoint
    return torch.where(has_root, x, torch.full_like(x, float("nan")))


def pdf_difference_zeros(mu: Tensor, target: Tensor) -> Tensor:
    """The (at most three) zero crossings of F = G_μ* − G_μ, ascending, NaN-padded -> (3, *batch)."""
    rates, log_c, signs = _exponential_sum(mu, target)
    lo = rates[:1] - WINDOW
    hi = rates[-1:] + WINDOW

    # g₂ (terms k = 2, 3): its zero solves c₂'e^{λ₂x} + c₃'e^{λ₃x} = 0, i.e. x = log(|c₂'|/|c₃'|)/(λ₃−λ₂).
    factor2 = (rates[2:] - rates[:1]) * (rates[2:] - rates[1:2])
    log2 = log_c[2:] + torch.log(factor2.abs())
    sign2 = signs[2:] * torch.sign(factor2)
    gap = rates[3:4] - rates[2:3]
    z2 = (log2[:1] - log2[1:]) / gap
    valid = (sign2[:1] * sign2[1:] < 0) & (gap > 0) & torch.isfinite(z2)
    split = torch.where(valid, z2, hi).clamp(lo, hi)

    # g₁ (terms k = 1..3): at most one zero on each side of g₂'s zero.
    factor1 = rates[1:] - rates[:1]
    log1 = log_c[1:] + torch.log(factor1.abs())
    sign1 = signs[1:] * torch.sign(factor1)
    z1 = _solve_in_brackets(torch.cat([lo, split]), torch.cat([split, hi]), rates[1:], log1, sign1)

    # g: at most one zero on each of the (up to) three pieces cut at the zeros of g₁.
    cuts = torch.where(torch.isnan(z1), hi, z1).sort(0).values
    z0 = _solve_in_brackets(torch.cat([lo, cuts]), torch.cat([cuts, hi]), rates, log_c, signs)
    return z0.sort(0).values  # NaN sorts last


def optimal_discriminator(mu: Tensor, target: Tensor) -> Tensor:
    """argmax_{ℓ,r} L(μ,ℓ,r): the intervals of {F > 0} as (ℓ₁, r₁, ℓ₂, r₂) (4, *batch), possibly ±inf.

    F → 0 at ±∞ and has at most three sign changes, so {F > 0} is at most two intervals. A missing second
    interval is returned empty at +inf ([+inf, +inf]), which adds nothing to L or its gradients.
    """
    zeros = pdf_difference_zeros(mu, target)
    inf = torch.full_like(zeros[:1], float("inf"))
    bounds = torch.cat([-inf, torch.where(torch.isnan(zeros), inf, zeros), inf, inf], 0)   # (6, *batch)
    # The sign of F left of every zero decides whether the positive pieces are segments 0 and 2, or 1 and 3.
    rates, log_c, signs = _exponential_sum(mu, target)
    first = torch.where(torch.isnan(zeros[:1]), rates[:1], zeros[:1])
    probe = torch.minimum(first, rates[:1]) - 1.0
    left_positive = _eval_sum(probe, rates, log_c, signs) > 0
    return torch.where(left_positive, torch.cat([bounds[0:2], bounds[2:4]]), torch.cat([bounds[1:3], bounds[3:5]]))


def total_variation(mu: Tensor, target: Tensor) -> Tensor:
    """d_TV(G_μ*, G_μ) = max_{ℓ,r} L(μ,ℓ,r) − 1 = ∫_{F>0} F (the paper's eq. 4)."""
    return loss(mu, optimal_discriminator(mu, target), target) - 1.0
