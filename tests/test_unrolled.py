"""dynamics=unrolled (Metz et al. 2017): G's step differentiates through K functional steps of D.

Hand-differentiated unrolls of a scalar game (SGD and Adam inner steps), the unroll replayed with the real
optimizers on copies, the real players left untouched, K=0 = alternating bit for bit, runs with every kind
of objective, exact resume and the config errors."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from conftest import POINTS, assert_same_tensors, compose, ganbench_run, load_ckpt, results, run_train
from toy_game import assert_resumes_exactly, Const, Linear1, Point
from ganbench.dynamics import DYNAMICS, Players, build_dynamics
from ganbench.dynamics.unrolled import _sqrt0
from ganbench.errors import ConfigError
from ganbench.objectives.nonsaturating import NonSaturating
from ganbench.objectives.wasserstein import Wasserstein
from ganbench.penalties.none import NoPenalty


TH, PSI, A = 0.7, 0.5, 0.3  # θ_G, θ_D, the data point


def scalar_game(k, inner, opt_D, lr_G=0.1, inner_lr=None):
    G, D = Point(TH), Linear1(PSI)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=lr_G), opt_D(D.parameters()))
    game = DYNAMICS["unrolled"](k=k, inner=inner, inner_lr=inner_lr)
    return game.bind(players, Wasserstein(), NoPenalty(), 1, Const(A), 4), G, D


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("inner_lr", [None, 0.5])
def test_sgd_unroll_by_hand(k, inner_lr):
    """Wasserstein, D(v) = ψv, G = θ, data at a: L_D = ψ(θ − a), L_G = −ψθ.

    D's own SGD step: ψ' = ψ − η_D(θ − a). Unroll with η: ψ^K = ψ' − Kη(θ − a) (∂L_D/∂ψ = θ − a at
    every inner step), so L_G(θ, ψ^K(θ)) = −(ψ' − Kη(θ − a))θ and dL_G/dθ = −ψ' + Kη(2θ − a).
    A detached unroll would give −ψ^K = −ψ' + Kη(θ − a) instead: Kηθ apart.
    """
    lr_D, lr_G = 0.2, 0.1
    eta = lr_D if inner_lr is None else inner_lr
    game, G, D = scalar_game(k, "sgd", lambda p: torch.optim.SGD(p, lr=lr_D), lr_G, inner_lr)
    game.step()
    psi1 = PSI - lr_D * (TH - A)
    grad = -psi1 + k * eta * (2 * TH - A)
    detached = -psi1 + k * eta * (TH - A)
    assert abs(lr_G * (grad - detached)) > 0.01  # the test tells the two apart
    assert D.y.item() == pytest.approx(psi1, abs=1e-7)  # D took its normal step only
    assert G.x.item() == pytest.approx(TH - lr_G * grad, abs=1e-6)


class Saddle(Wasserstein):
    """The Wasserstein game in saddle form: G minimises −L_D = E D(x) − E D(x̃), real term included."""

    def g_loss(self, fake_out, real_out):
        return real_out.mean() - fake_out.mean()


def test_saddle_g_loss_differentiates_the_real_term():
    """L_G = −L_D(θ, ψ¹(θ)) = −ψ¹(θ − a), ψ¹ = ψ' − η(θ − a): dL_G/dθ = −ψ' + 2η(θ − a). D¹(x) = ψ¹a
    depends on θ through ψ¹; a detached D(x) would give −ψ' + η(2θ − a), ηa apart."""
    lr_D, lr_G, eta = 0.2, 0.1, 0.5
    G, D = Point(TH), Linear1(PSI)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=lr_G), torch.optim.SGD(D.parameters(), lr=lr_D))
    DYNAMICS["unrolled"](k=1, inner="sgd", inner_lr=eta).bind(players, Saddle(), NoPenalty(), 1, Const(A), 4).step()
    psi1 = PSI - lr_D * (TH - A)
    assert lr_G * eta * A > 0.01
    assert G.x.item() == pytest.approx(TH - lr_G * (-psi1 + 2 * eta * (TH - A)), abs=1e-6)


class Batches:
    """Real data drawn from a fixed sequence: the n-th batch is n rows of ``values[n]``."""

    kind = "points"
    sample_device = torch.device("cpu")

    def __init__(self, *values):
        self.values = list(values)

    def sample(self, n, generator=None):
        return torch.full((n, 1), self.values.pop(0))


