"""Consensus optimization (penalty=consensus) and the Nagarajan-Kolter regulariser (penalty=nk), by hand
on the bilinear game with scalar players, and their known behaviour there.

The game (as in test_dynamics.py): G(z) = x, D(v) = y·v, real data at 0, Wasserstein loss, so
L_D = E D(x̃) - E D(0) = xy and L_G = -xy. With SGD of step h:

* consensus: v = (∂L_D/∂y, ∂L_G/∂x) = (x, -y), R = ½(x² + y²), both players add γR:
  y' = y - h(x + γy), x' = x - h(-y + γx), i.e. (x', y') = [[1-hγ, h], [-h, 1-hγ]](x, y). That matrix is
  (1-hγ)I + h·(rotation by -90°), so every step scales the radius by exactly ρ = √((1-hγ)² + h²) (< 1 for
  0 < hγ, h small); without it (γ = 0) ρ = √(1+h²) > 1: the simultaneous spiral outwards.
* Nagarajan-Kolter: V = -L_D = -xy, ∇_y V = -x, G adds ηx²; D is unchanged.
  simultaneous: (x', y') = [[1-2hη, h], [-h, 1]](x, y), det = 1 - 2hη + h²;
  alternating (D first, G sees y'): [[1-2hη-h², h], [-h, 1]], det = 1 - 2hη.
  With complex eigenvalues |λ| = √det, so both converge for η > h/2 (simultaneous) and any η > 0
  (alternating), where without the term the simultaneous steps diverge and the alternating ones cycle
  (det = 1): Nagarajan & Kolter's local stability, in its simplest instance.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import POINTS, compose, ganbench_run, results, run_train
from toy_game import Linear1, Point, Zeros
from ganbench.config import validate
from ganbench.dynamics import DYNAMICS, Players
from ganbench.errors import ConfigError
from ganbench.objectives.nonsaturating import NonSaturating
from ganbench.objectives.wasserstein import Wasserstein
from ganbench.penalties import PENALTIES
from ganbench.penalties.consensus import Consensus
from ganbench.penalties.nk import NagarajanKolter
from ganbench.penalties.none import NoPenalty


def bilinear_game(dynamics: str, penalty, x: float = 1.0, y: float = 1.0, lr: float = 0.1):
    G, D = Point(x), Linear1(y)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=lr), torch.optim.SGD(D.parameters(), lr=lr))
    return DYNAMICS[dynamics]().bind(players, Wasserstein(), penalty, 1, Zeros(), 4)


def point(game):
    return game.G.x.item(), game.D.y.item()


def iterate(game, steps: int):
    out = []
    for _ in range(steps):
        game.step()
        out.append(point(game))
    return out


def linear_orbit(M, v0, steps: int):
    """(M^t v0) for t = 1..steps, in float64."""
    M = torch.tensor(M, dtype=torch.float64)
    v = torch.tensor(v0, dtype=torch.float64)
    out = []
    for _ in range(steps):
        v = M @ v
        out.append(v.clone())
    return out


def assert_on_orbit(points, expected, rel=1e-3):
    for t, (p, e) in enumerate(zip(points, expected)):
        diff = math.hypot(p[0] - e[0].item(), p[1] - e[1].item())
        assert diff <= rel * e.norm().item() + 1e-12, (t, p, e.tolist())


# ------------------------------------------------------------------ consensus by hand

def test_registry_and_defaults():
    assert PENALTIES["consensus"] is Consensus and PENALTIES["nk"] is NagarajanKolter
    spec = validate(compose(["objective=vanilla", "dynamics=simultaneous", "penalty=consensus"]))
    assert isinstance(spec.penalty, Consensus) and spec.penalty.gamma == 10.0 and spec.penalty.every == 1
    spec = validate(compose(["objective=vanilla", "penalty=nk", "penalty.eta=0.1", "penalty.every=3"]))
    assert isinstance(spec.penalty, NagarajanKolter) and spec.penalty.eta == 0.1 and spec.penalty.every == 3
    assert validate(compose(["objective=vanilla", "penalty=nk"])).penalty.eta == 0.5


def test_consensus_value_and_gradients_by_hand():
    """R = ½(x² + y²) at (x, y) = (0.5, -2): γR = 2.125γ; ∂(γR)/∂x = γx, ∂(γR)/∂y = γy. The ∂/∂x half
    comes only through the generator's graph (fake_g): a penalty built on the detached fake gives 0 there."""
    gamma = 3.0
    pen = Consensus(gamma=gamma)
    game = bilinear_game("simultaneous", pen, x=0.5, y=-2.0)
    game.real = torch.zeros(4, 1)
    game.fake_g = game.G(game.latent())
    game.fake = game.fake_g.detach()
    value = pen(game.D, game.real, game.fake)
    assert value.item() == pytest.approx(gamma * 0.5 * (0.25 + 4.0))
    gx, gy = torch.autograd.grad(value, [game.G.x, game.D.y], retain_graph=True)
    assert (gx.item(), gy.item()) == pytest.approx((gamma * 0.5, gamma * -2.0))
    # G's side of the same step is the same R (cached, not recomputed); consumed once.
    g_side = pen.g_extra(game)
    assert g_side is not None and g_side.item() == pytest.approx(value.item())
    (gx2,) = torch.autograd.grad(g_side, [game.G.x])
    assert gx2.item() == pytest.approx(gamma * 0.5)
    assert pen.g_extra(game).item() == 0.0
    # A cache from an earlier step is never used for a later step's fake.
    pen(game.D, game.real, game.fake)
    game.fake_g = game.G(game.latent())
    assert pen.g_extra(game).item() == 0.0


