"""Discriminator penalties, one class per file; ``conf/penalty/*.yaml`` configure them."""
import sys

from ..registry import discover
from .base import Penalty

PENALTIES = discover(sys.modules[__name__], Penalty)

__all__ = ["Penalty", "PENALTIES"]
