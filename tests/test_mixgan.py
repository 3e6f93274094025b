"""objective=mixgan: MIX+GAN's payoff and entropy by hand, per-sample component draws, k=1 = plain, resume."""
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import POINTS, assert_same_tensors, compose, load_ckpt, run_train
from toy_game import assert_resumes_exactly
from ganbench.run.board import density_figure
from ganbench.errors import ConfigError
from ganbench.objectives.mixture import Mixture, MixtureD, MixtureG, entropy
from ganbench.penalties.none import NoPenalty


class Const(nn.Module):
    """G_i(z) = c (a 1-D point), whatever z."""

    def __init__(self, c: float):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))
        self.z_dim = 1

    def forward(self, z):
        return self.c.expand(z.shape[0], 1)


class Affine(nn.Module):
    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(a)), nn.Parameter(torch.tensor(b))

    def forward(self, x):
        return self.a * x.flatten() + self.b


def mixture_k2():
    loss = Mixture(k=2, entropy=0.0)
    G, D = loss.build_players(iter([(Const(1.0), Affine(1.0, 0.0)), (Const(-1.0), Affine(2.0, 1.0))]).__next__)
    with torch.no_grad():
        G.logits.copy_(torch.tensor([0.0, math.log(3.0)]))  # w = (1/4, 3/4)
        D.logits.copy_(torch.tensor([math.log(2.0), 0.0]))  # u = (2/3, 1/3)
    loss.bind(SimpleNamespace(G=G, D=D, batch_size=4, penalty=NoPenalty(), name="alternating"))
    return loss, G, D


def test_payoff_by_hand_k2():
    loss, G, D = mixture_k2()
    z, real = torch.zeros(4, 1), torch.full((4, 1), 0.5)
    fake = G(z)  # training mode: rows 0-1 from G_1 (= 1), rows 2-3 from G_2 (= -1)
    assert fake.flatten().tolist() == [1.0, 1.0, -1.0, -1.0]
    real_out, fake_out = D(real), D(fake)
    assert real_out.shape == (4, 2)
    sp = lambda v: F.softplus(torch.tensor(v)).item()
    # D_1(x) = x, D_2(x) = 2x + 1: D_1(real) = 0.5, D_2(real) = 2; D_j(G_i): D_1(1)=1, D_1(-1)=-1, D_2(1)=3, D_2(-1)=-1
    phi_d = {(1, 1): sp(-0.5) + sp(1.0), (2, 1): sp(-0.5) + sp(-1.0),
             (1, 2): sp(-2.0) + sp(3.0), (2, 2): sp(-2.0) + sp(-1.0)}
    w, u = {1: 0.25, 2: 0.75}, {1: 2 / 3, 2: 1 / 3}
    want_d = sum(w[i] * u[j] * phi_d[i, j] for i in (1, 2) for j in (1, 2))
    assert loss.d_loss(real_out, fake_out).item() == pytest.approx(want_d, rel=1e-6)
    phi_g = {(1, 1): sp(-1.0), (2, 1): sp(1.0), (1, 2): sp(-3.0), (2, 2): sp(1.0)}
    want_g = sum(w[i] * u[j] * phi_g[i, j] for i in (1, 2) for j in (1, 2))
    assert loss.g_loss(fake_out, real_out).item() == pytest.approx(want_g, rel=1e-6)


def test_gradients_reach_each_players_logits_only():
    loss, G, D = mixture_k2()
    real_out, fake_out = D(torch.full((4, 1), 0.5)), D(G(torch.zeros(4, 1)))
    loss.d_loss(real_out, fake_out.detach()).backward(retain_graph=True)
    assert G.logits.grad is None and D.logits.grad is not None and D.logits.grad.abs().sum() > 0
    D.zero_grad(set_to_none=True)
    loss.g_loss(fake_out, real_out.detach()).backward()
    assert G.logits.grad.abs().sum() > 0


def test_entropy_term_by_hand():
    w = torch.tensor([0.25, 0.75])
    assert entropy(w).item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert entropy(torch.tensor([1.0, 0.0])).item() == 0.0  # 0 log 0 = 0, no NaN
    loss, G, D = mixture_k2()
    real_out, fake_out = D(torch.full((4, 1), 0.5)), D(G(torch.zeros(4, 1)))
    base_d, base_g = loss.d_loss(real_out, fake_out).item(), loss.g_loss(fake_out, real_out).item()
    loss.entropy = 0.3
    h_u = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    h_w = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert loss.d_loss(real_out, fake_out).item() == pytest.approx(base_d - 0.3 * h_u, rel=1e-6)  # D: its own u
    assert loss.g_loss(fake_out, real_out).item() == pytest.approx(base_g - 0.3 * h_w, rel=1e-6)  # G: its own w


