"""GMM-GAN dynamics (paper §2.2 and §5), one step at a time for a whole batch of independent runs.

A run's state is the generator means μ, the discriminator endpoints (ℓ₁, r₁, ℓ₂, r₂) and which of its two
intervals are still alive, components first as in ``model`` (batch innermost). Every function advances
all runs of the batch together.

- first_order:  simultaneous steps  μ ← μ − η∇_μL,  (ℓ,r) ← (ℓ,r) + η∇_{ℓ,r}L            (eqs. 9–11)
- alternating:  the discriminator steps first, the generator then uses the new discriminator
- optimal:      (ℓ,r) ← argmax L(μ,·,·) (the set {F > 0}),  μ ← μ − η∇_μL                 (eqs. 7–8)
- unrolled:     μ ← μ − η d/dμ L(μ, D_K(μ)) with D_K = K discriminator steps from the current D, which
                itself takes one ordinary step (Metz et al. 2017, eq. 6 and the update below it)
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .model import (ENDPOINT_SIGNS, grad_mu_parts, loss, normal_pdf, optimal_discriminator, pdf_difference,
                    pdf_difference_slope)

METHODS = ("first_order", "optimal", "unrolled", "alternating")
UNROLL_GRADS = ("analytic", "reverse", "forward")


@dataclass
class State:
    mu: Tensor     # (2, *batch) generator means
    ends: Tensor   # (4, *batch) discriminator (ℓ₁, r₁, ℓ₂, r₂), ℓ₁ ≤ r₁ ≤ ℓ₂ ≤ r₂
    alive: Tensor  # (2, *batch) bool; False once the interval collapsed to zero width (for good)


# Inside a step the components are kept as lists of (*batch) tensors, not stacked arrays: a compiled step
# is then a single loop over the runs that evaluates each φ once. Stacking happens at the step's boundary.
Tangent = Optional[List[List[Tensor]]]   # tangent[e][j] = ∂(endpoint e)/∂μⱼ


def _select(cond: Tensor, values: List[Tensor], tangent: Tangent, i: int, new_value: Tensor,
            new_tangent: Optional[List[Tensor]]) -> None:
    """values[i] (and its derivatives ∂/∂μ) ← new ones where ``cond`` holds."""
    values[i] = torch.where(cond, new_value, values[i])
    if tangent is not None:
        tangent[i] = [torch.where(cond, n, o) for n, o in zip(new_tangent, tangent[i])]


def _mean_tangent(tangent: Tangent, i: int, k: int) -> Optional[List[Tensor]]:
    return None if tangent is None else [0.5 * (a + b) for a, b in zip(tangent[i], tangent[k])]


def keep_ordered(ends: List[Tensor], alive: List[Tensor], tangent: Tangent = None):
    """Project a discriminator back onto ℓ₁ ≤ r₁ ≤ ℓ₂ ≤ r₂ after a gradient step; detect collapse.

    1. Two live intervals that crossed (r₁ > ℓ₂) meet at the crossing's midpoint (the Euclidean projection
       onto r₁ ≤ ℓ₂): the discriminator is then one interval, and the gap may reopen later.
    2. A live interval whose width reached zero (rᵢ ≤ ℓᵢ) collapses to its midpoint and stays collapsed
       (paper §3.1): it has measure zero, contributes nothing to L or ∇_μL, and no longer moves.
    3. A collapsed interval is a point of measure zero; it slides along with its neighbour only so that the
       ordering holds. This changes no loss and no gradient.
    ``ends`` = [ℓ₁, r₁, ℓ₂, r₂], ``alive`` = [a₁, a₂] (lists of (*batch) tensors, updated copies returned).
    ``tangent``, the derivatives of the endpoints with respect to μ, goes through the same piecewise linear
    projection: the analytic unrolled gradient needs it.
    """
    ends, alive = list(ends), list(alive)
    tangent = None if tangent is None else [list(t) for t in tangent]
    L1, R1, L2, R2 = range(4)

    cross = alive[0] & alive[1] & (ends[R1] > ends[L2])
    mid, t_mid = 0.5 * (ends[R1] + ends[L2]), _mean_tangent(tangent, R1, L2)
    _select(cross, ends, tangent, R1, mid, t_mid)
    _select(cross, ends, tangent, L2, mid, t_mid)

    for i, (l, r) in enumerate(((L1, R1), (L2, R2))):
        collapsed = alive[i] & (ends[r] <= ends[l])
        point, t_point = 0.5 * (ends[l] + ends[r]), _mean_tangent(tangent, l, r)
        _select(collapsed, ends, tangent, l, point, t_point)
        _select(collapsed, ends, tangent, r, point, t_point)
        alive[i] = alive[i] & ~collapsed

    slide = ~alive[0] & (ends[R1] > ends[L2])
    for k in (L1, R1):
        _select(slide, ends, tangent, k, ends[L2], None if tangent is None else tangent[L2])
    slide = ~alive[1] & (ends[L2] < ends[R1])
    for k in (L2, R2):
        _select(slide, ends, tangent, k, ends[R1], None if tangent is None else tangent[R1])
    return ends, alive, tangent


def discriminator_step(mu: Tensor, ends: List[Tensor], alive: List[Tensor], target: Tensor, lr: float,
                       tangent: Tangent = None):
    """(ℓ,r) ← (ℓ,r) + η∇_{ℓ,r}L(μ,ℓ,r) for live intervals, then ``keep_ordered``.

    ``ends``/``alive``/``tangent`` as in ``keep_ordered``. The tangent ∂e/∂μ is carried forward exactly
    (forward mode by hand):  ∂e'/∂μⱼ = (1 + η sₑ F'(e)) ∂e/∂μⱼ + η sₑ ∂F(e)/∂μⱼ,
    with ∂F(e)/∂μⱼ = −½(e−μⱼ)φ(e−μⱼ) and sₑ = −1 for ℓ, +1 for r.
    """
    new_ends, new_tangent = [], []
    for i, (e, sign) in enumerate(zip(ends, ENDPOINT_SIGNS)):
        rate = lr * sign * alive[i // 2].to(e.dtype)
        new_ends.append(e + rate * pdf_difference(e, mu, target))
        if tangent is not None:
            slope = pdf_difference_slope(e, mu, target)
            new_tangent.append([t + rate * (slope * t - 0.5 * (e - m) * normal_pdf(e - m))
                                for t, m in zip(tangent[i], mu)])
    return keep_ordered(new_ends, alive, new_tangent if tangent is not None else None)


Parts = Tuple[List[Tensor], List[Tensor], List[Tensor]]   # (μ parts, endpoint parts, alive parts)


def first_order_parts(mu: List[Tensor], ends: List[Tensor], alive: List[Tensor], target: Tensor, lr: float) -> Parts:
    """Simultaneous gradient steps from the same point (eqs. 9–11), η_g = η_d = η."""
    g = grad_mu_parts(mu, ends)
    ends, alive, _ = discriminator_step(mu, ends, alive, target, lr)
    return [m - lr * gj for m, gj in zip(mu, g)], ends, alive


def alternating_parts(mu: List[Tensor], ends: List[Tensor], alive: List[Tensor], target: Tensor, lr: float) -> Parts:
    """The discriminator steps first; the generator then descends against the updated discriminator."""
    ends, alive, _ = discriminator_step(mu, ends, alive, target, lr)
    return [m - lr * gj for m, gj in zip(mu, grad_mu_parts(mu, ends))], ends, alive


def optimal_parts(mu: List[Tensor], ends: List[Tensor], alive: List[Tensor], target: Tensor, lr: float) -> Parts:
    """(ℓ,r) = argmax_{ℓ,r} L(μ,ℓ,r) (eq. 7), then μ ← μ − η∇_μL(μ,ℓ,r) (eq. 8).

    The returned ends are the optimal discriminator used for this step (for plots); it never collapses.
    """
    ends = list(optimal_discriminator(torch.stack(mu), target).unbind(0))
    g = grad_mu_parts(mu, ends)
    return [m - lr * gj for m, gj in zip(mu, g)], ends, [torch.ones_like(a) for a in alive]


def unrolled_gradient_parts(mu: List[Tensor], ends: List[Tensor], alive: List[Tensor], target: Tensor, lr: float,
                            unroll: int) -> List[Tensor]:
    """d/dμ L(μ, D_K(μ)) = ∂_μL(μ, D_K) + (∂D_K/∂μ)ᵀ ∇_D L(μ, D_K), with ∂D_K/∂μ carried forward.

    μ has two coordinates per run, so forward mode carries only 4×2 derivatives per run through the K
    steps: no graph, no backward pass, and every run stays independent.
    """
    zero = torch.zeros_like(mu[0])
    tangent = [[zero, zero] for _ in ends]
    for _ in range(unroll):
        ends, alive, tangent = discriminator_step(mu, ends, alive, target, lr, tangent)
    gradient = grad_mu_parts(mu, ends)
    for e, sign, t in zip(ends, ENDPOINT_SIGNS, tangent):
        d_loss_d_end = sign * pdf_difference(e, mu, target)                      # ∂L/∂e at D_K
        gradient = [g + d_loss_d_end * tj for g, tj in zip(gradient, t)]
    return gradient


def unrolled_gradient_analytic(mu: Tensor, ends: Tensor, alive: Tensor, target: Tensor, lr: float,
                               unroll: int) -> Tensor:
    """``unrolled_gradient_parts`` on stacked tensors -> (2, *batch)."""
    return torch.stack(unrolled_gradient_parts(list(mu.unbind(0)), list(ends.unbind(0)), list(alive.unbind(0)),
                                               target, lr, unroll))


def _unrolled_loss(mu: Tensor, ends: Tensor, alive: Tensor, target: Tensor, lr: float, unroll: int) -> Tensor:
    """L(μ, D_K(μ)) per run, differentiable in μ through the K discriminator steps."""
    ends, alive = list(ends.unbind(0)), list(alive.unbind(0))
    for _ in range(unroll):
        ends, alive, _ = discriminator_step(mu, ends, alive, target, lr)
    return loss(mu, torch.stack(ends), target)


def unrolled_gradient_reverse(mu: Tensor, ends: Tensor, alive: Tensor, target: Tensor, lr: float,
                              unroll: int) -> Tensor:
    """The same gradient by reverse-mode autograd; runs are independent, so ∇ of the sum is per run."""
    with torch.enable_grad():
        mu = mu.detach().requires_grad_(True)
        total = _unrolled_loss(mu, ends, alive, target, lr, unroll).sum()
        return torch.autograd.grad(total, mu)[0]


def unrolled_gradient_forward(mu: Tensor, ends: Tensor, alive: Tensor, target: Tensor, lr: float,
                              unroll: int) -> Tensor:
    """The same gradient by torch.func.jvp, one pass per coordinate of μ (all runs at once)."""
    def f(m: Tensor) -> Tensor:
        return _unrolled_loss(m, ends, alive, target, lr, unroll)

    rows = []
    for j in range(2):
        direction = torch.zeros_like(mu)
        direction[j] = 1.0
        rows.append(torch.func.jvp(f, (mu,), (direction,))[1])
    return torch.stack(rows)


UNROLLED_GRADIENTS = {
    "analytic": unrolled_gradient_analytic,
    "reverse": unrolled_gradient_reverse,
    "forward": unrolled_gradient_forward,
}


def unrolled_parts(mu: List[Tensor], ends: List[Tensor], alive: List[Tensor], target: Tensor, lr: float,
                   unroll: int, grad: str = "analytic") -> Parts:
    """Generator: μ ← μ − η d/dμ L(μ, D_K(μ)); discriminator: one ordinary step, simultaneously."""
    if grad == "analytic":
        g = unrolled_gradient_parts(mu, ends, alive, target, lr, unroll)
    else:
        g = UNROLLED_GRADIENTS[grad](torch.stack(mu), torch.stack(ends), torch.stack(alive), target, lr, unroll)
    new_ends, new_alive, _ = discriminator_step(mu, ends, alive, target, lr)
    return [m - lr * gj for m, gj in zip(mu, g)], new_ends, new_alive


def step_parts(method: str, mu: List[Tensor], ends: List[Tensor], alive: List[Tensor], target: Tensor, lr: float,
               unroll: int = 5, unroll_grad: str = "analytic") -> Parts:
    """One iteration of ``method`` (one of METHODS) on unstacked components."""
    if method == "first_order":
        return first_order_parts(mu, ends, alive, target, lr)
    if method == "alternating":
        return alternating_parts(mu, ends, alive, target, lr)
    if method == "optimal":
        return optimal_parts(mu, ends, alive, target, lr)
    if method == "unrolled":
        return unrolled_parts(mu, ends, alive, target, lr, unroll, unroll_grad)
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")


def step(method: str, state: State, target: Tensor, lr: float, unroll: int = 5, unroll_grad: str = "analytic") -> State:
    """One iteration of ``method`` (one of METHODS) for every run of ``state``."""
    mu, ends, alive = step_parts(method, list(state.mu.unbind(0)), list(state.ends.unbind(0)),
                                 list(state.alive.unbind(0)), target, lr, unroll, unroll_grad)
    return State(torch.stack(mu), torch.stack(ends), torch.stack(alive))
