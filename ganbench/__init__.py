"""ganbench: a Hydra-configured GAN experiment runner with faithful losses, penalties and metrics."""

__version__ = "0.1.0"
