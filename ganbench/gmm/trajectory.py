"""One run per method from a chosen start, recorded at every step (the paper's Figures 1 and 2).

Figure 1 form: μ̂₁, μ̂₂ and the endpoints ℓ₁, r₁, ℓ₂, r₂ against iterations.
Figure 2 form: F = G_μ* − G_μ̂ with the discriminator's intervals shaded, at chosen steps; plus, from the
start, (a) the initial discriminator, (b) the optimal one, (c) the discriminator after ``d_only_steps``
first-order steps with the generator frozen, which collapses where it sits in a region with F < 0.
"""
import logging
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .config import GMMConfig
from .dynamics import State, discriminator_step
from .model import optimal_discriminator, total_variation
from .simulate import record

log = logging.getLogger("ganbench.gmm")


def initial_state(spec: GMMConfig, device: torch.device, dtype: torch.dtype) -> State:
    (l1, l2), (r1, r2) = spec.init.l, spec.init.r
    return State(torch.tensor(spec.init.mu, dtype=dtype, device=device),
                 torch.tensor([l1, r1, l2, r2], dtype=dtype, device=device),
                 torch.ones(2, dtype=torch.bool, device=device))


def collapse_steps(alive: Tensor) -> List[Optional[int]]:
    """For each interval, the first step at which it is collapsed (None if it never collapses). alive (T+1, 2)."""
    steps = []
    for i in range(2):
        dead = (~alive[:, i]).nonzero()
        steps.append(int(dead[0]) if len(dead) else None)
    return steps


def run_method(method: str, spec: GMMConfig, device: torch.device, dtype: torch.dtype) -> Dict[str, Tensor]:
    """The recorded history of one method (CPU float64), with the TV at every step."""
    target = torch.tensor(spec.target_mu, dtype=dtype, device=device)
    history = record(method, initial_state(spec, device, dtype), target, spec.lr, spec.iterations, spec.unroll,
                     spec.unroll_grad)
    history = {k: v.cpu() for k, v in history.items()}
    mu = history["mu"].double()
    target64 = target.double().cpu()
    if method == "optimal":
        # The discriminator that the generator faces at step t is argmax L(μ_t, ·): recompute it aligned.
        history["ends"] = optimal_discriminator(mu.T, target64).T
    history["mu"] = mu
    history["ends"] = history["ends"].double()
    history["tv"] = total_variation(mu.T, target64)
    return history


def discriminator_only(spec: GMMConfig, steps: int) -> State:
    """First-order discriminator steps from the initial discriminator, the generator frozen (Figure 2(c))."""
    state = initial_state(spec, torch.device("cpu"), torch.float64)
    target = torch.tensor(spec.target_mu, dtype=torch.float64)
    ends, alive = list(state.ends.unbind(0)), list(state.alive.unbind(0))
    for _ in range(steps):
        ends, alive, _ = discriminator_step(state.mu, ends, alive, target, spec.lr)
    return State(state.mu, torch.stack(ends), torch.stack(alive))


def x_range(spec: GMMConfig) -> List[float]:
    """The plotted x range: every mean and initial endpoint, with three standard deviations of margin."""
    points = list(spec.target_mu) + list(spec.init.mu) + list(spec.init.l) + list(spec.init.r)
    return [min(points) - 3.0, max(points) + 3.0]