@pytest.mark.parametrize("x,y,gamma", [(1.0, 1.0, 1.0), (0.5, -2.0, 3.0)])
def test_consensus_step_by_hand(x, y, gamma):
    """One simultaneous step, h = 0.1: y' = y - h(x + γy), x' = x - h(-y + γx); stats D = xy,
    G = -xy + γR, penalty = γR, R = ½(x² + y²). From (1, 1), γ = 1: (1.0, 0.8)."""
    h = 0.1
    game = bilinear_game("simultaneous", Consensus(gamma=gamma), x=x, y=y, lr=h)
    d_loss, g_loss, pen, _, _ = game.step().tolist()
    R = 0.5 * (x * x + y * y)
    assert (d_loss, g_loss, pen) == pytest.approx((x * y, -x * y + gamma * R, gamma * R), rel=1e-6)
    assert point(game) == pytest.approx((x - h * (-y + gamma * x), y - h * (x + gamma * y)), rel=1e-6)


def test_consensus_every_is_lazy_on_both_players():
    """every=2, γ = 1, h = 0.1 from (1, 1): step 0 both add 2γR: x = 1 - 0.1(-1 + 2) = 0.9,
    y = 1 - 0.1(1 + 2) = 0.7; step 1 plain: x = 0.9 + 0.07 = 0.97, y = 0.7 - 0.09 = 0.61."""
    game = bilinear_game("simultaneous", Consensus(gamma=1.0, every=2))
    assert [c for p in iterate(game, 2) for c in p] == pytest.approx([0.9, 0.7, 0.97, 0.61], rel=1e-6)


def test_simultaneous_spirals_out_consensus_converges():
    """h = 0.1: plain simultaneous r_t = √2(1 + h²)^{t/2} grows; with γ = 1 the radius shrinks by exactly
    ρ = √((1-hγ)² + h²) = √0.82 per step: r_100 = √2·0.82^50 ≈ 7e-5."""
    h, gamma, steps = 0.1, 1.0, 100
    plain = iterate(bilinear_game("simultaneous", NoPenalty(), lr=h), steps)
    assert math.hypot(*plain[-1]) == pytest.approx(math.sqrt(2) * (1 + h * h) ** (steps / 2), rel=1e-4)
    cons = iterate(bilinear_game("simultaneous", Consensus(gamma=gamma), lr=h), steps)
    rho = math.sqrt((1 - h * gamma) ** 2 + h * h)
    radii = [math.hypot(*p) for p in cons]
    for t in (1, 10, 50, 100):
        assert radii[t - 1] == pytest.approx(math.sqrt(2) * rho ** t, rel=1e-3)
    assert radii[-1] < 1e-4
    assert_on_orbit(cons, linear_orbit([[1 - h * gamma, h], [-h, 1 - h * gamma]], [1.0, 1.0], steps))


def test_consensus_needs_simultaneous(tmp_path):
    with pytest.raises(ConfigError, match="penalty=consensus needs dynamics=simultaneous") as info:
        bilinear_game("alternating", Consensus())
    assert str(info.value).startswith("dynamics.name:") and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="penalty=consensus needs dynamics=simultaneous"):
        run_train(tmp_path / "run", POINTS + ["objective=vanilla", "penalty=consensus", "train.iterations=1"])