def test_lsgan_qi_margin_pairs_each_inner_steps_own_batches():
    """objective=lsgan_qi (relu L, λ = 1, Δ = s|x − x̃|, s = 0.1), G = θ, D(v) = ψv, K = 1, SGD inner steps.

    θ = 0.5, ψ = 1, D's lr 0.1, η = 0.5, G's lr 0.1; the D step's real batch is at x₁ = 3, the inner step's at
    x₂ = 0.3 (every fake is θ). L(v) = ψv for v, ψ > 0.
    D's own step: Δ₁ = 0.25, hinge 0.25 + ψ(x₁ − θ) > 0 active, ∂L_D/∂ψ = x₁ + (x₁ − θ) = 5.5, ψ' = 0.45.
    The inner step with its own pair: Δ₂ = 0.02, hinge 0.02 + ψ'(x₂ − θ) = −0.07 inactive, so ∂L_D/∂ψ = x₂:
    ψ¹ = ψ' − ηx₂ = 0.3, independent of θ; L_G = ψ¹θ, dL_G/dθ = ψ¹ = 0.3, θ' = 0.5 − 0.1·0.3 = 0.47.
    The inner step with the D step's Δ₁ = 0.25 (the wrong pairing): hinge 0.16 active, ψ¹ = ψ' − η(2x₂ − θ),
    dψ¹/dθ = η, dL_G/dθ = 0.4 + 0.5·0.5 = 0.65, θ' = 0.435.
    """
    from ganbench.objectives.loss_sensitive import LossSensitive

    G, D = Point(0.5), Linear1(1.0)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1))
    game = DYNAMICS["unrolled"](k=1, inner="sgd", inner_lr=0.5)
    game.bind(players, LossSensitive(margin_scale=0.1), NoPenalty(), 1, Batches(3.0, 0.3), 4)
    game.step()
    assert D.y.item() == pytest.approx(0.45, abs=1e-7)  # D's own step, on the outer pair
    assert G.x.item() == pytest.approx(0.47, abs=1e-6)
    # The generator step's terms read the outer D step's real batch again (x₁, not the inner x₂).
    assert torch.equal(game.real, torch.full((4, 1), 3.0))


def test_adam_unroll_by_hand():
    """The same game with D's optimizer Adam(lr, β₁, β₂, ε) and inner=adam, K=1.

    D's own step (t=1): g = θ − a, m = (1−β₁)g, v = (1−β₂)g², ψ' = ψ − lr/(1−β₁)·m/(√v/√(1−β₂) + ε).
    The inner step continues at t=2 with g(θ) = θ − a: m₁ = β₁m + (1−β₁)g, v₁ = β₂v + (1−β₂)g²,
    s = √v₁/√c₂ + ε, ψ¹ = ψ' − (lr/c₁)·m₁/s with c_i = 1−β_iᵗ; with m, v constants (D's state),
        dψ¹/dθ = −(lr/c₁)·[(1−β₁)·s − m₁·(1−β₂)g/(√c₂·√v₁)] / s²,
    and dL_G/dθ = d(−ψ¹θ)/dθ = −ψ¹ − θ·dψ¹/dθ.
    """
    lr, b1, b2, eps, lr_G = 0.05, 0.5, 0.9, 1e-8, 0.1
    game, G, D = scalar_game(1, "adam", lambda p: torch.optim.Adam(p, lr=lr, betas=(b1, b2), eps=eps), lr_G)
    game.step()
    g = TH - A
    m, v = (1 - b1) * g, (1 - b2) * g * g
    psi1 = PSI - lr / (1 - b1) * m / (math.sqrt(v) / math.sqrt(1 - b2) + eps)
    assert D.y.item() == pytest.approx(psi1, abs=1e-7)
    c1, c2 = 1 - b1 ** 2, 1 - b2 ** 2
    m1, v1 = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    s = math.sqrt(v1) / math.sqrt(c2) + eps
    psi_k = psi1 - lr / c1 * m1 / s
    dpsi = -(lr / c1) * ((1 - b1) * s - m1 * (1 - b2) * g / (math.sqrt(c2) * math.sqrt(v1))) / s ** 2
    grad = -psi_k - TH * dpsi
    assert abs(lr_G * TH * dpsi) > 1e-3  # the term through the unroll is visible at this tolerance
    assert G.x.item() == pytest.approx(TH - lr_G * grad, abs=1e-6)


