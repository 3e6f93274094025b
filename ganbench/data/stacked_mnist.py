"""Stacked MNIST: three independent MNIST digits as the R, G, B channels (10³ = 1,000 modes).

A sample's mode is the digit triple (d_R, d_G, d_B); metrics recover it with a digit classifier
applied per channel, hence the MNIST images and labels exposed here.
"""

from __future__ import annotations

import logging

import torch

from ganbench.data import options
from ganbench.data.images import data_root, describe, gather_to, load_torchvision, place
from ganbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class StackedMNIST:
    """``sample(B)``: three independent uniform index draws into the MNIST split, stacked as channels,
    mapped to float32 in [-1, 1] on the device."""

    kind = "image"
    name = "stacked_mnist"
    num_modes = 1000

    def __init__(self, cfg, device: torch.device, split: str, resolution: int,
                 reference_size: int, reference_seed: int, on_device: str = "auto"):
        self.device = torch.device(device)
        self.split = split
        self.resolution = resolution
        self._cfg = cfg
        data = load_torchvision(cfg, "mnist", split, resolution, 1)
        self.mnist_images = data["images"]  # uint8 (N, 1, R, R), CPU
        self.mnist_labels = data["labels"]  # int64 (N,), CPU
        self.num_images = self.mnist_images.shape[0]  # digits each channel is drawn from
        self.shape = (3, resolution, resolution)
        log.info("%s, three digits stacked as channels", describe(
            "stacked_mnist", self.num_images, split, data_root(cfg), self.shape, what="MNIST digits"))
        self.reference_size = reference_size
        self.reference_seed = reference_seed
        self._digits = place(self.mnist_images[:, 0], self.device, on_device)
        self._references: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def sample_device(self) -> torch.device:
        return self._digits.device

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch_size, 3, R, R): three digits drawn independently per sample, from ``generator`` (None:
        the global RNG of the device that holds the digits)."""
        idx = torch.randint(self.num_images, (batch_size, 3), device=self._digits.device, generator=generator)
        x = gather_to(self._digits, idx, self.device)  # (B, 3, R, R): channel c is digit idx[:, c]
        return x.to(torch.float32).div_(127.5).sub_(1.0)

    def mnist(self, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 (N,1,R,R), int64 (N,)) MNIST images and labels of a split (None = the sampled one)."""
        if split is None or split == self.split:
            return self.mnist_images, self.mnist_labels
        data = load_torchvision(self._cfg, "mnist", split, self.resolution, 1)
        return data["images"], data["labels"]

    def reference_sample(self, split: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed stacked sample: (uint8 (n,3,R,R), int64 digit triples (n,3)), n = reference_size,
        drawn with a torch.Generator seeded by reference_seed, so every run compares with the same set."""
        key = split or self.split
        if key not in self._references:
            images, labels = self.mnist(key)
            if images.shape[0] == 0:
                raise DataError(f"MNIST {key} split is empty")
            g = torch.Generator().manual_seed(self.reference_seed)
            idx = torch.randint(images.shape[0], (self.reference_size, 3), generator=g)
            self._references[key] = (images[idx, 0].contiguous(), labels[idx])
        return self._references[key]

    def real_uint8(self, split: str | None = None) -> torch.Tensor:
        """uint8 (reference_size, 3, R, R) CPU: the fixed stacked sample of ``reference_sample``."""
        return self.reference_sample(split)[0]

    def __repr__(self) -> str:
        return (f"StackedMNIST(split={self.split!r}, digits={self.num_images}, shape={self.shape}, "
                f"device={self.device})")


def options_stacked_mnist(cfg) -> dict:
    seed = cfg.get("reference_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"dataset.reference_seed must be an integer >= 0, got {seed!r}")
    return {"split": options.split(cfg, "train"),
            "resolution": options.integer(cfg, "resolution", 32),
            "reference_size": options.integer(cfg, "reference_size", 50_000),
            "reference_seed": seed,
            "on_device": options.on_device(cfg)}


def build_stacked_mnist(cfg, device, seed=0):
    return StackedMNIST(cfg, device, **options_stacked_mnist(cfg))