def test_consensus_alternating_cli_error_is_one_line(tmp_path):
    proc = ganbench_run(["objective=vanilla", "penalty=consensus", "dataset=ring8", "arch=mlp", "arch.width=8",
                         "train.iterations=1", "device=cpu", "train.progress=false", "metrics.names=[]", "eval.every=0",
                         f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if "penalty=consensus needs dynamics=simultaneous" in line]
    assert len(lines) == 1, proc.stderr[-2000:]


# ------------------------------------------------------------------ Nagarajan-Kolter by hand

@pytest.mark.parametrize("x,y,eta", [(1.0, 1.0, 0.5), (0.5, -2.0, 2.0)])
def test_nk_step_by_hand(x, y, eta):
    """G adds η‖∇_y V‖² = ηx² (V = -xy); D's step is the plain one (y' = y - hx) in both dynamics.
    simultaneous: x' = x - h(-y + 2ηx); alternating: x' = x - h(-y' + 2ηx), G's loss -xy' + ηx².
    From (1, 1), η = 0.5: simultaneous (1.0, 0.9), alternating (0.99, 0.9)."""
    h = 0.1
    game = bilinear_game("simultaneous", NagarajanKolter(eta=eta), x=x, y=y, lr=h)
    d_loss, g_loss, pen, _, _ = game.step().tolist()
    assert (d_loss, g_loss, pen) == pytest.approx((x * y, -x * y + eta * x * x, 0.0), rel=1e-6)
    assert point(game) == pytest.approx((x - h * (-y + 2 * eta * x), y - h * x), rel=1e-6)

    game = bilinear_game("alternating", NagarajanKolter(eta=eta), x=x, y=y, lr=h)
    d_loss, g_loss, pen, _, _ = game.step().tolist()
    y1 = y - h * x
    assert (d_loss, g_loss, pen) == pytest.approx((x * y, -x * y1 + eta * x * x, 0.0), rel=1e-6)
    assert point(game) == pytest.approx((x - h * (-y1 + 2 * eta * x), y1), rel=1e-6)


def test_nk_never_reaches_d():
    """The term's θ_D-gradient is cut (θ_D a constant): D's .grad stays untouched by G's loss."""
    pen = NagarajanKolter(eta=1.0)
    game = bilinear_game("alternating", pen)
    game.real = torch.zeros(4, 1)
    game.fake_g = game.G(game.latent())
    value = pen.g_extra(game)
    value.backward()
    assert value.item() == pytest.approx(1.0) and game.G.x.grad.item() == pytest.approx(2.0)
    assert game.D.y.grad is None
    assert pen(game.D, game.real, game.fake_g.detach()).item() == 0.0


def test_nk_every_is_lazy_by_generator_step():
    """every=2, η = 0.5, h = 0.1 from (1, 1), simultaneous: step 0 G adds 2ηx²: x = 1 - 0.1(-1 + 2) = 0.9,
    y = 0.9; step 1 plain: x = 0.9 + 0.09 = 0.99, y = 0.9 - 0.09 = 0.81."""
    game = bilinear_game("simultaneous", NagarajanKolter(eta=0.5, every=2))
    assert [c for p in iterate(game, 2) for c in p] == pytest.approx([0.9, 0.9, 0.99, 0.81], rel=1e-6)


@pytest.mark.parametrize("dynamics", ["simultaneous", "alternating"])
def test_nk_converges_on_the_bilinear_game(dynamics):
    """h = 0.1, η = 0.5: the iterates follow the matrices of the module docstring; |λ| = √det
    (√0.91 simultaneous, √0.9 alternating), so r_300 is below 1e-5 where plain steps diverge / cycle."""
    h, eta, steps = 0.1, 0.5, 300
    if dynamics == "simultaneous":
        M, det = [[1 - 2 * h * eta, h], [-h, 1]], 1 - 2 * h * eta + h * h
    else:
        M, det = [[1 - 2 * h * eta - h * h, h], [-h, 1]], 1 - 2 * h * eta
    Mt = torch.tensor(M, dtype=torch.float64)
    assert torch.linalg.det(Mt).item() == pytest.approx(det)
    assert torch.linalg.eigvals(Mt).abs().max().item() == pytest.approx(math.sqrt(det))
    pts = iterate(bilinear_game(dynamics, NagarajanKolter(eta=eta), lr=h), steps)
    assert_on_orbit(pts, linear_orbit(M, [1.0, 1.0], steps))
    assert math.hypot(*pts[-1]) < 1e-5
    plain = iterate(bilinear_game(dynamics, NoPenalty(), lr=h), steps)
    assert math.hypot(*plain[-1]) > 0.9


# ------------------------------------------------------------------ batch norm in D

class BNCritic(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.LeakyReLU(0.2), nn.Linear(4, 1))

    def forward(self, v):
        return self.net(v)[:, 0]


class Affine(nn.Module):
    z_dim = 2

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, z):
        return self.lin(z)


