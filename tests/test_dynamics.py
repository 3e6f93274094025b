"""The game step (ganbench/dynamics/): alternating is the loop as it always was, simultaneous takes both
gradients before either step, and the two behave as Mescheder et al. describe on the bilinear game."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import FAST, POINTS, compose, load_ckpt, results, run_train
from ganbench.dynamics import DYNAMICS, Players, build_dynamics
from ganbench.objectives.wasserstein import Wasserstein
from ganbench.penalties.none import NoPenalty


class Point(nn.Module):
    """G(z) = x for every z: the generator is one scalar."""

    z_dim = 1

    def __init__(self, x: float):
        super().__init__()
        self.x = nn.Parameter(torch.tensor([[x]]))

    def forward(self, z):
        return self.x.expand(z.shape[0], 1)


class Linear1(nn.Module):
    """D(v) = y·v: the discriminator is one scalar."""

    def __init__(self, y: float):
        super().__init__()
        self.y = nn.Parameter(torch.tensor(y))

    def forward(self, v):
        return self.y * v[:, 0]


class Zeros:
    """Real data at the origin: the Wasserstein game becomes L_D = xy, L_G = -xy (min_x max_y -xy)."""

    kind = "points"

    def sample(self, n):
        return torch.zeros(n, 1)


def bilinear(dynamics: str, steps: int, lr: float = 0.1):
    G, D = Point(1.0), Linear1(1.0)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=lr), torch.optim.SGD(D.parameters(), lr=lr))
    game = DYNAMICS[dynamics]().bind(players, Wasserstein(), NoPenalty(), 1, Zeros(), 4)
    radii = []
    for _ in range(steps):
        game.step()
        radii.append(math.hypot(G.x.item(), D.y.item()))
    return radii


def test_simultaneous_step_by_hand():
    """One step from (x, y) = (1, 1), η = 0.1: ∂L_D/∂y = x and ∂L_G/∂x = -y, both at the old point."""
    G, D = Point(1.0), Linear1(1.0)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1))
    DYNAMICS["simultaneous"]().bind(players, Wasserstein(), NoPenalty(), 1, Zeros(), 4).step()
    assert (G.x.item(), D.y.item()) == pytest.approx((1.1, 0.9))


def test_alternating_step_by_hand():
    """D moves first (y = 1 - 0.1·1 = 0.9); G then sees the new y: x = 1 + 0.1·0.9 = 1.09."""
    G, D = Point(1.0), Linear1(1.0)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1))
    DYNAMICS["alternating"]().bind(players, Wasserstein(), NoPenalty(), 1, Zeros(), 4).step()
    assert (G.x.item(), D.y.item()) == pytest.approx((1.09, 0.9))


def test_simultaneous_spirals_out_alternating_stays_bounded():
    """Simultaneous: r_{t+1} = √(1+η²)·r_t exactly. Alternating: a bounded orbit around the equilibrium."""
    sim = bilinear("simultaneous", 200)
    assert sim[-1] == pytest.approx(math.sqrt(2) * (1 + 0.01) ** 100, rel=1e-4)
    alt = bilinear("alternating", 200)
    assert max(alt) < 1.6 and min(alt) > 0.9


def test_simultaneous_needs_one_critic_step():
    from ganbench.errors import ConfigError

    G, D = Point(1.0), Linear1(1.0)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1))
    with pytest.raises(ConfigError, match="objective.n_dis"):
        DYNAMICS["simultaneous"]().bind(players, Wasserstein(), NoPenalty(), 5, Zeros(), 4)


def test_dynamics_config():
    from ganbench.errors import ConfigError

    assert set(DYNAMICS) >= {"alternating", "simultaneous"}
    assert compose([]).dynamics.name == "alternating"
    with pytest.raises(ConfigError, match="dynamics.name: unknown dynamics 'foo'; allowed: alternating"):
        build_dynamics(compose(["dynamics.name=foo"]).dynamics)


@pytest.mark.parametrize("dynamics", ["alternating", "simultaneous"])
def test_runs_and_resumes_exactly(tmp_path, dynamics):
    over = POINTS + [f"dynamics={dynamics}", "objective=dragan", "train.ckpt_every=3"]
    run_train(tmp_path / "straight", over + ["train.iterations=6"])
    run_train(tmp_path / "split", over + ["train.iterations=3"])
    run_train(tmp_path / "split", over + ["train.iterations=6"])
    assert results(tmp_path / "split")["status"] == "completed"
    a, b = load_ckpt(tmp_path / "straight"), load_ckpt(tmp_path / "split")
    for name in ("G", "D"):
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
    assert a["d_step"] == b["d_step"] == 6
