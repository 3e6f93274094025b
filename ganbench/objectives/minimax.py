"""The saturating minimax loss of Goodfellow et al. 2014."""
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .nonsaturating import NonSaturating


@dataclass
class Minimax(NonSaturating):
    """L_D = E softplus(-D(x)) + E softplus(D(x̃)) (as non-saturating);  L_G = -E softplus(D(x̃)) (= E log(1 - σ(D(x̃)))).

    ``real_label`` (inherited from NonSaturating): one-sided label smoothing of D's real target.
    """

    name = "minimax"

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return -F.softplus(fake_out).mean(-1)