def test_inner_adam_needs_adam_for_D():
    with pytest.raises(ConfigError, match="dynamics.inner: adam continues D's Adam moments, but D's optimizer is SGD"):
        scalar_game(1, "adam", lambda p: torch.optim.SGD(p, lr=0.1))
    scalar_game(0, "adam", lambda p: torch.optim.SGD(p, lr=0.1))  # k=0 is alternating: no inner optimizer


class SmallG(nn.Module):
    z_dim = 3

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))

    def forward(self, z):
        return self.net(z)


class Gauss:
    kind = "points"
    sample_device = torch.device("cpu")

    def sample(self, n, generator=None):
        return torch.randn(n, 2) * 0.5 + 1.0


def small_players(seed=0, adam=True):
    torch.manual_seed(seed)
    G = SmallG()
    D = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.LeakyReLU(0.2), nn.Linear(8, 1), nn.Flatten(0))
    opt_D = (torch.optim.Adam(D.parameters(), lr=0.01, betas=(0.5, 0.9), weight_decay=1e-3) if adam
             else torch.optim.SGD(D.parameters(), lr=0.05))
    return Players(G, D, torch.optim.Adam(G.parameters(), lr=0.01), opt_D)


def snapshot(players):
    return copy.deepcopy({"D": players.D.state_dict(), "opt_D": players.opt_D.state_dict(), "G": players.G.state_dict()})


@pytest.mark.parametrize("inner", ["adam", "sgd"])
def test_unroll_replays_real_optimizer_and_leaves_players_untouched(inner):
    """θ_D^K equals K real optimizer steps (torch.optim.Adam / SGD on copies of D and opt_D, same batches,
    plain L_D), batch-norm statistics included; D, opt_D and G (parameters and buffers) are unchanged."""
    k = 3
    players = small_players(adam=inner == "adam")
    game = DYNAMICS["unrolled"](k=k, inner=inner).bind(players, NonSaturating(), NoPenalty(), 2, Gauss(), 16)
    for _ in range(2):  # D's Adam moments and BN statistics away from their initial values
        game.step()
    before = snapshot(players)
    torch.manual_seed(123)
    unrolled, real_k = game.unroll()
    after = snapshot(players)
    for part in before:
        for key in before[part] if part != "opt_D" else ():
            assert torch.equal(before[part][key], after[part][key]), (part, key)
    for i, st in before["opt_D"]["state"].items():
        for key in st:
            assert torch.equal(st[key], after["opt_D"]["state"][i][key]), ("opt_D", i, key)

    # The replay: the same draws in the same order (real batch, then z), real optimizer steps on copies.
    D, G = copy.deepcopy(players.D), copy.deepcopy(players.G)
    opt = (torch.optim.Adam(D.parameters(), lr=0.01, betas=(0.5, 0.9), weight_decay=1e-3) if inner == "adam"
           else torch.optim.SGD(D.parameters(), lr=0.05))
    opt.load_state_dict(players.opt_D.state_dict())
    loss = NonSaturating()
    torch.manual_seed(123)
    for _ in range(k):
        real = game.data.sample(16)
        with torch.no_grad():
            fake = G(torch.randn(16, 3))
        opt.zero_grad()
        loss.d_loss(D(real), D(fake)).backward()
        opt.step()
    for name, value in D.state_dict().items():
        assert torch.allclose(unrolled[name].detach(), value, atol=1e-6, rtol=1e-5), name
    assert torch.equal(real_k, real)
    # The unrolled parameters are functions of θ_G (the graph through the inner fake batches is kept).
    w = unrolled["3.weight"]
    grads = torch.autograd.grad(w.sum(), list(players.G.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_dead_unit_gives_finite_generator_gradient():
    """A hidden unit that is dead from the start has ∂L_D/∂w = 0 every step, so Adam's v stays 0 there;
    √v's derivative at 0 must not turn G's gradient into 0·∞ = NaN."""
    v = torch.tensor([0.0, 4.0], requires_grad=True)
    out = _sqrt0(v)
    out.sum().backward()
    assert out.tolist() == [0.0, 2.0] and v.grad.tolist() == [0.0, 0.25]

    torch.manual_seed(0)
    G = SmallG()
    D = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1), nn.Flatten(0))
    with torch.no_grad():
        D[0].bias[1] = -1e3  # unit 1 never fires
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=0.01), torch.optim.Adam(D.parameters(), lr=0.01))
    game = DYNAMICS["unrolled"](k=2).bind(players, NonSaturating(), NoPenalty(), 1, Gauss(), 8)
    for _ in range(3):
        game.step()
    assert all(torch.isfinite(q).all() for q in G.parameters())


