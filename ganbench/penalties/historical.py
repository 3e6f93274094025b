"""Historical averaging of both players (Salimans et al. 2016, §3.3)."""
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import Penalty, check_nonnegative


class RunningMean:
    """The mean θ̄ of the values a player's parameters have taken at its past steps, by parameter name."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Dict[str, Tensor] = {}

    def term(self, module: nn.Module) -> Optional[Tensor]:
        """‖θ - θ̄‖² summed over every parameter (None before the first step: no history yet)."""
        if self.count == 0:
            return None
        return sum((p - self.mean[n]).square().sum() for n, p in module.named_parameters())

    @torch.no_grad()
    def fold(self, module: nn.Module) -> None:
        """θ̄ ← θ̄ + (θ - θ̄)/(t+1): the current values join the history (exact mean of every value seen)."""
        self.count += 1
        for n, p in module.named_parameters():
            if n in self.mean:
                self.mean[n].add_((p.detach() - self.mean[n]) / self.count)
            else:
                self.mean[n] = p.detach().clone()

    def state(self) -> Dict[str, Any]:
        return {"count": self.count, "mean": {n: t.clone() for n, t in self.mean.items()}}

    def load(self, state: Dict[str, Any], module: nn.Module) -> None:
        device = {n: p.device for n, p in module.named_parameters()}
        self.count = int(state["count"])
        self.mean = {n: t.to(device[n]) for n, t in state["mean"].items()}


@dataclass
class Historical(Penalty):
    """Each player adds weight·‖θ - (1/t)Σ_{i<t} θ_i‖² to its loss, θ_i = its parameters at its i-th step
    (i = 0, 1, ...; θ_0 = the initial ones), t = the steps it has taken: D in D's loss (``__call__``, every
    discriminator step), G in G's (``g_extra``, every generator step). The term is 0 at a player's first
    step (no history); the running means are detached (constants of each step's gradient), kept per
    parameter and checkpointed (``penalty_state``), so a resumed run continues exactly.

    ``weight``: the paper writes the term without a coefficient, so 1.0 (the default) is the paper's
    expression; the paper reports no tuned value. ``every`` must be 1: the mean is over every past step.
    As a penalty it replaces any other penalty (penalty= selects one).
    """

    name = "historical"
    weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nonnegative(weight=self.weight)
        if self.every != 1:
            raise ConfigError(f"every: historical averaging averages over every past step; must be 1 (got {self.every})")
        self.hist_d, self.hist_g = RunningMean(), RunningMean()

    def bind(self, game: Any) -> None:
        self.game = game

    def _step(self, hist: RunningMean, module: nn.Module) -> Tensor:
        term = hist.term(module)
        hist.fold(module)  # after the term: θ_t joins the history of the next step
        return self.game.zero if term is None else self.weight * term

    def __call__(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        return self._step(self.hist_d, D)

    def g_extra(self, game: Any) -> Tensor:
        return self._step(self.hist_g, game.G)

    def state_dict(self) -> Dict[str, Any]:
        return {"D": self.hist_d.state(), "G": self.hist_g.state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.hist_d.load(state["D"], self.game.D)
        self.hist_g.load(state["G"], self.game.G)
