"""GAN losses, one class per file; ``conf/objective/*.yaml`` are the named recipes that use them."""
import sys

from ..registry import discover
from .base import Loss

LOSSES = discover(sys.modules[__name__], Loss)

__all__ = ["Loss", "LOSSES"]
