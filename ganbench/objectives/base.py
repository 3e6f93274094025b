"""The loss interface every objective implements."""
from dataclasses import dataclass

from torch import Tensor


@dataclass
class Loss:
    """A GAN loss on the discriminator's raw outputs (logits / critic values, no sigmoid).

    Subclasses are dataclasses whose fields are the loss's hyperparameters; the fields double as the
    config schema of the matching ``conf/objective/*.yaml`` keys.
    """

    name = "base"

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """Discriminator loss (minimised) given D(x) and D(G(z)), each of shape (B,)."""
        raise NotImplementedError

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        """Generator loss (minimised) given D(G(z)) and, for losses that need it, a detached D(x)."""
        raise NotImplementedError
