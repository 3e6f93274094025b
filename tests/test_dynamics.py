"""The game step (ganbench/dynamics/): alternating is the loop as it always was, simultaneous takes both
gradients before either step, and the two behave as Mescheder et al. describe on the bilinear game."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import POINTS, compose, load_ckpt, results, run_train
from toy_game import assert_resumes_exactly, Linear1, Point, Zeros
from ganbench.dynamics import DYNAMICS, Players, build_dynamics
from ganbench.objectives.wasserstein import Wasserstein
from ganbench.penalties.none import NoPenalty


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


def test_instance_noise_schedule_and_inputs():
    """σ_t = σ(1 - t/T) when annealed; every input of D gets its own noise draw of that std."""
    game = DYNAMICS["alternating"](instance_noise=0.5, noise_anneal=True)
    G, D = Point(1.0), Linear1(1.0)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=0.0), torch.optim.SGD(D.parameters(), lr=0.0))
    game.bind(players, Wasserstein(), NoPenalty(), 1, Zeros(), 20000, iterations=10)
    assert game.noise_std() == 0.5
    game.g_step = 4
    assert game.noise_std() == pytest.approx(0.3)
    game.g_step = 12
    assert game.noise_std() == 0.0
    game.g_step = 4
    game.step()
    # real inputs are zeros + N(0, 0.3²); fake inputs x = 1 + N(0, 0.3²)
    assert game.real.std().item() == pytest.approx(0.3, rel=0.05) and abs(game.real.mean().item()) < 0.02
    assert game.fake.std().item() == pytest.approx(0.3, rel=0.05) and game.fake.mean().item() == pytest.approx(1, abs=0.02)
    assert game.g_step == 5
    plain = DYNAMICS["alternating"]()
    assert plain.noisy(torch.ones(3)) is not None and torch.equal(plain.noisy(torch.ones(3)), torch.ones(3))


def test_instance_noise_is_validated():
    from ganbench.errors import ConfigError

    with pytest.raises(ConfigError, match="dynamics.instance_noise: must be >= 0"):
        build_dynamics(compose(["dynamics.instance_noise=-1"]).dynamics)


def test_instance_noise_run_resumes_exactly(tmp_path, monkeypatch):
    """The annealed schedule continues where it stopped: 3 + resume + 3 steps equal 6 straight ones."""
    a = assert_resumes_exactly(tmp_path, monkeypatch, POINTS + ["dynamics.instance_noise=0.1",
                                                                "dynamics.noise_anneal=true"])
    clean = run_train(tmp_path / "clean", POINTS + ["train.iterations=6"])
    c = load_ckpt(tmp_path / "clean")
    assert not all(torch.equal(a["D"][k], c["D"][k]) for k in a["D"])  # the noise does reach D
    assert clean["status"] == "completed"


def test_generator_step_fake_gets_the_same_instance_noise():
    """D's input in the generator step is x̃' + σ_t·ε' too, with σ_t the D step's (annealed: 0.3 at t=4 of
    10) and ε' a fresh standard normal draw: G(z) = 1 here, so that input is N(1, 0.3²), like the D step's
    fake input, and uncorrelated with the D step's noise. Read with a forward pre-hook on D; the G step's
    call is the one made while D's parameters are frozen."""
    torch.manual_seed(0)
    game = DYNAMICS["alternating"](instance_noise=0.5, noise_anneal=True)
    G, D = Point(1.0), Linear1(1.0)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=0.0), torch.optim.SGD(D.parameters(), lr=0.0))
    B = 20000
    game.bind(players, Wasserstein(), NoPenalty(), 1, Zeros(), B, iterations=10)
    game.g_step = 4
    seen = []
    D.register_forward_pre_hook(lambda module, args: seen.append((args[0].detach().clone(), module.y.requires_grad)))
    game.step()
    d_step = [x for x, trained in seen if trained]
    g_step = [x for x, trained in seen if not trained]
    assert len(d_step) == 1 and len(g_step) == 1
    d_fake, g_fake = d_step[0][B:, 0], g_step[0][:, 0]  # the D step sees cat([real, fake])
    assert g_fake.shape == (B,)

    def shape(x):  # (mean, std, fraction within one std of the mean, kurtosis); N(μ, σ²): (μ, σ, 0.6827, 3)
        e = (x - x.mean()) / x.std()
        return x.mean().item(), x.std().item(), (e.abs() < 1).float().mean().item(), (e ** 4).mean().item()

    for x in (d_fake, g_fake):
        mean, std, within, kurtosis = shape(x)
        assert mean == pytest.approx(1, abs=0.02) and std == pytest.approx(0.3, rel=0.05)
        assert within == pytest.approx(0.6827, abs=0.015) and kurtosis == pytest.approx(3, abs=0.2)
    corr = torch.corrcoef(torch.stack([d_fake - 1, g_fake - 1]))[0, 1].item()
    assert abs(corr) < 0.05  # its own draw, not the D step's noise again
