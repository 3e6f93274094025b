"""Image metrics from extracted features, computed by torch-fidelity's own functions.

Features come from a FeatureExtractor (see features.py); this module only turns features into numbers, so
the same code runs for Inception-v3 and for any plugged-in network. Convention: ``real`` is the reference
split, ``fake`` the generated samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

# torch-fidelity's default seed for the IS shuffle and the KID subsets: fixed, so a metric is a function of
# the features alone.
RNG_SEED = 2020


def fid_statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean and covariance of (N, D) features: ``{"mu": (D,), "sigma": (D, D)}`` (torch-fidelity)."""
    return fid_features_to_statistics(features.detach().to("cpu", torch.float32))


def fid_from_statistics(stats_real: dict, stats_fake: dict) -> float:
    """FID = ‖μ_r - μ_g‖² + Tr(Σ_r + Σ_g - 2(Σ_r Σ_g)^½) (torch-fidelity's fid_statistics_to_metric)."""
    return float(fid_statistics_to_metric(stats_real, stats_fake, verbose=False)["frechet_inception_distance"])


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))), p = softmax(logits), per split of a seeded shuffle; (mean, std) over splits."""
    out = isc_features_to_metric(logits.detach().cpu(), splits=splits, shuffle=True, rng_seed=RNG_SEED)
    return out["inception_score_mean"], out["inception_score_std"]


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000) -> tuple[float, float]:
    """KID = unbiased MMD² with k(x, y) = (xᵀy/d + 1)³, averaged over ``subsets`` random subsets of
    ``subset_size`` from each set; (mean, std) over subsets (torch-fidelity's kid_features_to_metric)."""
    out = kid_features_to_metric(
        real.detach().cpu(), fake.detach().cpu(), kid_subsets=subsets, kid_subset_size=subset_size,
        kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1,
        rng_seed=RNG_SEED, verbose=False,
    )
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision/recall (Kynkäänniemi et al. 2019): precision = fraction of fakes inside the union of
    the real k-NN balls, recall = fraction of reals inside the union of the fake k-NN balls (torch-fidelity).

    Distances run on the tensors' device, in batches, so pass device tensors to use the GPU.
    """
    out = prc_features_to_metric(fake, real, prc_neighborhood=k, prc_batch_size=10000, save_cpu_ram=True,
                                 verbose=False)
    return float(out["precision"]), float(out["recall"])


def _kth_nn_radius(x: torch.Tensor, k: int, batch: int = 4096) -> torch.Tensor:
    """Distance of each row of x to its k-th nearest other row (the row itself is at distance 0, index 0)."""
    return torch.cat([torch.cdist(xb, x).kthvalue(k + 1, dim=1).values for xb in x.split(batch)])


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5, batch: int = 4096) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), with r_j the distance of real j to its k-th nearest real:

    density = 1/(kM) Σ_i Σ_j 1[‖f_i - r_j‖ ≤ r_j]  (M fakes; ≈1 when fakes follow the reals, can exceed 1),
    coverage = 1/N Σ_j 1[min_i ‖f_i - r_j‖ ≤ r_j]  (N reals; the fraction of real neighbourhoods hit).

    torch-fidelity has no implementation; this follows the authors' ``prdc`` package.
    """
    real = real.float()
    fake = fake.to(real.device, torch.float32)
    radii = _kth_nn_radius(real, k, batch)
    inside = torch.zeros(len(real), dtype=torch.float64, device=real.device)
    nearest = torch.full((len(real),), float("inf"), device=real.device)
    for fb in fake.split(batch):
        d = torch.cdist(fb, real)                    # (b, N)
        inside += (d <= radii).sum(0).double()
        nearest = torch.minimum(nearest, d.min(0).values)
    density = float(inside.sum() / (k * len(fake)))
    coverage = float((nearest <= radii).double().mean())
    return density, coverage
