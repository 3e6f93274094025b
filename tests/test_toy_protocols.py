"""The published toy protocols as presets (toy_pacgan, toy_veegan, toy_unrolled) and the arms they compare.

A comparison is fair when every arm trains under one protocol: the tests compose every arm of every preset
and check that the networks, optimizer, batch, budget, data and metric are the same for all of them, and that
an arm changes only what it compares (its loss, penalty and n_dis through its objective, the dynamics and the
packing).
"""
import subprocess

import pytest
import torch
from torch import nn

from conftest import GANBENCH, cli_env, compose, ganbench_run

PRESETS = ("toy_pacgan", "toy_veegan", "toy_unrolled", "toy_mode_collapse")
ARMS = ("vanilla", "minimax", "dragan", "wgan", "wgan_gp", "unrolled", "pacgan2", "pacgan4")
# What an arm may change; everything else is the protocol's.
ARM_KEYS = ("objective", "penalty", "dynamics", "pack", "arm")


def _protocol(cfg):
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in tree.items() if k not in ARM_KEYS}


@pytest.mark.parametrize("preset", PRESETS)
def test_every_arm_trains_under_the_same_protocol(preset):
    protocols = {arm: _protocol(compose([f"experiment={preset}", f"arm={arm}"])) for arm in ARMS}
    first = protocols["vanilla"]
    for arm, protocol in protocols.items():
        assert protocol == first, (preset, arm, [k for k in first if protocol.get(k) != first[k]])
    # the optimizer is the protocol's even for arms whose own recipe uses another (WGAN: RMSprop)
    assert all(compose([f"experiment={preset}", f"arm={a}"]).optimizer.name == "adam" for a in ARMS)


@pytest.mark.parametrize("arm, objective, dynamics, pack", [
    ("vanilla", "vanilla", "alternating", 1), ("dragan", "dragan", "alternating", 1), ("wgan", "wgan", "alternating", 1),
    ("unrolled", "vanilla", "unrolled", 1), ("pacgan2", "vanilla", "alternating", 2), ("pacgan4", "vanilla", "alternating", 4),
])
def test_an_arm_sets_only_what_it_compares(arm, objective, dynamics, pack):
    cfg = compose(["experiment=toy_pacgan", f"arm={arm}"])
    assert (cfg.objective.name, cfg.dynamics.name, cfg.pack) == (objective, dynamics, pack)
    if arm == "unrolled":
        assert cfg.dynamics.k == 5
    if arm == "wgan":
        assert cfg.objective.n_dis == 5 and cfg.penalty.name == "weight_clip"


@pytest.mark.parametrize("preset, facts", [
    ("toy_pacgan", {"train.batch_size": 100, "train.iterations": 400000, "train.replicas": 10, "optimizer.g.lr": 1e-4,
                    "optimizer.g.betas": [0.8, 0.999], "optimizer.d.lr": 1e-4, "metrics.hq_test": "mahalanobis",
                    "metrics.mode_samples": 2500, "dataset.name": "ring8", "dataset.radius": 1.0, "dataset.std": 0.01,
                    "arch.z_dim": 2}),
    ("toy_veegan", {"train.batch_size": 500, "train.iterations": 100000, "train.replicas": 5, "optimizer.g.lr": 1e-3,
                    "optimizer.g.betas": [0.5, 0.999], "metrics.hq_test": "euclidean", "dataset.name": "grid25",
                    "dataset.std": 0.05, "arch.depth": 2, "arch.width": 128, "arch.activation": "relu"}),
    # VEEGAN's protocol scaled down (its YAML says how): batch 100, 10 trials, both datasets
    ("toy_mode_collapse", {"train.batch_size": 100, "train.replicas": 10, "optimizer.g.lr": 1e-3,
                           "optimizer.d.lr": 1e-3, "optimizer.d.betas": [0.5, 0.999], "metrics.hq_test": "euclidean",
                           "metrics.mode_samples": 2500, "arch.depth": 2, "arch.width": 128, "arch.activation": "relu",
                           "arch.z_dim": 2, "dataset.radius": 2.0, "dataset.std": 0.02}),
    ("toy_unrolled", {"train.batch_size": 512, "train.iterations": 25000, "optimizer.g.lr": 1e-3,
                      "optimizer.d.lr": 1e-4, "optimizer.d.betas": [0.5, 0.999], "arch.z_dim": 256,
                      "arch.activation": "tanh", "arch.depth": 2, "dataset.radius": 1.0, "dataset.std": 0.01}),
])
def test_presets_hold_the_published_protocol(preset, facts):
    """REFERENCE.md's "Toy protocols" table, key by key."""
    from omegaconf import OmegaConf

    cfg = compose([f"experiment={preset}"])
    for key, value in facts.items():
        got = OmegaConf.select(cfg, key)
        got = list(got) if not isinstance(got, (int, float, str)) else got
        assert got == value, (preset, key, got)


def test_pacgan_geometry_per_dataset():
    """One dataset node for both sweep values: the ring radius 1, σ 0.01; the grid spacing 2, σ 0.05."""
    ring = compose(["experiment=toy_pacgan", "dataset=ring8"]).dataset
    grid = compose(["experiment=toy_pacgan", "dataset=grid25"]).dataset
    assert (ring.radius, ring.std) == (1.0, 0.01) and (grid.spacing, grid.std) == (2.0, 0.05)


def test_pacgan_networks_are_built_as_published():
    """G = 4 × (FC 400 + BN + ReLU); D = 3 × maxout(200 units, 5 pieces) → linear; D's input 2m at pack=m."""
    from ganbench.archs import build
    from ganbench.archs.layers import Maxout

    cfg = compose(["experiment=toy_pacgan", "arm=pacgan4"])
    G, D = build(cfg.arch, (2,), False, (8,))
    linears = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 400), (400, 400), (400, 400), (400, 400), (400, 2)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in G.modules()) == 4
    assert sum(isinstance(m, nn.ReLU) for m in G.modules()) == 4
    maxouts = [m for m in D.modules() if isinstance(m, Maxout)]
    d_linears = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert len(maxouts) == 3 and [(m.in_features, m.out_features) for m in d_linears] == [
        (8, 1000), (200, 1000), (200, 1000), (200, 1)]
    assert D(torch.randn(5, 8)).shape == (5,)


@pytest.mark.slow
def test_scaled_protocol_sweep_and_its_toy_table(tmp_path):
    """~0.05 % of VEEGAN's budget, two arms, 2 seeds as replicas: the sweep completes and the toy table has a
    row per arm with mean ± standard error over the seeds."""
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=toy_veegan", "arm=vanilla,pacgan2", "train.iterations=40",
            "train.replicas=2", "eval.every=20", "train.log_every=20", "train.ckpt_every=40", "train.sample_every=40",
            "threads=1", "device=cpu", f"hydra.sweep.dir={sweep}"]
    done = ganbench_run([*args], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep of 4 runs" in done.stdout and "4 completed" in done.stdout
    report = subprocess.run([str(GANBENCH.with_name("ganbench-report")), str(sweep), "--table", "toy"], cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    rows = [line for line in report.stdout.splitlines() if line.startswith("arm=")]  # the table rows
    assert len(rows) == 2 and any("pacgan2" in r for r in rows) and all("±" in r for r in rows), report.stdout
