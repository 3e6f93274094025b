"""Metrics for the 2-D toy datasets: mode coverage on ring8/grid25, a sample distance on swissroll."""

from __future__ import annotations

import torch


def kl_to_uniform(counts: torch.Tensor) -> float:
    """KL(p̂ ‖ uniform_M) = Σ_k p̂_k log(M p̂_k) with p̂ = counts / Σcounts over all M bins (0 log 0 = 0).

    0 for a uniform histogram, log M when every count falls in one bin. Needs Σcounts > 0.
    """
    counts = counts.double()
    p = counts / counts.sum()
    nz = p > 0
    return float((p[nz] * torch.log(p[nz] * len(counts))).sum())


def mode_metrics(points: torch.Tensor, centers: torch.Tensor, std: float) -> dict[str, float | None]:
    """Mode coverage of 2-D samples against a Gaussian mixture with isotropic ``std`` (REFERENCE.md):

    a sample is high-quality if it lies within 3·std of its nearest centre; a mode is covered if it is the
    nearest centre of at least one high-quality sample. Returns ``modes`` (number of covered modes),
    ``hq_pct`` (100 · fraction of high-quality samples) and ``reverse_kl`` = KL(p̂_modes ‖ uniform_M) of the
    nearest-centre histogram of the high-quality samples (None when there are none).
    """
    points = points.detach().to("cpu", torch.float64)
    centers = centers.detach().to("cpu", torch.float64)
    dist = torch.cdist(points, centers)                  # (N, M)
    d_min, nearest = dist.min(dim=1)
    hq = d_min <= 3.0 * std
    counts = torch.bincount(nearest[hq], minlength=len(centers))
    n_hq = int(hq.sum())
    return {
        "modes": float((counts > 0).sum()),
        "hq_pct": 100.0 * n_hq / len(points),
        "reverse_kl": kl_to_uniform(counts) if n_hq > 0 else None,
    }


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance (Székely & Rizzo), unbiased form:

    E(x, y) = 2·mean_ij ‖x_i - y_j‖ - mean_{i≠i'} ‖x_i - x_i'‖ - mean_{j≠j'} ‖y_j - y_j'‖.

    Its population value is 0 iff the two distributions are equal (and > 0 otherwise); the estimate is
    unbiased, so for two samples of the same distribution it scatters around 0 and may be slightly negative.
    Units are those of the data (a distance, not squared).
    """
    x = x.detach().to("cpu", torch.float64)
    y = y.detach().to("cpu", torch.float64)
    n, m = len(x), len(y)
    exact = "donot_use_mm_for_euclid_dist"  # the matmul shortcut leaves rounding noise on the zero diagonal
    xy = torch.cdist(x, y, compute_mode=exact).mean()
    # The diagonals are zero, so dividing the full sums by n(n-1) excludes the i = i' terms.
    xx = torch.cdist(x, x, compute_mode=exact).sum() / (n * (n - 1))
    yy = torch.cdist(y, y, compute_mode=exact).sum() / (m * (m - 1))
    return float(2 * xy - xx - yy)

