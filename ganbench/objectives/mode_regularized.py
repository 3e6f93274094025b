"""The mode-regularized GAN (Che et al. 2017, as the survey states it): an encoder E and two regularisers."""
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..archs.base import dcgan_init, mirror_of_discriminator
from ..errors import ConfigError
from .nonsaturating import NonSaturating


class Encoder(nn.Module):
    """E: x → z, the mirror of D with a z_dim-wide output layer.

    ``body`` is a copy of D's layers up to its output layer (for the MLP D: the hidden Linear + activation
    layers; for the DCGAN D: the stride-2 4×4 convolutions, norms and LeakyReLU), re-initialised; ``head``
    replaces D's 1-wide output by a z_dim-wide one of the same kind (Linear, or the 4×4 → 1×1 convolution).
    Re-initialisation: PyTorch's defaults on 2-D points (as the MLP D), N(0, 0.02) (DCGAN) on images.
    """

    def __init__(self, D: nn.Module, z_dim: int, image: bool):
        super().__init__()
        self.body, self.head, self.flatten_input = mirror_of_discriminator(D, z_dim, "mdgan")
        if image:
            self.apply(dcgan_init)

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x.flatten(1) if self.flatten_input else x)
        return self.head(h).flatten(1)


@dataclass
class ModeRegularized(NonSaturating):
    """Non-saturating GAN plus the encoder's regularisers (Che et al. 2017, as the survey states it):

    T_G = -E_z log σ(D(G(z))) + R,   T_E = R,   D: the non-saturating D loss,
    R   = E_x[λ₁ ‖x - G(E(x))‖² + λ₂ softplus(-D(G(E(x))))]   (squared L2 summed over dimensions).

    The λ₂ term: the survey prints "+λ₂ log D(G(E(x)))", whose sign is ambiguous (minimising +log D would
    make reconstructions look *fake*). Its purpose is that reconstructions of real data, minor modes included,
    look real to D, so here it is -λ₂ log σ(D(G(E(x)))) = λ₂ softplus(-D(G(E(x)))): minimising it over E or
    G *raises* D(G(E(x))) (tests/test_mdgan.py checks a gradient step does).

    E's update: T_G = -E log σ(D(G(z))) + T_E and the first term does not depend on E, so ∇_E T_G = ∇_E T_E.
    The game's single backward of g_loss + g_extra (= T_G) therefore gives G its gradient ∇_G T_G and E
    exactly ∇_E T_E, and opt_E steps right after opt_G on it. x is the last D step's real batch (as D sees it,
    ``game.real``): Che et al. use the same minibatch for the D, G and E updates of an iteration.
    """

    name = "mode_regularized"
    replicable = False  # its extra terms are not per-run reductions
    lambda1: float = 0.01  # λ₁: weight of the reconstruction ‖x - G(E(x))‖²
    lambda2: float = 0.01  # λ₂: weight of the mode regulariser softplus(-D(G(E(x))))
    e_lr: Optional[float] = None  # E's learning rate; None: the G optimizer's

    def __post_init__(self) -> None:
        for key in ("lambda1", "lambda2"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"{key}: must be >= 0 (got {getattr(self, key)})")
        if self.e_lr is not None and not self.e_lr > 0:
            raise ConfigError(f"e_lr: must be > 0 or null (the G optimizer's) (got {self.e_lr})")
        self.game: Any = None
        self.E: Optional[nn.Module] = None

    def bind(self, game: Any) -> None:
        self.game = game

    def players(self, game: Any) -> Dict[str, Tuple[nn.Module, Optional[torch.optim.Optimizer]]]:
        """E, mirroring D, with an optimizer of the G optimizer's kind and settings (lr: ``e_lr`` if set)."""
        shape = tuple(game.data.shape)
        self.E = Encoder(game.D, game.G.z_dim, image=len(shape) == 3).to(game.device)
        opt_G = game.players.opt_G
        settings = dict(opt_G.defaults)
        if self.e_lr is not None:
            settings["lr"] = self.e_lr
        opt_E = type(opt_G)(self.E.parameters(), **settings)
        return {"E": (self.E, opt_E)}

    def regulariser(self, x: Tensor, G: nn.Module, D: nn.Module, E: nn.Module, noisy=lambda v: v) -> Tensor:
        """R = λ₁ E‖x - G(E(x))‖² + λ₂ E softplus(-D(G(E(x)))); ``noisy`` is D's view of an input."""
        x_rec = G(E(x))
        reconstruction = (x - x_rec).flatten(1).square().sum(1).mean()
        mode = F.softplus(-D(noisy(x_rec))).mean()
        return self.lambda1 * reconstruction + self.lambda2 * mode

    def g_extra(self, game: Any) -> Tensor:
        if self.E is None:
            raise RuntimeError("mode_regularized: the encoder is built by players(game); bind the game first")
        return self.regulariser(game.real, game.G, game.D, self.E, game.noisy)
