"""Shared pieces of the architectures: activations, normalisations and the DCGAN initialisation."""
from torch import nn

from ..errors import ConfigError

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
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm)):
        if module.weight is not None:
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