def test_mixture_samples_draw_components_per_sample():
    """Eval mode: each sample's component ~ Categorical(w): frequencies ≈ w, fixed per evaluation, and the
    global RNG is untouched."""
    G = MixtureG([Const(0.0), Const(1.0), Const(2.0)], draw_seed=7)
    with torch.no_grad():
        G.logits.copy_(torch.log(torch.tensor([0.2, 0.5, 0.3])))
    G.eval()
    state = torch.get_rng_state()
    x = torch.cat([G(torch.zeros(1000, 1)) for _ in range(20)]).flatten()
    assert torch.equal(torch.get_rng_state(), state)
    freq = torch.stack([(x == c).float().mean() for c in (0.0, 1.0, 2.0)])
    assert torch.allclose(freq, torch.tensor([0.2, 0.5, 0.3]), atol=0.01)  # 20k samples: std ≈ 0.0035
    first = G(torch.zeros(8, 1)).flatten()
    assert len(set(first.tolist())) > 1  # per sample, not one component for the whole batch
    G.train()
    G.eval()  # a new evaluation draws the same components for the same batches
    again = torch.cat([G(torch.zeros(1000, 1)) for _ in range(20)]).flatten()
    assert torch.equal(x, again)


def test_mixture_D_eval_is_weighted_value_for_the_density_plot():
    D = MixtureD([Affine(1.0, 0.0), Affine(2.0, 1.0)])
    with torch.no_grad():
        D.logits.copy_(torch.tensor([math.log(2.0), 0.0]))
    D.eval()
    assert D(torch.tensor([[0.5]])).item() == pytest.approx(2 / 3 * 0.5 + 1 / 3 * 2.0)

    class Pt(nn.Module):  # 2-D version for the density figure
        def __init__(self, k):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, float(k)]))

        def forward(self, x):
            return x @ self.w

    class Pt2(Const):
        def forward(self, z):
            return self.c.expand(z.shape[0], 2)

    import matplotlib.pyplot as plt

    G, D = MixtureG([Pt2(0.0), Pt2(1.0)], 0), MixtureD([Pt(1), Pt(2)])
    fig = density_figure(G, D, torch.zeros(10, 1), torch.randn(10, 2))  # D's (B,) mixture value fills the grid
    plt.close(fig)
    assert G.training and D.training  # back to the (B, K) training outputs


def test_validation():
    with pytest.raises(ConfigError, match="base"):
        Mixture(base="mode_regularized")
    with pytest.raises(ConfigError, match="k: must be"):
        Mixture(k=0)
    loss = Mixture(k=3)
    G, D = loss.build_players(lambda: (Const(0.0), Affine(1.0, 0.0)))
    with pytest.raises(ConfigError, match="objective.k"):
        loss.bind(SimpleNamespace(G=G, D=D, batch_size=2, penalty=NoPenalty(), name="alternating"))


def test_k1_is_bit_identical_to_plain(tmp_path):
    run_train(tmp_path / "mix", ["objective=mixgan", "objective.k=1", "train.iterations=5"] + POINTS)
    run_train(tmp_path / "plain", ["objective=vanilla", "train.iterations=5"] + POINTS)
    a, b = load_ckpt(tmp_path / "mix"), load_ckpt(tmp_path / "plain")
    for key in ("G", "D", "opt_G", "opt_D", "rng", "d_step", "step"):
        assert_same_tensors(a[key], b[key], key)


def test_k2_trains_the_logits_and_resumes_exactly(tmp_path, monkeypatch):
    a = assert_resumes_exactly(tmp_path, monkeypatch, ["objective=mixgan", "objective.k=2", "objective.entropy=0.1"]
                               + POINTS)
    assert not torch.equal(a["G"]["logits"], torch.zeros(2)) and not torch.equal(a["D"]["logits"], torch.zeros(2))
    assert {"components.0.net.0.weight", "components.1.net.0.weight"} <= set(a["G"])


def test_tiny_dcgan_run(tmp_path, image_overrides):
    rec = run_train(tmp_path / "img", ["objective=mixgan", "objective.k=2", "train.iterations=3"] + image_overrides)
    assert rec["status"] == "completed"


@pytest.mark.parametrize("extra, named", [(["penalty=dragan"], "penalty=dragan"),
                                          (["dynamics=unrolled"], "dynamics=unrolled")])
def test_combinations_that_are_not_mixgan_are_refused(extra, named):
    from ganbench.errors import ConfigError
    from ganbench.run.start import prepare

    with pytest.raises(ConfigError, match=f"objective.k: objective=mixgan with k=2 .*got {named}"):
        prepare(compose(["objective=mixgan", "objective.k=2"] + POINTS + extra), Path("/nonexistent"))