class Gauss:
    kind = "points"
    sample_device = torch.device("cpu")

    def sample(self, n, generator=None):
        return torch.randn(n, 2) + 1.0


@pytest.mark.parametrize("dynamics,penalty", [("simultaneous", Consensus), ("simultaneous", NagarajanKolter),
                                              ("alternating", NagarajanKolter)])
def test_extra_forward_leaves_batchnorm_statistics(dynamics, penalty):
    """The regulariser's own forward pass of D must not update BN's running statistics a second time:
    after one step they equal those of a plain step on the same batch (same seed)."""
    stats = []
    for pen in (NoPenalty(), penalty()):
        torch.manual_seed(0)
        G, D = Affine(), BNCritic()
        players = Players(G, D, torch.optim.SGD(G.parameters(), lr=0.1), torch.optim.SGD(D.parameters(), lr=0.1))
        game = DYNAMICS[dynamics]().bind(players, NonSaturating(), pen, 1, Gauss(), 8)
        out = game.step()
        assert torch.isfinite(out).all()
        stats.append({k: v.clone() for k, v in D.state_dict().items() if "running" in k or "num_batches" in k})
    for k in stats[0]:
        assert torch.equal(stats[0][k], stats[1][k]), k


# ------------------------------------------------------------------ config and runs

@pytest.mark.parametrize("penalty,override,key", [
    ("consensus", "penalty.gamma=-1", "penalty.gamma"),
    ("consensus", "penalty.gamma=nan", "penalty.gamma"),
    ("consensus", "penalty.every=0", "penalty.every"),
    ("consensus", "+penalty.eta=1", "penalty.eta"),
    ("nk", "penalty.eta=-0.5", "penalty.eta"),
    ("nk", "penalty.eta=inf", "penalty.eta"),
    ("nk", "+penalty.gamma=1", "penalty.gamma"),
])
def test_bad_config(penalty, override, key):
    with pytest.raises(ConfigError) as info:
        validate(compose(["objective=vanilla", "dynamics=simultaneous", f"penalty={penalty}", override]))
    message = str(info.value)
    assert message.startswith(key + ":") and "\n" not in message, message


@pytest.fixture
def no_density(monkeypatch):
    import ganbench.run.board as board

    monkeypatch.setattr(board, "log_density", lambda *args, **kwargs: None)


@pytest.mark.parametrize("penalty,dynamics", [("consensus", "simultaneous"), ("nk", "simultaneous"),
                                              ("nk", "alternating")])
def test_tiny_runs(tmp_path, no_density, monkeypatch, penalty, dynamics):
    """objective=vanilla on POINTS completes; every step's statistics (D and G loss, which carry the
    regulariser, penalty, D outputs) are finite."""
    cls, seen = DYNAMICS[dynamics], []
    original = cls.step

    def step(self):
        out = original(self)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(cls, "step", step)
    run_dir = tmp_path / "run"
    record = run_train(run_dir, POINTS + ["objective=vanilla", f"penalty={penalty}", f"dynamics={dynamics}",
                                          "train.iterations=3", "train.sample_every=1000"])
    res = results(run_dir)
    assert record["status"] == res["status"] == "completed", res.get("error")
    assert res["diverged_step"] is None and res["config"]["penalty"]["name"] == penalty
    assert len(seen) == 3 and all(torch.isfinite(s).all() for s in seen), seen
    if penalty == "consensus":
        assert all(s[2].item() > 0 for s in seen)  # D's γR is added (and logged) on every step


@pytest.mark.parametrize("penalty,dynamics", [("consensus", "simultaneous"), ("nk", "alternating")])
def test_resumes_exactly(tmp_path, no_density, penalty, dynamics):
    """No state across steps; the lazy schedule (every=2, odd resume point) follows the restored step
    counters: 3 steps + resume to 6 equal 6 straight steps, bit for bit."""
    from conftest import assert_same_tensors, load_ckpt

    over = POINTS + ["objective=vanilla", f"penalty={penalty}", f"dynamics={dynamics}", "penalty.every=2",
                     "train.ckpt_every=3", "train.sample_every=1000"]
    run_train(tmp_path / "straight", over + ["train.iterations=6"])
    run_train(tmp_path / "split", over + ["train.iterations=3"])
    run_train(tmp_path / "split", over + ["train.iterations=6"])
    a, b = load_ckpt(tmp_path / "straight"), load_ckpt(tmp_path / "split")
    assert results(tmp_path / "split")["status"] == "completed"
    for key in ("G", "D", "opt_G", "opt_D"):
        assert_same_tensors(a[key], b[key], key)
    assert "penalty_state" not in a
