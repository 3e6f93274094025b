"""Metrics for the 2-D toy datasets: mode coverage on ring8/grid25, a sample distance on swissroll."""

from __future__ import annotations

import torch


HQ_TESTS = ("euclidean", "mahalanobis")
KL_EMPTY = ("skip", "smooth")


def kl_to_uniform(counts: torch.Tensor, empty: str = "skip") -> float:
    """KL(p̂ ‖ uniform_M) = Σ_k p̂_k log(M p̂_k) over all M bins of the histogram ``counts``.

    ``empty`` says how empty bins (modes no sample landed in) enter p̂:

    - ``skip``: p̂_k = n_k / Σn and 0·log 0 = 0, so an empty bin adds nothing (the PacGAN code's KL helper
      drops the p = 0 terms). 0 for a uniform histogram, log M when every count falls in one bin.
    - ``smooth``: add-one (Laplace) pseudo-counts, p̂_k = (n_k + 1) / (Σn + M): every mode gets some mass and
      the value is pulled towards 0 (all n samples in one mode: p̂ = ((n+1)/(n+M), 1/(n+M), ...) instead of
      (1, 0, ...), so less than log M). A ganbench option: no published table uses it.

    Needs Σcounts > 0.
    """
    if empty not in KL_EMPTY:
        raise ValueError(f"empty must be one of {KL_EMPTY}, got {empty!r}")
    counts = counts.double()
    if empty == "smooth":
        counts = counts + 1.0
    p = counts / counts.sum()
    nz = p > 0
    return float((p[nz] * torch.log(p[nz] * len(counts))).sum())


def _axis_std(std, centers: torch.Tensor) -> torch.Tensor:
    """σ as an (M, D) float64 tensor: a number (isotropic), a (D,) per-axis σ, or an (M, D) per-mode σ."""
    s = torch.as_tensor(std, dtype=torch.float64)
    if s.dim() > 2 or (s.dim() >= 1 and s.shape[-1] != centers.shape[1]) or (s.dim() == 2 and len(s) != len(centers)):
        raise ValueError(f"std must be a number, a ({centers.shape[1]},) per-axis or a ({len(centers)}, "
                         f"{centers.shape[1]}) per-mode tensor, got shape {tuple(s.shape)}")
    if not bool((s > 0).all()):
        raise ValueError(f"std must be > 0, got {s.tolist()}")
    return s.expand(centers.shape).clone()


def mode_metrics(points: torch.Tensor, centers: torch.Tensor, std, hq_test: str = "euclidean",
                 min_count: int = 1, kl_empty: str = "skip") -> dict[str, float | None]:
    """Mode coverage of 2-D samples against a Gaussian mixture (REFERENCE.md "Toy protocols").

    The high-quality test (``hq_test``), each source's own definition including its inequality:

    - ``euclidean`` (VEEGAN's notebook; ganbench's default): the nearest centre by Euclidean distance,
      high-quality iff ‖x - c‖ ≤ 3σ. Needs an isotropic σ (a number, or per-axis values all equal).
    - ``mahalanobis`` (PacGAN's code): d_k(x) = √Σ_a (x_a - c_ka)² / σ_ka² with the dataset's per-axis σ
      (a number, a (D,) or a per-mode (M, D) tensor); the nearest centre is the one of smallest d_k and x
      is high-quality iff d_k(x) < 3, strictly. With the same σ on every axis and mode (ganbench's ring8
      and grid25), d_k = ‖x - c_k‖/σ: both tests pick the same centre and differ only for a sample at
      exactly 3σ, which counts for ``euclidean`` and not for ``mahalanobis``.

    A mode is covered iff at least ``min_count`` high-quality samples have it as nearest centre (both
    sources: 1). Returns ``modes`` (covered modes), ``hq_pct`` = 100 · (high-quality samples) / N and
    ``reverse_kl`` = KL(p̂_modes ‖ uniform_M) of the high-quality samples' nearest-centre histogram over all M
    modes, empty modes handled by ``kl_empty`` (see ``kl_to_uniform``); None when no sample is high-quality.
    """
    if hq_test not in HQ_TESTS:
        raise ValueError(f"hq_test must be one of {HQ_TESTS}, got {hq_test!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be an integer >= 1, got {min_count!r}")
    points = points.detach().to("cpu", torch.float64)
    centers = centers.detach().to("cpu", torch.float64)
    sigma = _axis_std(std, centers)                       # (M, D)
    if hq_test == "euclidean":
        if not bool((sigma == sigma.flatten()[0]).all()):
            raise ValueError("hq_test 'euclidean' needs an isotropic std (the same on every axis and mode); "
                             "use 'mahalanobis' for per-axis std")
        dist = torch.cdist(points, centers)               # (N, M)
        d_min, nearest = dist.min(dim=1)
        hq = d_min <= 3.0 * float(sigma.flatten()[0])
    else:
        # (N, M, D) scaled offsets: N = 2,500, M ≤ 25, D = 2 is a few hundred kB.
        scaled = (points[:, None, :] - centers[None, :, :]) / sigma[None, :, :]
        dist = scaled.pow(2).sum(dim=2).sqrt()
        d_min, nearest = dist.min(dim=1)
        hq = d_min < 3.0
    counts = torch.bincount(nearest[hq], minlength=len(centers))
    n_hq = int(hq.sum())
    return {
        "modes": float((counts >= min_count).sum()),
        "hq_pct": 100.0 * n_hq / len(points),
        "reverse_kl": kl_to_uniform(counts, kl_empty) if n_hq > 0 else None,
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

