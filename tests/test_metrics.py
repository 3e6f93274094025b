"""Metric library (issue 3): math against direct computations, protocol properties, caching, failure paths.

The Inception weights can't be downloaded in CI, so the evaluator tests plug in a tiny deterministic
extractor through the same FeatureExtractor interface; one test runs torch-fidelity's real Inception-v3
architecture with random weights.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from omegaconf import OmegaConf

from ganbench.errors import ConfigError
from ganbench.metrics import build_evaluator, features, image, log_hparams, stacked, toy, validate
from ganbench.metrics.evaluator import EvalSettings, Evaluator

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# --------------------------------------------------------------------------------------------- stand-ins
class TinyExtractor:
    """Deterministic FeatureExtractor: 4×4 average pool of the image, then fixed random projections."""

    name = "tiny"
    weights_hash = "0123456789abcdef"

    def __init__(self, dim: int = 16, classes: int = 10):
        g = torch.Generator().manual_seed(123)
        self.proj = torch.randn(48, dim, generator=g, dtype=torch.float64)
        self.head = torch.randn(dim, classes, generator=g, dtype=torch.float64)
        self.calls = 0

    def features(self, images):
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        self.calls += 1
        x = torch.nn.functional.adaptive_avg_pool2d(images.double() / 255, 4).flatten(1)
        pool = x @ self.proj
        # Computed in float64 row by row: the features of a sample never depend on the batch it sits in.
        return {"pool": pool.float(), "logits_unbiased": (pool @ self.head).float()}


class ImageData:
    """Dataset stand-in: seeded random uint8 'real' images, 3×8×8."""

    kind = "image"
    shape = (3, 8, 8)

    def __init__(self, name="cifar10", n=300):
        self.name = name
        self.n = n
        self.calls = 0

    def real_uint8(self, split="train"):
        self.calls += 1
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        return torch.randint(0, 256, (self.n, *self.shape), generator=g, dtype=torch.uint8)


class PointData:
    kind = "points"
    shape = (2,)

    def __init__(self, name, centers=None, std=0.02, sampler=None):
        self.name, self.centers, self.std, self._sampler = name, centers, std, sampler

    def sample_eval(self, n, generator, device=None):
        return self._sampler(n, generator)


class ImageG(torch.nn.Module):
    """A generator stand-in: z -> tanh(Wz) as 3×8×8 images, with batch norm so eval mode matters."""

    def __init__(self, z_dim=8, shape=(3, 8, 8)):
        super().__init__()
        torch.manual_seed(0)
        self.shape = shape
        self.fc = torch.nn.Linear(z_dim, int(np.prod(shape)))
        self.bn = torch.nn.BatchNorm1d(int(np.prod(shape)))

    def forward(self, z):
        return torch.tanh(self.bn(self.fc(z))).view(len(z), *self.shape)


class PointG(torch.nn.Module):
    """Returns fixed points (ignores z beyond the batch size): out[i] = points[i]."""

    def __init__(self, points):
        super().__init__()
        self.register_buffer("points", points)
        self.i = 0

    def forward(self, z):
        out = self.points[self.i:self.i + len(z)]
        self.i = (self.i + len(z)) % len(self.points)
        return out


def make_cfg(tmp_path, eval_over=None, metrics_over=None, dataset_name=None):
    cfg = OmegaConf.create({"eval": OmegaConf.load(REPO / "conf/eval/default.yaml"),
                            "metrics": OmegaConf.load(REPO / "conf/metrics/default.yaml")})
    cfg.metrics.cache_dir = str(tmp_path / "cache")
    cfg.eval.num_samples = 200
    cfg.eval.num_samples_final = 300
    cfg.eval.batch_size = 64
    cfg.metrics.kid_subsets = 10
    cfg.metrics.kid_subset_size = 50
    for k, v in (eval_over or {}).items():
        cfg.eval[k] = v
    for k, v in (metrics_over or {}).items():
        cfg.metrics[k] = v
    if dataset_name:
        cfg.dataset = {"name": dataset_name}
    return cfg


def ring_centers(m=8, r=2.0):
    a = 2 * math.pi * torch.arange(m, dtype=torch.float64) / m
    return (r * torch.stack([a.cos(), a.sin()], 1)).float()


def swissroll(n, generator, noise=0.25, scale=7.5):
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    xy = torch.stack([t * t.cos(), t * t.sin()], 1) + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (xy / scale).float()


# --------------------------------------------------------------------------------------------- image math
def direct_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_of_a_set_with_itself_is_zero_and_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16)).astype(np.float32)
    b = (rng.normal(size=(2000, 16)) * 1.3 + 0.5).astype(np.float32)
    sa = image.fid_statistics(torch.from_numpy(a))
    sb = image.fid_statistics(torch.from_numpy(b))
    assert abs(image.fid_from_statistics(sa, sa)) < 1e-6
    fid = image.fid_from_statistics(sa, sb)
    assert fid == pytest.approx(direct_fid(a.astype(np.float64), b.astype(np.float64)), rel=1e-5)
    assert fid > 1.0


def test_inception_score_matches_closed_form():
    k, eps, n = 10, 0.3, 1000
    # p(y|x) = (1-eps)·onehot(x mod K) + eps/K, balanced classes, so p(y) is uniform and
    # IS = exp(Σ_y p(y|x) log(K p(y|x))), the same for every x.
    p = np.full((n, k), eps / k)
    p[np.arange(n), np.arange(n) % k] += 1 - eps
    logits = torch.from_numpy(np.log(p))
    expected = math.exp(float((p[0] * np.log(k * p[0])).sum()))
    mean, std = image.inception_score(logits, splits=1)
    assert mean == pytest.approx(expected, rel=1e-9)
    assert std == 0.0
    # 10 splits: every sample confident in one of K balanced classes -> IS ≈ K; identical rows -> IS = 1.
    onehot = torch.full((10000, k), -50.0)
    onehot[torch.arange(10000), torch.arange(10000) % k] = 50.0
    mean, std = image.inception_score(onehot, splits=10)
    assert mean == pytest.approx(k, rel=0.02) and std < 0.2
    mean, std = image.inception_score(torch.zeros(1000, k) + torch.arange(k), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)


class TwoHeadExtractor:
    """Features whose two heads disagree: logits give p(y|x) = (3/4, 1/4) or (1/4, 3/4), the pool features
    (read as logits) give nearly one-hot rows; the rows alternate between the two kinds."""

    name = "two-head"
    weights_hash = "fedcba9876543210"

    def __init__(self):
        self.rows = 0

    def features(self, images):
        kind = (torch.arange(len(images)) + self.rows) % 2
        self.rows += len(images)
        logits = torch.stack([torch.zeros(len(images)), (1 - 2 * kind).float() * -math.log(3)], 1)
        pool = torch.stack([(1 - kind).float() * 10, kind.float() * 10], 1)
        return {"pool": pool, "logits_unbiased": logits}


def test_inception_score_is_computed_from_the_logits_not_the_pool_features(tmp_path):
    """IS = exp(E_x KL(p(y|x) || p(y))). From the logits: half the rows (3/4, 1/4), half (1/4, 3/4), p(y) =
    (1/2, 1/2), KL = 3/4 ln(3/2) + 1/4 ln(1/2) for every row, IS = exp of that = 1.1397...; from the pool
    rows (10, 0)/(0, 10) it would be about 2."""
    hand = math.exp(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    pool_is = image.inception_score(torch.tensor([[10.0, 0.0], [0.0, 10.0]] * 50), splits=1)[0]
    assert abs(pool_is - hand) > 0.5  # the two heads really give different scores
    cfg = make_cfg(tmp_path, metrics_over={"names": ["is"], "is_splits": 1})
    ev = build_evaluator(cfg, ImageData(), "cpu", tmp_path, extractor=TwoHeadExtractor())
    out = ev.evaluate(ImageG(), step=0, final=False, z_dim=8)
    assert out["is_mean"] == pytest.approx(hand, rel=1e-6)
    assert out["is_std"] == pytest.approx(0.0, abs=1e-9)


def test_kid_matches_direct_computation():
    rng = np.random.default_rng(1)
    m, d = 400, 8
    x = rng.normal(size=(m, d))
    y = rng.normal(size=(m, d)) + 0.3

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    direct = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    # Subsets of the full size are permutations of the whole sets: the unbiased MMD² is invariant to them.
    mean, std = image.kid(torch.from_numpy(x).float(), torch.from_numpy(y).float(), subsets=3, subset_size=m)
    assert mean == pytest.approx(direct, rel=1e-4)
    assert std == pytest.approx(0.0, abs=1e-6 * abs(direct))


def test_precision_recall_density_coverage_on_constructed_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 4, generator=g)
    same = torch.randn(500, 4, generator=g)
    far = torch.randn(500, 4, generator=g) + 100
    p, r = image.precision_recall(real, same, k=3)
    assert p > 0.8 and r > 0.8
    assert image.precision_recall(real, far, k=3) == (0.0, 0.0)
    density, coverage = image.density_coverage(real, real, k=5)
    # Every real point lies in its own ball and in those of the k reals it is a neighbour of: 1 + 1/k
    # (up to float32 rounding of the matmul-based distances at the balls' edges).
    assert density == pytest.approx(1.0 + 1.0 / 5, rel=0.02) and coverage == 1.0
    d, c = image.density_coverage(real, same, k=5)
    assert 0.7 < d < 1.3 and c > 0.8
    assert image.density_coverage(real, far, k=5) == (0.0, 0.0)


def test_images_to_uint8_round_trips_real_pixels():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = u.float() / 127.5 - 1
    out = features.images_to_uint8(x)
    assert out.shape == (1, 3, 16, 16) and torch.equal(out[:, 0], u[:, 0]) and torch.equal(out[:, 2], u[:, 0])
    assert features.images_to_uint8(torch.tensor([-5.0, 5.0]).view(1, 2, 1, 1)).flatten().tolist() == [0, 255]


# --------------------------------------------------------------------------------------------- toy metrics
def test_mode_metrics_on_constructed_point_sets():
    c, std = ring_centers(), 0.02
    all_modes = c.repeat(100, 1) + 0.5 * std
    m = toy.mode_metrics(all_modes, c, std)
    assert m == {"modes": 8.0, "hq_pct": 100.0, "reverse_kl": pytest.approx(0.0, abs=1e-12)}
    one = c[3].repeat(500, 1)
    m = toy.mode_metrics(one, c, std)
    assert m["modes"] == 1.0 and m["hq_pct"] == 100.0 and m["reverse_kl"] == pytest.approx(math.log(8))
    # Skewed: 4, 2, 1, 1 high-quality samples on modes 0-3, plus 2 samples at 4σ from mode 5 (not HQ).
    pts = torch.cat([c[0].repeat(4, 1), c[1].repeat(2, 1), c[2:3], c[3:4],
                     (c[5] + torch.tensor([4 * std, 0.0])).repeat(2, 1)])
    m = toy.mode_metrics(pts, c, std)
    p = np.array([4, 2, 1, 1]) / 8
    assert m["modes"] == 4.0 and m["hq_pct"] == pytest.approx(80.0)
    assert m["reverse_kl"] == pytest.approx(float((p * np.log(8 * p)).sum()), rel=1e-12)
    # Exactly at 3σ still counts; none at all gives no KL.
    assert toy.mode_metrics(c[:1] + torch.tensor([[3 * std, 0.0]]), c, std)["modes"] == 1.0
    assert toy.mode_metrics(torch.zeros(10, 2), c, std)["reverse_kl"] is None



# --------------------------------------------------------------------------------------------- toy metric variants
SQUARE = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]], dtype=torch.float64)


def test_hq_test_keeps_each_sources_inequality_at_exactly_3_sigma():
    """σ = 0.25 and offsets in binary fractions, so every distance is exact: 0.75 = 3σ on the boundary."""
    pts = SQUARE[[0, 1, 2]] + torch.tensor([[0.75, 0.0], [0.0, 0.5], [0.0, -0.7421875]], dtype=torch.float64)
    # Euclidean (VEEGAN): ‖d‖ ≤ 3σ, so the boundary sample counts: 3 HQ samples on 3 modes.
    e = toy.mode_metrics(pts, SQUARE, 0.25)
    assert e == {"modes": 3.0, "hq_pct": 100.0, "reverse_kl": pytest.approx(math.log(4 / 3))}
    # Mahalanobis (PacGAN): √Σ d²/σ² < 3 strictly; d = 0.75/0.25 = 3 is out: 2 of 3 HQ, p̂ = (1/2, 0, 1/2, 0).
    m = toy.mode_metrics(pts, SQUARE, 0.25, hq_test="mahalanobis")
    assert m == {"modes": 2.0, "hq_pct": pytest.approx(200 / 3), "reverse_kl": pytest.approx(math.log(2))}
    # Just outside 3σ for both tests.
    out = SQUARE[:1] + torch.tensor([[0.0, 0.7578125]], dtype=torch.float64)
    assert toy.mode_metrics(out, SQUARE, 0.25)["hq_pct"] == 0.0
    assert toy.mode_metrics(out, SQUARE, 0.25, hq_test="mahalanobis")["hq_pct"] == 0.0


def test_mahalanobis_divides_each_axis_by_its_own_variance():
    """σ = (0.5, 0.125): d = √((dx/0.5)² + (dy/0.125)²)."""
    c = torch.tensor([[0.0, 0.0], [8.0, 0.0]], dtype=torch.float64)
    sigma = torch.tensor([0.5, 0.125], dtype=torch.float64)
    # d = 2.5, 2.0 (HQ) and 4.0 (not). Swapped axes would give 10, 8, 1; dividing by σ instead of σ²
    # would give √3.125, √2, √2 (all HQ); comparing d² with 3 would keep only the 2nd.
    pts = torch.tensor([[1.25, 0.0], [1.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
    m = toy.mode_metrics(pts, c, sigma, hq_test="mahalanobis")
    assert m["modes"] == 1.0 and m["hq_pct"] == pytest.approx(200 / 3)
    assert m["reverse_kl"] == pytest.approx(math.log(2))  # both HQ on mode 0 of 2
    # The Euclidean test needs one σ: per-axis values that differ are refused, equal ones accepted.
    with pytest.raises(ValueError, match="isotropic"):
        toy.mode_metrics(pts, c, sigma)
    assert toy.mode_metrics(pts, c, torch.tensor([0.5, 0.5])) == toy.mode_metrics(pts, c, 0.5)
    # Per-mode σ (M, D): the offset 1.0 from mode 1 is 2σ of mode 1 (σ 0.5), but 4σ with mode 0's σ 0.25.
    per_mode = torch.tensor([[0.25, 0.25], [0.5, 0.5]], dtype=torch.float64)
    assert toy.mode_metrics(c[1:] + torch.tensor([[1.0, 0.0]]), c, per_mode, "mahalanobis")["modes"] == 1.0
    assert toy.mode_metrics(c[1:] + torch.tensor([[1.0, 0.0]]), c, 0.25, "mahalanobis")["modes"] == 0.0


def test_mahalanobis_assigns_the_nearest_centre_by_mahalanobis_distance():
    """σ = (1, 0.125), centres (0, 0) and (0.5, 0.5), x = (1, 0): Euclidean-nearest is (0.5, 0.5) (0.707 < 1),
    but there d = √(0.25 + 16) = 4.03 > 3; by Mahalanobis distance (0, 0) is nearest with d = 1 (HQ)."""
    c = torch.tensor([[0.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    m = toy.mode_metrics(torch.tensor([[1.0, 0.0]]), c, torch.tensor([1.0, 0.125]), hq_test="mahalanobis")
    assert m == {"modes": 1.0, "hq_pct": 100.0, "reverse_kl": pytest.approx(math.log(2))}


def test_mode_min_count_is_at_least_not_more_than():
    c, std = ring_centers(), 0.02
    # 4, 2, 1, 1 HQ samples on modes 0-3 (8 HQ) + 2 samples at 4σ from mode 5 (not HQ).
    pts = torch.cat([c[0].repeat(4, 1), c[1].repeat(2, 1), c[2:3], c[3:4],
                     (c[5] + torch.tensor([4 * std, 0.0])).repeat(2, 1)])
    expected = {1: 4.0, 2: 2.0, 3: 1.0, 4: 1.0, 5: 0.0}
    for k, modes in expected.items():
        m = toy.mode_metrics(pts, c, std, min_count=k)
        assert m["modes"] == modes, k
        # The threshold decides coverage only: hq_pct and reverse_kl stay those of all HQ samples.
        assert m["hq_pct"] == pytest.approx(80.0) and m["reverse_kl"] == pytest.approx(1.25 * math.log(2))
    with pytest.raises(ValueError, match="min_count"):
        toy.mode_metrics(pts, c, std, min_count=0)


def test_reverse_kl_empty_modes_skip_and_smooth():
    # HQ histogram (4, 2, 1, 1, 0, 0, 0, 0) over M = 8.
    counts = torch.tensor([4, 2, 1, 1, 0, 0, 0, 0])
    # skip: p̂ = (1/2, 1/4, 1/8, 1/8, 0...), Σ p̂ log 8p̂ = ½ log 4 + ¼ log 2 = 1.25 log 2
    assert toy.kl_to_uniform(counts) == pytest.approx(1.25 * math.log(2), rel=1e-12)
    assert toy.kl_to_uniform(counts, "skip") == toy.kl_to_uniform(counts)
    # smooth: (5, 3, 2, 2, 1, 1, 1, 1)/16, 8p̂ = (2.5, 1.5, 1, 1, .5, .5, .5, .5)
    smooth = 5 / 16 * math.log(2.5) + 3 / 16 * math.log(1.5) - 4 / 16 * math.log(2)
    assert toy.kl_to_uniform(counts, "smooth") == pytest.approx(smooth, rel=1e-12)
    # All 10 in one mode of 8: skip gives log 8; smooth p̂ = (11/18, 1/18 × 7).
    one = torch.tensor([10, 0, 0, 0, 0, 0, 0, 0])
    assert toy.kl_to_uniform(one) == pytest.approx(math.log(8))
    assert toy.kl_to_uniform(one, "smooth") == pytest.approx(11 / 18 * math.log(88 / 18) + 7 / 18 * math.log(8 / 18))
    # A uniform histogram is 0 either way; no HQ sample stays None (no histogram to compare).
    assert toy.kl_to_uniform(torch.full((8,), 3), "smooth") == pytest.approx(0.0, abs=1e-15)
    c = ring_centers()
    assert toy.mode_metrics(torch.zeros(10, 2), c, 0.02, kl_empty="smooth")["reverse_kl"] is None
    with pytest.raises(ValueError, match="empty"):
        toy.kl_to_uniform(counts, "zero")


def test_mode_variants_through_the_evaluator_and_protocol(tmp_path):
    c = ring_centers()
    ds = PointData("ring8", c, 0.02)
    ds.axis_std = torch.tensor([0.04, 0.01])
    # 2,500 samples: mode k gets the offset (0.1, 0) (d = 2.5 with σ_x = 0.04; 10 with the axes swapped).
    pts = (c + torch.tensor([0.1, 0.0])).repeat(2500 // 8 + 1, 1)[:2500]
    cfg = make_cfg(tmp_path, metrics_over={"hq_test": "mahalanobis", "mode_min_count": 313,
                                           "reverse_kl_empty": "smooth"})
    ev = build_evaluator(cfg, ds, "cpu", tmp_path)
    out = ev.evaluate(PointG(pts), step=0, final=True, z_dim=2)
    # 313 samples on modes 0-3, 312 on 4-7: only 4 modes reach 313; all 2,500 are HQ.
    assert out["modes"] == 4.0 and out["hq_pct"] == 100.0
    p = np.array([314] * 4 + [313] * 4) / 2508
    assert out["reverse_kl"] == pytest.approx(float((p * np.log(8 * p)).sum()), rel=1e-9)
    proto = ev.protocol()["points"]
    assert proto["mode_test"] == {"hq_test": "mahalanobis", "mode_min_count": 313, "reverse_kl_empty": "smooth",
                                  "axis_std": [pytest.approx(0.04), pytest.approx(0.01)]}
    assert "metrics.hq_test=mahalanobis" in proto["modes"] and ">= 313 high-quality" in proto["modes"]
    assert "< 3" in proto["modes"] and "pseudo-count" in proto["modes"]
    # The default protocol names today's test.
    default = build_evaluator(make_cfg(tmp_path), PointData("ring8", c, 0.02), "cpu", tmp_path).protocol()["points"]
    assert default["mode_test"] == {"hq_test": "euclidean", "mode_min_count": 1, "reverse_kl_empty": "skip",
                                    "axis_std": pytest.approx(0.02)}
    assert "<= 3 std (Euclidean)" in default["modes"] and "0 log 0 = 0" in default["modes"]


def test_mode_variant_keys_are_validated(tmp_path):
    bad = [({"hq_test": "cosine"}, "metrics.hq_test: must be one of euclidean, mahalanobis, got 'cosine'"),
           ({"mode_min_count": 0}, "metrics.mode_min_count: must be an integer >= 1"),
           ({"mode_min_count": 1.5}, "metrics.mode_min_count"),
           ({"reverse_kl_empty": "zero"}, "metrics.reverse_kl_empty: must be one of skip, smooth, got 'zero'")]
    for over, msg in bad:
        with pytest.raises(ConfigError, match=msg) as err:
            validate(make_cfg(tmp_path, metrics_over=over))
        assert "\n" not in str(err.value)


def test_swissroll_energy_distance_near_zero_for_true_samples_and_large_for_shifted():
    g = torch.Generator().manual_seed(0)
    x, y = swissroll(2500, g), swissroll(2500, g)
    assert abs(toy.energy_distance(x, y)) < 0.01
    assert toy.energy_distance(x, y + torch.tensor([0.5, 0.0])) > 0.1
    # Direct O(n²) check of the formula on a small set.
    a, b = x[:50].double(), y[:60].double()
    dab = np.mean([float((ai - bj).norm()) for ai in a for bj in b])
    daa = np.sum([float((ai - aj).norm()) for ai in a for aj in a]) / (50 * 49)
    dbb = np.sum([float((bi - bj).norm()) for bi in b for bj in b]) / (60 * 59)
    assert toy.energy_distance(a, b) == pytest.approx(2 * dab - daa - dbb, rel=1e-9)


# --------------------------------------------------------------------------------------------- stacked MNIST
def test_stacked_mode_metrics_on_constructed_classifier_outputs():
    triples = torch.tensor([[i // 100, (i // 10) % 10, i % 10] for i in range(1000)])
    m = stacked.stacked_mode_metrics(triples.repeat(26, 1))
    assert m["stacked_modes"] == 1000.0 and m["stacked_kl"] == pytest.approx(0.0, abs=1e-12)
    m = stacked.stacked_mode_metrics(torch.tensor([[1, 2, 3]]).repeat(26000, 1))
    assert m["stacked_modes"] == 1.0 and m["stacked_kl"] == pytest.approx(math.log(1000))
    half = torch.cat([triples[:500], triples[:500]])
    assert stacked.stacked_mode_metrics(half)["stacked_kl"] == pytest.approx(math.log(2))


class BrightnessClassifier(torch.nn.Module):
    """'Reads' digit d from a channel whose mean intensity is d/10 + 0.05."""

    def forward(self, x):
        d = (x.mean((1, 2, 3)) * 10).floor().clamp(0, 9).long()
        return torch.nn.functional.one_hot(d, 10).float()


def test_stacked_evaluator_uses_per_channel_argmax(tmp_path):
    class StackedG(torch.nn.Module):
        def forward(self, z):  # channel c shows digit (index of z's max + c) mod 10, at brightness d/10 + 0.05
            d = (z.argmax(1, keepdim=True) + torch.arange(3)) % 10
            return (2 * (d.float() / 10 + 0.05) - 1).view(-1, 3, 1, 1).expand(-1, 3, 32, 32)

    ds = ImageData("stacked_mnist")
    # Fewer samples than the protocol's 26,000 to keep the test fast (the Evaluator itself does not validate).
    ev = Evaluator(["stacked"], ds, "cpu", EvalSettings(batch_size=1000, stacked_samples=3000),
                   classifier=BrightnessClassifier())
    out = ev.evaluate(StackedG(), step=0, final=False, z_dim=10)
    # 10 equiprobable modes (d, d+1, d+2) of 1000: KL = log(1000/10).
    assert out["stacked_modes"] == 10.0
    assert out["stacked_kl"] == pytest.approx(math.log(100), abs=0.02)


def test_stacked_classifier_is_loaded_from_cache_or_recorded_missing(tmp_path, monkeypatch):
    path = tmp_path / "clf.pt"
    meta = {"arch": "DigitClassifier(width=16)", "width": 16, "train_split": "x", "test_split": "y",
            "test_accuracy": 0.99, "torch": torch.__version__}  # a TorchVersion: must still load weights-only
    stacked.save_classifier(stacked.DigitClassifier(16), meta, path)
    cfg = make_cfg(tmp_path, metrics_over={"classifier_path": str(path)})

    def no_training(*a, **k):
        raise AssertionError("a cached classifier must not be retrained")

    monkeypatch.setattr(stacked, "train_classifier", no_training)
    ev = build_evaluator(cfg, ImageData("stacked_mnist"), "cpu", tmp_path)
    assert ev.names == ["stacked_modes", "stacked_kl"]
    assert ev.protocol()["stacked"]["classifier"]["test_accuracy"] == 0.99
    # Missing file and no MNIST anywhere: null with the reason, no exception.
    monkeypatch.setattr(stacked, "load_mnist", lambda *a, **k: {})
    cfg.metrics.classifier_path = str(tmp_path / "absent.pt")
    ev = build_evaluator(cfg, ImageData("stacked_mnist"), "cpu", tmp_path)
    out = ev.evaluate(ImageG(), step=0, final=False, z_dim=8)
    assert out == {"stacked_modes": None, "stacked_kl": None}
    assert "no MNIST data" in ev.reasons["stacked_kl"]


def test_grayscale_images_are_repeated_to_rgb_for_the_extractor(tmp_path):
    class Gray(ImageData):
        shape = (1, 8, 8)

    # The extractor's groups only (auto adds mnist_is, which needs the digit classifier: tests/test_mnist_is.py).
    cfg = make_cfg(tmp_path, metrics_over={"names": ["fid", "kid"]})
    ev = build_evaluator(cfg, Gray("mnist"), "cpu", tmp_path, extractor=TinyExtractor())
    assert ev.groups == ["fid", "kid"]
    out = ev.evaluate(ImageG(shape=(1, 8, 8)), step=0, final=False, z_dim=8)
    assert all(isinstance(v, float) for v in out.values())


# The digit classifier's accuracy, save and load: tests/test_mnist_is.py (one training for those checks and
# mnist_is on real digits).


# --------------------------------------------------------------------------------------------- evaluator
def test_evaluator_results_do_not_depend_on_batch_size(tmp_path):
    results = []
    for bs in (7, 64, 300):
        cfg = make_cfg(tmp_path, eval_over={"batch_size": bs})
        ev = build_evaluator(cfg, ImageData(), "cpu", tmp_path, extractor=TinyExtractor())
        results.append(ev.evaluate(ImageG(), step=10, final=False, z_dim=8))
    assert set(results[0]) == {"is_mean", "is_std", "fid", "kid_mean", "kid_std"}
    for r in results[1:]:
        for k in r:
            assert r[k] == pytest.approx(results[0][k], rel=1e-5, abs=1e-7), k


def test_evaluator_restores_mode_and_leaves_rng_untouched(tmp_path):
    ev = build_evaluator(make_cfg(tmp_path), ImageData(), "cpu", tmp_path, extractor=TinyExtractor())
    G = ImageG().train()
    state = torch.get_rng_state()
    a = ev.evaluate(G, step=1, final=False, z_dim=8)
    assert G.training and torch.equal(state, torch.get_rng_state())
    b = ev.evaluate(G, step=2, final=False, z_dim=8)
    assert a == b  # fixed seed: same z, same numbers
    G.eval()
    ev.evaluate(G, step=3, final=False, z_dim=8)
    assert not G.training


def test_reference_statistics_are_cached_and_reused(tmp_path):
    cfg = make_cfg(tmp_path)
    ds, ex = ImageData(), TinyExtractor()
    ev = build_evaluator(cfg, ds, "cpu", tmp_path, extractor=ex)
    first = ev.evaluate(ImageG(), step=1, final=False, z_dim=8)
    calls_after_first = ex.calls
    second = ev.evaluate(ImageG(), step=2, final=True, z_dim=8)
    assert ev.reference_computations == 1
    # The second evaluation only extracted its 300 fakes (5 batches of 64), no real images.
    assert ex.calls - calls_after_first == math.ceil(300 / 64)
    files = list((tmp_path / "cache" / "reference").glob("*.npz"))
    assert len(files) == 1 and "cifar10-train-3x8x8-n300-tiny-" in files[0].name
    # A new run (new evaluator) loads them from disk instead of extracting again.
    ev2 = build_evaluator(cfg, ImageData(), "cpu", tmp_path, extractor=TinyExtractor())
    assert ev2.evaluate(ImageG(), step=1, final=False, z_dim=8) == first
    assert ev2.reference_computations == 0
    assert first["fid"] != second["fid"]  # 200 vs 300 samples
    # A different split is a different key.
    ev3 = build_evaluator(make_cfg(tmp_path, eval_over={"reference": "test"}), ImageData(), "cpu", tmp_path,
                          extractor=TinyExtractor())
    ev3.evaluate(ImageG(), step=1, final=False, z_dim=8)
    assert ev3.reference_computations == 1
    assert len(list((tmp_path / "cache" / "reference").glob("*.npz"))) == 2
    proto = ev3.protocol()
    assert proto["image"]["reference_split"] == "test" and proto["image"]["reference_images"] == 300
    assert proto["versions"]["torch_fidelity"] and proto["image"]["extractor"]["name"] == "tiny"


def test_unreadable_reference_split_records_null_and_unsplit_folder_is_its_own_reference(tmp_path):
    from ganbench.errors import DataError

    class NoTest(ImageData):
        def real_uint8(self, split="train"):
            if split == "test":
                raise DataError("dataset cifar10 has no 'test' split")
            return super().real_uint8(split)

    cfg = make_cfg(tmp_path, eval_over={"reference": "test"})
    ev = build_evaluator(cfg, NoTest(), "cpu", tmp_path, extractor=TinyExtractor())
    out = ev.evaluate(ImageG(), step=1, final=False, z_dim=8)
    assert set(out.values()) == {None} and "no 'test' split" in ev.reasons["fid"]

    class Folder(ImageData):
        split = None

        def real_uint8(self, split="train"):
            assert split is None
            return super().real_uint8("train")

    ev = build_evaluator(cfg, Folder("folder"), "cpu", tmp_path, extractor=TinyExtractor())
    assert isinstance(ev.evaluate(ImageG(), step=1, final=False, z_dim=8)["fid"], float)
    assert ev.protocol()["image"]["reference_split"] == "all"
    assert list((tmp_path / "cache" / "reference").glob("folder-all-*.npz"))


def test_fid_of_generator_that_reproduces_the_reference_is_zero(tmp_path):
    ds = ImageData(n=300)
    real = ds.real_uint8("train")

    class Copy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.i = 0

        def forward(self, z):
            out = real[self.i:self.i + len(z)].float() / 127.5 - 1
            self.i += len(z)
            return out

    cfg = make_cfg(tmp_path, eval_over={"num_samples_final": 300})
    ev = build_evaluator(cfg, ds, "cpu", tmp_path, extractor=TinyExtractor())
    out = ev.evaluate(Copy(), step=0, final=True, z_dim=4)
    assert abs(out["fid"]) < 1e-4


def test_missing_inception_weights_record_null_with_reason_and_do_not_raise(tmp_path, monkeypatch, caplog):
    # Point the download at a closed local port so this fails fast whether or not the machine has network.
    monkeypatch.setattr(features, "INCEPTION_URL", "http://127.0.0.1:9/weights-inception.pth")
    cfg = make_cfg(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ganbench"):
        ev = build_evaluator(cfg, ImageData(), "cpu", tmp_path)
        out1 = ev.evaluate(ImageG(), step=1, final=False, z_dim=8)
        out2 = ev.evaluate(ImageG(), step=2, final=True, z_dim=8)
    assert out1 == out2 == {k: None for k in ("is_mean", "is_std", "fid", "kid_mean", "kid_std")}
    assert set(ev.reasons) == set(out1)
    assert "download" in ev.reasons["fid"] and "metrics.inception_weights" in ev.reasons["fid"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "null" in warnings[0].getMessage()
    # An explicit path that does not exist: the same, naming the path.
    cfg.metrics.inception_weights = str(tmp_path / "nope.pth")
    ev = build_evaluator(cfg, ImageData(), "cpu", tmp_path)
    assert ev.evaluate(ImageG(), step=1, final=False, z_dim=8)["fid"] is None
    assert "nope.pth" in ev.reasons["fid"]
    assert not (tmp_path / "cache" / "reference").exists()


@pytest.mark.slow
def test_real_inception_download_path(tmp_path):
    """The genuine download URL: on an offline machine null with a reason, online real numbers."""
    ev = build_evaluator(make_cfg(tmp_path), ImageData(), "cpu", tmp_path)
    out = ev.evaluate(ImageG(), step=1, final=False, z_dim=8)
    assert (out["fid"] is None and "download" in ev.reasons["fid"]) or isinstance(out["fid"], float)


def test_inception_v3_compat_architecture_runs_with_local_weights(tmp_path):
    path = features.write_random_inception_weights(tmp_path / "random.pth")
    # Not the published file: build_extractor refuses it (sha256 check, tests/test_weights_safety.py) ...
    with pytest.raises(features.WeightsUnavailable, match="does not match the published prefix"):
        features.build_extractor("inception-v3-compat", "cpu", str(path), tmp_path)
    # ... while the extractor itself takes self-made weights (loaded with weights_only=True, no hash check).
    ex = features.TorchFidelityExtractor("inception-v3-compat", "cpu", path)
    assert ex.weights_hash == features.sha256_file(path)
    out = ex.features(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert out["pool"].shape == (2, 2048) and out["logits_unbiased"].shape == (2, 1008)


def test_point_metrics_through_the_evaluator(tmp_path):
    c = ring_centers()
    ds = PointData("ring8", c, 0.02)
    cfg = make_cfg(tmp_path)
    ev = build_evaluator(cfg, ds, "cpu", tmp_path)
    out = ev.evaluate(PointG(c.repeat(2500 // 8 + 1, 1)[:2500]), step=5, final=False, z_dim=2)
    assert out == {"modes": 8.0, "hq_pct": 100.0, "reverse_kl": pytest.approx(0.0, abs=1e-5)}  # 313/312 split
    out = ev.evaluate(PointG(c[:1].repeat(2500, 1)), step=6, final=True, z_dim=2, prefix="ema_")
    assert out["ema_modes"] == 1.0 and ev.higher_is_better["ema_reverse_kl"] is False
    collapsed = ev.evaluate(PointG(torch.zeros(2500, 2)), step=7, final=False, z_dim=2)
    assert collapsed["reverse_kl"] is None and "high-quality" in ev.reasons["reverse_kl"]

    sr = PointData("swissroll", None, 0.03, swissroll)
    ev = build_evaluator(cfg, sr, "cpu", tmp_path)
    assert ev.names == ["energy"]
    good = ev.evaluate(PointG(swissroll(2500, torch.Generator().manual_seed(9))), step=0, final=False, z_dim=2)
    assert abs(good["energy"]) < 0.01
    nan = ev.evaluate(PointG(torch.full((2500, 2), float("nan"))), step=1, final=False, z_dim=2)
    assert nan["energy"] is None and "NaN" in ev.reasons["energy"]


def test_validate_rejects_bad_values(tmp_path):
    validate(make_cfg(tmp_path))
    bad = [
        ({}, {"names": ["fid", "foo"]}, None, "metrics.names: unknown metric 'foo'; allowed: auto, is, fid"),
        ({}, {"names": "everything"}, None, "metrics.names"),
        ({"reference": "val"}, {}, None, "eval.reference"),
        ({"every": -1}, {}, None, "eval.every"),
        ({}, {"mode_samples": 100}, None, "metrics.mode_samples"),
        ({}, {"feature_extractor": "alexnet"}, None, "metrics.feature_extractor"),
        ({}, {"names": ["fid"]}, "ring8", "needs an image dataset"),
        ({}, {"names": ["modes"]}, "swissroll", "needs a mixture"),
        ({}, {"kid_subset_size": 5000}, "cifar10", "metrics.kid_subset_size"),
    ]
    for ev_over, m_over, ds, msg in bad:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
            validate(make_cfg(tmp_path, ev_over, m_over, ds))
    assert build_evaluator(make_cfg(tmp_path, metrics_over={"names": []}), ImageData(), "cpu", tmp_path).evaluate(
        ImageG(), 0, True, 8) == {}


def test_log_hparams_writes_into_the_run_directory(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(tmp_path))
    log_hparams(w, {"optimizer.lr": 2e-4, "objective.name": "hinge", "penalty": "null", "flag": True},
                {"fid": 31.5, "is_mean": None, "kid_mean": float("nan")}, step=100)
    w.close()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # no sub-run
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["objective.name"].string_value == "hinge"
    assert start.hparams["optimizer.lr"].number_value == pytest.approx(2e-4)
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in exp.metric_infos] == ["results/fid"]
    assert acc.Scalars("results/fid")[0].value == pytest.approx(31.5)
    assert "results/is_mean" not in acc.Tags()["scalars"]


def test_final_metrics_sort_after_the_curves_in_tensorboard():
    """TensorBoard's Scalars tab orders tag groups (the tag up to its first "/") by character code and opens the
    first two: the one-point final values must not be among them. The groups of a training run's curves and
    images are README's TensorBoard table (D/, grad/, images/, loss/, metrics/, perf/)."""
    from ganbench.metrics.hparams import FINAL_TAG

    final_group = FINAL_TAG.format("fid").split("/", 1)[0]
    assert all(final_group > group for group in ("D", "grad", "images", "loss", "metrics", "perf"))


def test_a_2d_run_imports_neither_torchvision_nor_torch_fidelity(tmp_path):
    """The toy path must run where torchvision cannot be imported (a CPU torch wheel beside PyPI's
    torchvision): image metrics import torch-fidelity, and so torchvision, only where they run."""
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, {tests!r})\n"
        "from pathlib import Path\n"
        "from conftest import POINTS, run_train\n"
        "rec = run_train(Path({run!r}), POINTS + ['train.iterations=4', 'eval.every=2', 'metrics.names=auto',"
        " 'train.progress=false', 'threads=1', 'device=cpu'], fast=False)\n"
        "assert rec['status'] == 'completed' and rec['metrics']['modes']['final'] is not None, rec\n"
        "assert rec['protocol']['versions']['torchvision'], rec['protocol']['versions']\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchvision', 'torch_fidelity')))\n"
    ).format(tests=str(Path(__file__).parent), run=str(tmp_path / "run"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
