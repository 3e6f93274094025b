"""Tests of ganbench.data: toy distributions, image folders/archives, the decode cache,
torchvision MNIST/CIFAR-10 (shared files or a failing download), stacked MNIST."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ganbench.data import build_dataset
from ganbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "dataset"
SHARED = REPO.parent / "shared" / "data"
CPU = torch.device("cpu")


def load_cfg(name: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


# ---------------------------------------------------------------- toy data

@pytest.mark.parametrize("name,modes,std", [("ring8", 8, 0.02), ("grid25", 25, 0.05)])
def test_mixture_matches_definition(name, modes, std):
    ds = build_dataset(load_cfg(name), CPU, seed=0)
    assert ds.kind == "points" and ds.shape == (2,) and ds.name == name
    assert ds.std == pytest.approx(std)
    assert ds.centers.shape == (modes, 2)
    if name == "ring8":
        i = torch.arange(8, dtype=torch.float64)
        expected = 2.0 * torch.stack([torch.cos(2 * math.pi * i / 8), torch.sin(2 * math.pi * i / 8)], 1)
    else:
        axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
        expected = torch.cartesian_prod(axis, axis)
    torch.testing.assert_close(ds.centers.double(), expected, atol=1e-6, rtol=0)

    torch.manual_seed(0)
    n = 20_000
    x = ds.sample(n)
    assert x.shape == (n, 2) and x.dtype == torch.float32 and x.device == CPU
    dist = torch.cdist(x.double(), ds.centers.double())
    nearest_dist, nearest = dist.min(1)
    assert nearest_dist.max() < 5 * std * math.sqrt(2)  # every point near a centre (2-D radius)
    freq = torch.bincount(nearest, minlength=modes).double() / n
    # Multinomial std of a frequency is sqrt(p(1-p)/n) ≈ 0.002 (ring) / 0.0014 (grid); allow 5σ.
    p = 1 / modes
    assert (freq - p).abs().max() < 5 * math.sqrt(p * (1 - p) / n)
    residual = x.double() - ds.centers.double()[nearest]
    assert residual.mean(0).abs().max() < 5 * std / math.sqrt(n)
    assert residual.std(0).sub(std).abs().max() < 0.03 * std


def test_ring8_parameters_from_config():
    ds = build_dataset(load_cfg("ring8", radius=3.0, std=0.1), CPU, seed=0)
    assert ds.std == pytest.approx(0.1)
    torch.testing.assert_close(ds.centers.norm(dim=1), torch.full((8,), 3.0))


def test_swissroll_shape_and_scale():
    ds = build_dataset(load_cfg("swissroll"), CPU, seed=0)
    assert ds.centers is None and ds.std == pytest.approx(0.25 / 7.5)
    torch.manual_seed(0)
    x = ds.sample(20_000)
    assert x.shape == (20_000, 2)
    # The noise-free roll has radius t ∈ [1.5π, 4.5π] around the origin, scaled by 1/7.5.
    r = x.norm(dim=1)
    assert r.min() > 1.5 * math.pi / 7.5 - 5 * ds.std
    assert r.max() < 4.5 * math.pi / 7.5 + 5 * ds.std
    assert x.abs().max() < 2.0
    # Noise-free points lie on the spiral radius == angle parameter t (mod 2π ambiguity):
    clean = build_dataset(load_cfg("swissroll", noise=0.0, scale=1.0), CPU, seed=0).sample(1000).double()
    t = clean.norm(dim=1)
    torch.testing.assert_close(clean, torch.stack([t * t.cos(), t * t.sin()], 1), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", ["ring8", "grid25", "swissroll"])
def test_toy_reproducible(name):
    ds = build_dataset(load_cfg(name), CPU, seed=0)
    torch.manual_seed(123)
    a = ds.sample(64)
    torch.manual_seed(123)
    b = ds.sample(64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    ga, gb = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    torch.testing.assert_close(ds.sample_eval(100, ga), ds.sample_eval(100, gb), rtol=0, atol=0)
    # sample_eval does not consume the global RNG
    torch.manual_seed(5)
    before = torch.get_rng_state()
    ds.sample_eval(10, torch.Generator().manual_seed(0))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["ring8", "swissroll"])
def test_toy_on_cuda(name):
    dev = torch.device("cuda")
    ds = build_dataset(load_cfg(name), dev, seed=0)
    assert ds.sample(16).device.type == "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    assert ds.sample_eval(16, g).device.type == "cuda"
    assert ds.sample_eval(16, torch.Generator().manual_seed(0), device="cuda").device.type == "cuda"


def test_toy_on_meta_device_has_no_host_sync():
    # The meta device has no data: any .item()/host sync in sample() would raise.
    for name in ["ring8", "grid25", "swissroll"]:
        x = build_dataset(load_cfg(name), torch.device("meta"), seed=0).sample(32)
        assert x.shape == (32, 2) and x.device.type == "meta"


def test_unknown_dataset_is_config_error():
    with pytest.raises(ConfigError, match="unknown dataset.name"):
        build_dataset(OmegaConf.create({"name": "nope"}), CPU, seed=0)
