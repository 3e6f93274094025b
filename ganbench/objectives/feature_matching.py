"""Feature matching (Salimans et al. 2016, §3.1) as the generator's loss."""
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .nonsaturating import NonSaturating


@dataclass
class FeatureMatching(NonSaturating):
    """G minimises L_G = ‖E_x f(x) - E_z f(G(z))‖₂², f = the activations of D's hidden layer ``layer``
    (flattened per sample; E = the batch mean); D trains with the non-saturating loss (the paper's setting),
    label smoothing included (``real_label``).

    ``layer``: a name of ``D.feature_names`` (dcgan: conv1..convN, mlp: hidden1..hidden{depth}), or ``last``
    (the default: D's last hidden layer, the one the paper uses — the input of D's output layer, or of its
    minibatch-discrimination layer). E_x f(x) comes from the real batch of the step's last D update
    (``game.real``, detached: it is a constant target for G); E_z f(G(z)) from the generator step's fake
    batch (``game.fake_g``), as D sees it (with its own instance-noise draw when instance noise is on).
    Computing the features runs D once more on each batch: with batch norm in D these passes update its
    running statistics too, which training never reads (D is always in training mode).
    """

    name = "feature_matching"
    replicable = False  # its extra terms are not per-run reductions
    layer: str = "last"

    def bind(self, game: Any) -> None:
        names = getattr(game.D, "feature_names", None)
        if not names:
            raise ConfigError(f"objective=feature_matching: the discriminator ({type(game.D).__name__}) has no named "
                              "hidden layers to match; use arch=dcgan or arch=mlp")
        if self.layer != "last" and self.layer not in names:
            raise ConfigError(f"objective.layer: unknown layer '{self.layer}'; allowed: last, {', '.join(names)}")
        self.game = game
        self.feature = names[-1] if self.layer == "last" else self.layer

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        # G's whole loss is the feature-matching term of g_extra; D's output on the fake batch is unused.
        return torch.zeros((), device=fake_out.device, dtype=fake_out.dtype)

    def g_extra(self, game: Any) -> Tensor:
        with torch.no_grad():
            real = game.D.features(game.real.detach())[self.feature].flatten(1).mean(0)
        fake = game.D.features(game.noisy(game.fake_g))[self.feature].flatten(1).mean(0)
        return (real - fake).square().sum()
