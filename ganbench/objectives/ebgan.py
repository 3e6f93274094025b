"""The energy-based GAN (EBGAN, Zhao, Mathieu & LeCun 2017) with the pull-away term (EBGAN-PT)."""
from dataclasses import dataclass
from typing import Any, Callable, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from ..archs.autoencoder import AutoencoderD
from ..errors import ConfigError
from .base import Loss


def pull_away(S: Tensor) -> Tensor:
    """f_PT(S) = 1/(N(N-1)) Σ_i Σ_{j≠i} (S_iᵀS_j / (‖S_i‖‖S_j‖))² for the N rows of S (N ≥ 2; 0 for N < 2).

    A zero row has cosine 0 with every other row (its norm is clamped, as F.normalize does)."""
    n = S.shape[0]
    if n < 2:  # no pairs: the mean over them is empty
        return S.new_zeros(())
    u = F.normalize(S.flatten(1), dim=1)
    cos = u @ u.T
    off = cos.square().sum() - cos.diagonal().square().sum()
    return off / (n * (n - 1))


@dataclass
class EnergyBased(Loss):
    """EBGAN: D is an autoencoder whose output is the energy D(x) = (1/d)‖Dec(Enc(x)) - x‖² ≥ 0
    (ganbench/archs/autoencoder.py; built by ``build_players`` from the arch's D, whatever the arch).

    L_D = E D(x) + E max(0, m - D(x̃)),   L_G = E D(x̃) + λ_PT f_PT(S),
    S = Enc(x̃) for the generator step's fake batch x̃ = ``game.fake_g`` (with grad to G), f_PT = ``pull_away``.

    S is a fresh encoder pass over ``game.fake_g`` as D's live parameters encode it (whatever the dynamics
    fed D for the energy: one batch, [real; fake] concatenated, or an unrolled copy), before instance noise:
    the pull-away term measures the diversity of G's samples. With batch norm in D that pass sees the
    same batch as the energy's (the fake batch alone), so the codes are those of that forward; the pass
    also updates batch norm's running statistics once more, which D, always in training mode, never reads.
    """

    name = "energy_based"
    higher_is_real = False  # D is an energy: lower = more real
    margin: float = 1.0  # m: fakes are pushed up to energy m, no further
    pt_weight: float = 0.1  # λ_PT (the paper's 0.1); 0 = EBGAN without the pull-away term
    code_dim: int = 128  # width of the autoencoder's code (the encoder's output)

    def __post_init__(self) -> None:
        if not self.margin > 0:
            raise ConfigError(f"margin: must be > 0 (got {self.margin})")
        if not self.pt_weight >= 0:
            raise ConfigError(f"pt_weight: must be >= 0 (got {self.pt_weight})")
        if self.code_dim < 1:
            raise ConfigError(f"code_dim: must be an integer >= 1 (got {self.code_dim})")

    def build_players(self, build: Callable[[], Tuple[nn.Module, nn.Module]]) -> Tuple[nn.Module, nn.Module]:
        """G from the arch; D = the autoencoder mirroring the arch's D (whose own weights are discarded)."""
        G, D = build()
        image = any(isinstance(m, nn.Conv2d) for m in D.modules()) or _is_image_mlp(G)
        return G, AutoencoderD.from_discriminator(D, self.code_dim, image)

    def d_loss(self, real_out: Tensor, fake_out: Tensor) -> Tensor:
        return real_out.mean() + F.relu(self.margin - fake_out).mean()

    def g_loss(self, fake_out: Tensor, real_out: Tensor) -> Tensor:
        return fake_out.mean()

    def g_extra(self, game: Any) -> Tensor:
        """λ_PT f_PT(Enc(x̃)) on the generator step's fake batch."""
        if self.pt_weight == 0:
            return game.zero
        D = game.D
        if not isinstance(D, AutoencoderD):
            raise RuntimeError("energy_based: D must be the autoencoder build_players makes")
        return self.pt_weight * pull_away(D.encode(game.fake_g))


def _is_image_mlp(G: nn.Module) -> bool:
    """arch=mlp on images: its G has a (C, H, W) output shape (the MLP D then uses the DCGAN init)."""
    return len(getattr(G, "shape", ())) == 3
