"""The penalty interface, and the per-sample input-gradient norm every gradient penalty shares."""
from dataclasses import dataclass
from typing import Any, Callable, Dict

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..replicas import SINGLE, Layout


@dataclass
class Penalty:
    """A regulariser of the discriminator, added to the discriminator's loss only.

    ``every``: lazy regularisation (as in StyleGAN2) — the penalty is applied on every ``every``-th
    discriminator step with its weight multiplied by ``every``, so its average strength is unchanged.
    """

    name = "base"
    #: True for penalties on ∇ₓD (batch norm in D would couple the samples of a batch).
    gradient_penalty = False
    #: False for penalties that add no loss term (none, weight clipping): the loop skips their call.
    adds_loss = True
    #: Whether replicas with this penalty are batched (train.replicas): per-run reductions and draws through
    #: ``self.layout``, no state, D only; otherwise the seeds train in turn (ganbench/replicas.py).
    replicable = False
    #: Whether ``every`` applies (a term that can be skipped and reweighted). Weight clipping (a projection
    #: after every D step) and no penalty have none: ``every`` other than 1 would be silently ignored.
    lazy = True
    every: int = 1
    #: The game's batch layout (one run, or replicas), set when the game is built: where the batch axis
    #: is, and each run's random stream (not a config key).
    layout = SINGLE

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"every: must be an integer >= 1 (got {self.every})")
        if not self.lazy and self.every != 1:
            raise ConfigError(f"every: penalty={self.name} has no term to apply every N steps; must be 1 "
                              f"(got {self.every})")

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        """The weighted penalty: a scalar (one per replica, shape (N,), when the game runs replicas: reduce
        over the batch with ``.mean(-1)``); ``fake`` is detached from G."""
        raise NotImplementedError

    def bind(self, game: Any) -> None:
        """Called once when the game is built; a penalty that needs the game (both players) keeps it."""

    def g_extra(self, game: Any) -> Tensor:
        """A term the generator step adds to G's loss: regularisers of both players (consensus, Nagarajan-
        Kolter, historical averaging). Called after ``__call__`` in the same step."""
        return game.zero

    def state_dict(self) -> Dict[str, Any]:
        """State kept across steps (checkpointed under ``penalty_state`` when non-empty)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore ``state_dict``'s values."""

    def after_d_step(self, D: nn.Module) -> None:
        """Hook after each optimizer step of D (weight clipping projects here)."""


def check_nonnegative(**values: float) -> None:
    for key, value in values.items():
        if value < 0:
            raise ConfigError(f"{key}: must be >= 0 (got {value})")


def input_grad(D: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = True) -> Tensor:
    """∇ₓ ΣD(x) at x (detached from x's history), differentiable w.r.t. D's parameters when ``create_graph``.

    Eagerly this is ``torch.autograd.grad``; under ``torch.compile`` (train.compile, ganbench/compiled.py),
    which cannot trace a double backward, it is the same vector-Jacobian product by ``torch.func.vjp``.
    """
    x = x.detach().requires_grad_(True)
    if torch.compiler.is_compiling():
        out, vjp = torch.func.vjp(D, x)
        (grad,) = vjp(torch.ones_like(out))
        return grad
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=create_graph)
    return grad


def input_grad_norm(D: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool = True,
                    layout: Layout = SINGLE) -> Tensor:
    """‖∇ₓD(x)‖₂ per sample, over all sample dimensions, of D's raw output; shape (B,) (replicas: (N, B)).

    Samples of a batch are independent (D has no batch norm), so ∇ of ΣD(xᵢ) w.r.t. xᵢ is ∇D(xᵢ); so are
    replicas, so the sum over them too gives each sample its own gradient.
    """
    return torch.linalg.vector_norm(layout.flat_samples(input_grad(D, x, create_graph)), dim=-1)


def input_grad_sqnorm(D: Callable[[Tensor], Tensor], x: Tensor, layout: Layout = SINGLE) -> Tensor:
    """‖∇ₓD(x)‖₂² per sample; computed without the square root, whose gradient is undefined at 0."""
    return layout.flat_samples(input_grad(D, x)).square().sum(dim=-1)


def per_sample_uniform(x: Tensor, layout: Layout = SINGLE) -> Tensor:
    """One U[0,1) draw per sample, shaped to broadcast over x's sample dimensions (each run's own stream)."""
    return layout.per_sample_uniform(x)
