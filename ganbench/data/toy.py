"""2-D toy distributions: ring8, grid25, swissroll.

All sampling happens on the dataset's device with torch's global RNG (training
batches) or with an explicit ``torch.Generator`` (evaluation samples), so a
seeded run is reproducible and drawing a batch never synchronises with the host.
"""

from __future__ import annotations

import math

import torch

from ganbench.data import options


class PointsDataset:
    """Base class of the 2-D datasets: ``kind == "points"``, ``shape == (2,)``."""

    kind = "points"
    shape = (2,)

    def __init__(self, name: str, device: torch.device):
        self.name = name
        self.device = torch.device(device)
        self.centers: torch.Tensor | None = None
        self.std: float = 0.0

    @property
    def sample_device(self) -> torch.device:
        """The device training batches are drawn on (a generator given to ``sample`` lives there)."""
        return self.device

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch_size, 2) float32 points on ``self.device``, from ``generator`` (None: the global RNG)."""
        return self._draw(batch_size, generator, self.device)

    def sample_eval(self, n: int, generator: torch.Generator,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """(n, 2) float32 points drawn with ``generator`` on its device, moved to ``device`` if given."""
        out = self._draw(n, generator, generator.device)
        return out if device is None else out.to(device)

    def _draw(self, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, std={self.std}, device={self.device})"


class GaussianMixture2D(PointsDataset):
    """Equal-weight mixture of isotropic Gaussians: x = c_k + std·ε, k ~ U{0..M-1}, ε ~ N(0, I)."""

    def __init__(self, name: str, centers: torch.Tensor, std: float, device: torch.device):
        super().__init__(name, device)
        if std <= 0:
            raise ValueError(f"dataset.std must be > 0, got {std}")
        self.std = float(std)
        self.centers = centers.to(device=self.device, dtype=torch.float32)
        self._cpu_centers = centers.to(dtype=torch.float32, device="cpu")

    def _draw(self, n, generator, device):
        centers = self.centers if device == self.device else self._cpu_centers.to(device)
        k = torch.randint(centers.shape[0], (n,), device=device, generator=generator)
        noise = torch.randn(n, 2, device=device, generator=generator)
        return centers[k] + self.std * noise


def ring_centers(modes: int, radius: float) -> torch.Tensor:
    """Centres r·(cos 2πi/M, sin 2πi/M), i = 0..M-1."""
    angles = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_centers(side: int, spacing: float) -> torch.Tensor:
    """Centres spacing·{-(side-1)/2, ..., (side-1)/2}², row-major (x outer, y inner)."""
    axis = spacing * (torch.arange(side, dtype=torch.float64) - (side - 1) / 2)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1).float()


class SwissRoll(PointsDataset):
    """2-D Swiss roll (scikit-learn's make_swiss_roll, x/z coordinates):
    t = 1.5π(1 + 2u), u ~ U[0,1); x = (t cos t + noise·ε₁)/scale, y = (t sin t + noise·ε₂)/scale."""

    def __init__(self, name: str, noise: float, scale: float, device: torch.device):
        super().__init__(name, device)
        if scale <= 0 or noise < 0:
            raise ValueError(f"swissroll needs scale > 0 and noise >= 0, got scale={scale}, noise={noise}")
        self.noise = float(noise)
        self.scale = float(scale)
        # The Gaussian noise in data units; there are no discrete modes.
        self.std = self.noise / self.scale
        self.centers = None

    def _draw(self, n, generator, device):
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, device=device, generator=generator))
        xy = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
        xy = xy + self.noise * torch.randn(n, 2, device=device, generator=generator)
        return xy / self.scale


def options_ring8(cfg) -> dict:
    return {"radius": options.number(cfg, "radius", 2.0), "std": options.number(cfg, "std", 0.02)}


def options_grid25(cfg) -> dict:
    return {"spacing": options.number(cfg, "spacing", 2.0), "std": options.number(cfg, "std", 0.05)}


def options_swissroll(cfg) -> dict:
    return {"noise": options.number(cfg, "noise", 0.25, positive=False), "scale": options.number(cfg, "scale", 7.5)}


def build_ring8(cfg, device, seed=0):
    o = options_ring8(cfg)
    return GaussianMixture2D("ring8", ring_centers(8, o["radius"]), o["std"], device)


def build_grid25(cfg, device, seed=0):
    o = options_grid25(cfg)
    return GaussianMixture2D("grid25", grid_centers(5, o["spacing"]), o["std"], device)


def build_swissroll(cfg, device, seed=0):
    o = options_swissroll(cfg)
    return SwissRoll("swissroll", o["noise"], o["scale"], device)
