"""The loss interface every objective implements."""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import Tensor, nn


@dataclass
class Loss:
    """A GAN loss on the discriminator's raw outputs (logits / critic values, no sigmoid).

    Subclasses are dataclasses whose fields are the loss's hyperparameters; the fields double as the
    config schema of the matching ``conf/objective/*.yaml`` keys.
    """

    name = "base"
    #: True when a higher D output means "more real" (logits, critics); False for an energy or a loss
    #: function on samples (EBGAN, LS-GAN), where lower means more real.
    higher_is_real = True
    #: Whether replicas of this loss are batched (train.replicas): each term a mean over the batch axis (the last
    #: axis of D's outputs), no state, no extra players; otherwise the seeds train in turn (ganbench/replicas.py).
    replicable = False

    def build_players(self, build: Callable[[], Tuple[nn.Module, nn.Module]]) -> Tuple[nn.Module, nn.Module]:
        """G and D from ``build`` (the arch's constructor); an objective with several of each (a mixture)
        calls it more than once. G must keep a ``z_dim`` attribute."""
        return build()

    def bind(self, game: Any) -> None:
        """Called once when the game is built. A loss that needs more than D's outputs (the input
        batches ``game.real`` / ``game.fake``, D's intermediate features, extra players) keeps ``game``."""

    def players(self, game: Any) -> Dict[str, Tuple[nn.Module, Optional[torch.optim.Optimizer]]]:
        """Extra players this objective trains besides G and D (e.g. an encoder), with their optimizers;
        the game steps each optimizer right after G's, on the same backward pass, and checkpoints both."""
        return {}

    def g_extra(self, game: Any) -> Tensor:
        """A term the generator step adds to ``g_loss`` (regularisers that need the game, e.g. an encoder's)."""
        return game.zero

    def state_dict(self) -> Dict[str, Any]:
        """State the loss keeps across steps (checkpointed under ``loss_state`` when non-empty)."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore ``state_dict``'s values."""

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        """Discriminator loss (minimised) given D(x) and D(G(z)), each of shape (B,), or (N, B) for N
        replicas: reduce over the batch with ``.mean(-1)`` so that each replica gets its own loss."""
        raise NotImplementedError

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        """Generator loss (minimised) given D(G(z)) and, for losses that need it, a detached D(x)."""
        raise NotImplementedError
