"""The non-saturating GAN loss ("vanilla GAN" in the DRAGAN paper), with one-sided label smoothing."""
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from .base import Loss


@dataclass
class NonSaturating(Loss):
    """L_D = E softplus(-D(x)) + E softplus(D(x̃));  L_G = E softplus(-D(x̃)) (= -E log σ(D(x̃))).

    ``real_label`` = r: one-sided label smoothing (Salimans et al. 2016, §3.4; r = 0.9 there): D's target on
    reals is r, on fakes still 0, so L_D = E BCE(D(x), r) + E softplus(D(x̃)) with the BCE-with-logits
    BCE(v, r) = r·softplus(-v) + (1-r)·softplus(v). r = 1 (the default) is the plain loss, computed by the
    same expression as before the option existed.
    """

    name = "nonsaturating"
    replicable = True
    real_label: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.real_label <= 1.0:
            raise ConfigError(f"real_label: must be in (0, 1] (got {self.real_label}); 1.0 = no smoothing, "
                              "0.9 as Salimans et al. 2016")

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        if self.real_label == 1.0:
            real_term = F.softplus(-real_out).mean(-1)
        else:
            r = self.real_label
            real_term = (r * F.softplus(-real_out) + (1.0 - r) * F.softplus(real_out)).mean(-1)
        return real_term + F.softplus(fake_out).mean(-1)

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return F.softplus(-fake_out).mean(-1)
