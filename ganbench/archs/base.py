"""Shared pieces of the architectures: activations, normalisations, spectral normalisation and the DCGAN
initialisation."""
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _torch_spectral_norm

from ..errors import ConfigError
from .layers import Maxout, MinibatchDiscrimination, VirtualBatchNorm

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "tanh": nn.Tanh,
    "elu": lambda: nn.ELU(inplace=True),
}


def activation(name: str, key: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"{key}: unknown activation '{name}'; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv/linear weights ~ N(0, 0.02); norm scales ~ N(1, 0.02); biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm, VirtualBatchNorm)):
        if module.weight is not None:
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


#: Layers whose ``weight`` spectral normalisation divides by its largest singular value.
SN_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
#: Power iterations per forward pass: 1, Miyato et al. 2018 (Algorithm 1; their code's ``Ip=1``).
SN_POWER_ITERATIONS = 1
#: The normalisation's ε (a choice: Miyato et al. state none; torch's default, also their Chainer code's 1e-12).
SN_EPS = 1e-12


def apply_spectral_norm(net: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every convolution and linear layer of ``net``, in place:

        W̄ = W / σ(W),  σ(W) ≈ ũᵀ W ṽ,  ṽ ← Wᵀũ / ‖Wᵀũ‖,  ũ ← W ṽ / ‖W ṽ‖,

    W reshaped to (out, in·k·k) (a transposed convolution's (in, out, k, k) weight to (out, in·k·k)), one power
    iteration per forward pass in train mode (none in eval mode), through
    ``torch.nn.utils.parametrizations.spectral_norm``. The vectors ũ, ṽ are buffers (``..._u``, ``..._v``) of
    the module's state_dict: checkpoints hold them and a resume continues them exactly; replicas stack them
    (each replica its own ũ). Called after the weights are initialised: the trained parameter is the
    unnormalised W (``parametrizations.weight.original``), and ũ, ṽ are drawn from N(0, I) (torch's global RNG)
    and refined by 15 power iterations at construction. Minibatch discrimination's tensor T and norm layers
    are not weights of this kind and are left as they are (Miyato et al. normalise every layer's W).
    """
    for module in list(net.modules()):
        if isinstance(module, SN_LAYERS) and not parametrize.is_parametrized(module, "weight"):
            _torch_spectral_norm(module, n_power_iterations=SN_POWER_ITERATIONS, eps=SN_EPS)
    return net


def check_minibatch_discrimination(kernels: int, dim: int) -> None:
    if kernels < 0:
        raise ConfigError(f"minibatch_discrimination: must be 0 (off) or a number of kernels >= 1 (got {kernels})")
    if dim < 1:
        raise ConfigError(f"mbd_dim: must be an integer >= 1 (got {dim})")


class FeatureTrunk(nn.Module):
    """A discriminator ``self.net`` (an nn.Sequential) whose hidden activations have names.

    ``feature_names`` lists D's hidden layers in order; ``features(x)`` returns their activations (each
    layer's output after its activation, or its maxout units), the last one being the input of the final linear layer (of the
    minibatch-discrimination layer when there is one). Feature matching (objective=feature_matching) reads them.
    """

    net: nn.Sequential

    def name_features(self, prefix: str) -> None:
        """Name the output of every activation (or maxout) module of ``self.net`` ``{prefix}1``, ``{prefix}2``, ..."""
        acts = tuple(type(f()) for f in ACTIVATIONS.values()) + (Maxout,)
        at = [i for i, m in enumerate(self.net) if isinstance(m, acts)]
        self._feature_at = {i: f"{prefix}{k + 1}" for k, i in enumerate(at)}
        self.feature_names = list(self._feature_at.values())

    def features(self, x):
        """{name: activation} of D's hidden layers on ``x`` (the same computation as ``forward``)."""
        out, h = {}, x
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in self._feature_at:
                out[self._feature_at[i]] = h
                if len(out) == len(self._feature_at):
                    break
        return out

    def uses_minibatch_discrimination(self) -> bool:
        return any(isinstance(m, MinibatchDiscrimination) for m in self.modules())


def _reset_normalised(module: nn.Module) -> None:
    """``reset_parameters`` of a spectrally normalised layer: its own initialisation of the trained weight W
    (``parametrizations.weight.original``) and bias, and fresh ũ, ṽ (N(0, I), 15 power iterations, as at
    construction). reset_parameters itself would write into the computed W̄; and removing the parametrization
    would change the class the copy shares with D's layer (torch deletes the property from it)."""
    import torch.nn.functional as F

    base = type(module).__bases__[0]  # nn.Linear, nn.Conv2d, ...: the class before the parametrization
    plain = base.__new__(base)
    plain.__dict__.update(module.__dict__)
    plain._parameters = {"weight": module.parametrizations.weight.original, "bias": module.bias}
    plain.reset_parameters()  # in place, on the shared tensors
    sn = module.parametrizations.weight[0]
    with torch.no_grad():
        mat = sn._reshape_weight_to_matrix(module.parametrizations.weight.original)
        sn._u.copy_(F.normalize(mat.new_empty(mat.shape[0]).normal_(0, 1), dim=0, eps=sn.eps))
        sn._v.copy_(F.normalize(mat.new_empty(mat.shape[1]).normal_(0, 1), dim=0, eps=sn.eps))
        sn._power_method(mat, 15)


def mirror_of_discriminator(D: nn.Module, out_dim: int, objective: str):
    """D's layers up to its output layer, copied and re-initialised, plus a new ``out_dim``-wide output layer of
    the same kind (a Linear for arch=mlp, the 4×4 → 1×1 convolution for arch=dcgan): the encoder of an
    autoencoder D (EBGAN) or of a mode-regularized GAN's E. Returns (body, head, takes_flat_input)."""
    import copy

    net = getattr(D, "net", None)
    last = net[-1] if isinstance(net, nn.Sequential) and len(net) else None
    if isinstance(last, nn.Linear):
        head = nn.Linear(last.in_features, out_dim)
    elif isinstance(last, nn.Conv2d):
        head = nn.Conv2d(last.in_channels, out_dim, last.kernel_size, last.stride, last.padding)
    else:
        raise ConfigError(f"objective={objective}: the network mirrors D's layers (D.net ending in a Linear or "
                          "Conv2d output layer, as arch=mlp and arch=dcgan build); this D has none")
    body = copy.deepcopy(net[:-1])
    normalised = parametrize.is_parametrized(last, "weight")
    for module in body.modules():
        if parametrize.is_parametrized(module, "weight"):
            _reset_normalised(module)
            normalised = True
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()  # fresh weights: a copy of D's would tie the new network's start to D
    if normalised:
        apply_spectral_norm(head)  # normalised as D's output layer is
    return body, head, isinstance(last, nn.Linear)