def all_tensors_equal(a, b):
    """Every tensor (and number) of two checkpoints, bit for bit; the config and wall time are not state."""
    drop = ("config", "wall_time_s")
    assert_same_tensors({k: v for k, v in a.items() if k not in drop}, {k: v for k, v in b.items() if k not in drop})


@pytest.mark.parametrize("objective", ["dragan", "wgan_gp"])
def test_k0_is_alternating_bit_for_bit(tmp_path, objective):
    over = POINTS + [f"objective={objective}", "train.iterations=3"]
    run_train(tmp_path / "alt", over)
    run_train(tmp_path / "unr", over + ["dynamics=unrolled", "dynamics.k=0"])
    a, b = load_ckpt(tmp_path / "alt"), load_ckpt(tmp_path / "unr")
    all_tensors_equal(a, b)


def test_d_steps_are_alternatings(tmp_path):
    """After one generator step D (and opt_D) equal alternating's: the unroll draws after D's steps and
    leaves D alone. G differs: its gradient went through the unroll."""
    over = POINTS + ["objective=wgan_gp", "train.iterations=1"]  # 5 critic steps with the gradient penalty
    run_train(tmp_path / "alt", over)
    run_train(tmp_path / "unr", over + ["dynamics=unrolled", "dynamics.k=2"])
    a, b = load_ckpt(tmp_path / "alt"), load_ckpt(tmp_path / "unr")
    assert_same_tensors(a["D"], b["D"])
    assert_same_tensors(a["opt_D"], b["opt_D"])
    assert a["d_step"] == b["d_step"] == 5
    assert not all(torch.equal(a["G"][key], b["G"][key]) for key in a["G"])


@pytest.mark.parametrize("objective,k", [("vanilla", 5), ("wgan_gp", 2)])
@pytest.mark.parametrize("data", ["points", "images"])
def test_runs_with_objectives(tmp_path, image_overrides, objective, k, data):
    base = POINTS if data == "points" else image_overrides
    record = run_train(tmp_path, base + [f"objective={objective}", "dynamics=unrolled", f"dynamics.k={k}",
                                          "train.iterations=2", "train.log_every=1"])
    assert record["status"] == "completed"
    assert results(tmp_path)["status"] == "completed"


def test_runs_with_saddle_fgan(tmp_path):
    record = run_train(tmp_path, POINTS + ["objective=fgan_js", "objective.g_form=saddle", "dynamics=unrolled",
                                           "dynamics.k=2", "train.iterations=2"])
    assert record["status"] == "completed"


def test_resumes_exactly(tmp_path, monkeypatch):
    """3 steps + a kill after the checkpoint + resume = 6 straight steps, inner=adam (D's Adam moments
    come back from the checkpoint and the unroll continues from them)."""
    a = assert_resumes_exactly(tmp_path, monkeypatch, POINTS + ["dynamics=unrolled", "dynamics.k=2",
                                                                "dynamics.inner=adam"])
    assert a["step"] == 6


@pytest.mark.parametrize("override,message", [
    ("dynamics.k=-1", "dynamics.k: must be an integer >= 0"),
    ("dynamics.inner=foo", "dynamics.inner: unknown inner optimizer 'foo'; allowed: sgd, adam"),
    ("dynamics.inner_lr=0", "dynamics.inner_lr: must be > 0"),
])
def test_bad_config(override, message):
    with pytest.raises(ConfigError, match=message):
        build_dynamics(compose(["dynamics=unrolled", override]).dynamics)


def test_bad_config_cli(tmp_path):
    proc = ganbench_run(["dynamics=unrolled", "dynamics.inner=foo", f"hydra.run.dir={tmp_path}/r"], tmp_path,
                        timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and len(err) == 1, proc.stderr
    assert "dynamics.inner: unknown inner optimizer 'foo'; allowed: sgd, adam" in err[0]


def test_defaults():
    game = build_dynamics(compose(["dynamics=unrolled"]).dynamics)
    assert (game.name, game.k, game.inner, game.inner_lr) == ("unrolled", 5, "adam", None)
