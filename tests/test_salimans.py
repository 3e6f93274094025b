"""Salimans et al. 2016, "Improved Techniques for Training GANs": one-sided label smoothing, feature matching,
minibatch discrimination, historical averaging and virtual batch norm; values by hand, defaults unchanged,
exact resume, tiny runs on points and images."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import POINTS, assert_same_tensors, compose, load_ckpt, results, run_train
from toy_game import assert_resumes_exactly, Linear1, Point, Zeros
from ganbench.archs import dcgan, mlp
from ganbench.archs.layers import MinibatchDiscrimination, VirtualBatchNorm, reference_latents
from ganbench.dynamics import DYNAMICS, Players
from ganbench.errors import ConfigError
from ganbench.objectives.feature_matching import FeatureMatching
from ganbench.objectives.minimax import Minimax
from ganbench.objectives.nonsaturating import NonSaturating
from ganbench.objectives.wasserstein import Wasserstein
from ganbench.penalties.historical import Historical


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


# ---- 1. one-sided label smoothing ----
def test_label_smoothing_by_hand():
    real, fake = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.0])
    r = 0.9
    real_term = sum(r * softplus(-v) + (1 - r) * softplus(v) for v in (0.5, -1.0)) / 2
    fake_term = (softplus(2.0) + softplus(0.0)) / 2
    for cls in (NonSaturating, Minimax):
        assert cls(real_label=r).d_loss(real, fake).item() == pytest.approx(real_term + fake_term, rel=1e-6)
    # smoothing only touches the real term: fakes keep target 0
    assert NonSaturating(real_label=0.9).d_loss(torch.tensor([50.0]), fake).item() == pytest.approx(0.1 * 50 + fake_term, rel=1e-4)


def test_label_one_is_bit_identical_and_validated():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(64, generator=g), torch.randn(64, generator=g)
    today = F.softplus(-real).mean() + F.softplus(fake).mean()
    assert torch.equal(NonSaturating().d_loss(real, fake), today)
    assert torch.equal(NonSaturating(real_label=1.0).d_loss(real, fake), today)
    assert not torch.equal(NonSaturating(real_label=0.9).d_loss(real, fake), today)
    from ganbench.config import validate

    for name in ("vanilla", "dragan", "minimax"):
        assert compose([f"objective={name}"]).objective.real_label == 1.0
    assert validate(compose(["objective=vanilla", "objective.real_label=0.9"])).loss.real_label == 0.9
    with pytest.raises(ConfigError, match=r"^objective.real_label: must be in \(0, 1\] \(got 1.5\)"):
        validate(compose(["objective=vanilla", "objective.real_label=1.5"]))


# ---- 2. feature matching ----
def tiny_mlp_d(depth: int = 1) -> mlp.Discriminator:
    """D on 2-D points, hidden1 = relu(diag(1, 2)·x + (0, 1)), deeper layers the identity map through relu."""
    D = mlp.Discriminator(mlp.MLPConfig(depth=depth, width=2, activation="relu"), (2,))
    with torch.no_grad():
        for i, m in enumerate(mm for mm in D.net if isinstance(mm, nn.Linear)):
            if m.out_features == 2:
                m.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]) if i == 0 else torch.eye(2) * 3)
                m.bias.copy_(torch.tensor([0.0, 1.0]) if i == 0 else torch.zeros(2))
    return D


def fm_game(D, real, fake):
    return SimpleNamespace(D=D, real=real, fake_g=fake, noisy=lambda x: x, zero=torch.zeros(()))


def test_feature_matching_by_hand():
    D = tiny_mlp_d()
    real = torch.tensor([[1.0, 2.0], [3.0, -1.0]])  # hidden1: (1, 5), (3, 0) -> mean (2, 2.5)
    fake = torch.tensor([[0.5, 0.0], [-1.0, 1.0]], requires_grad=True)  # (0.5, 1), (0, 3) -> mean (0.25, 2)
    loss = FeatureMatching()
    game = fm_game(D, real, fake)
    loss.bind(game)
    assert loss.feature == "hidden1"
    value = loss.g_extra(game)
    assert value.item() == pytest.approx((2 - 0.25) ** 2 + (2.5 - 2) ** 2)
    value.backward()
    # ∂/∂fake: -2(μ_r - μ_f)·∂μ_f: row 0 (x1 = 0.5 > 0): -2·1.75·½; row 1's x1 < 0 is cut by relu; x2: -2·0.5·2·½
    assert torch.allclose(fake.grad, torch.tensor([[-1.75, -1.0], [0.0, -1.0]]))
    assert loss.g_loss(torch.randn(4), torch.randn(4)).item() == 0.0  # G's loss is the feature term only


def test_feature_matching_layer_choice_and_errors():
    D = tiny_mlp_d(depth=2)
    real, fake = torch.tensor([[1.0, 2.0], [3.0, -1.0]]), torch.tensor([[0.5, 0.0], [-1.0, 1.0]])
    last, first = FeatureMatching(), FeatureMatching(layer="hidden1")
    for loss in (last, first):
        loss.bind(fm_game(D, real, fake))
    assert last.feature == "hidden2"  # the paper's choice: D's last hidden layer
    # hidden2 = relu(3·hidden1): 9× the squared distance of hidden1
    assert last.g_extra(fm_game(D, real, fake)).item() == pytest.approx(9 * first.g_extra(fm_game(D, real, fake)).item())
    with pytest.raises(ConfigError, match="^objective.layer: unknown layer 'conv9'; allowed: last, hidden1, hidden2$"):
        FeatureMatching(layer="conv9").bind(fm_game(D, real, fake))
    assert dcgan.Discriminator(dcgan.DCGANConfig(width=2), (3, 16, 16), "batch").feature_names == ["conv1", "conv2"]


# ---- 3. minibatch discrimination ----
def test_minibatch_discrimination_by_hand():
    layer = MinibatchDiscrimination(2, kernels=2, kernel_dim=2)
    with torch.no_grad():
        # T[a, b, c]: kernel 0 reads (f1, f2), kernel 1 reads (2·f1, 0)
        layer.T.copy_(torch.tensor([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]))
    f = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # kernel 0: M = f; L1 distances: d01 = 1, d02 = 2, d12 = 3. kernel 1: M = (2 f1, 0): d01 = 2, d02 = 0, d12 = 2
    e = math.exp
    o = [[1 + e(-1) + e(-2), 1 + e(-2) + e(0)],
         [e(-1) + 1 + e(-3), e(-2) + 1 + e(-2)],
         [e(-2) + e(-3) + 1, e(0) + e(-2) + 1]]
    out = layer(f)
    assert torch.allclose(out, torch.cat([f, torch.tensor(o)], 1), atol=1e-6)


def test_minibatch_discrimination_couples_the_batch():
    torch.manual_seed(0)
    cfg = mlp.MLPConfig(depth=2, width=8, minibatch_discrimination=4, mbd_dim=3)
    D = mlp.Discriminator(cfg, (2,))
    x = torch.randn(5, 2)
    y = x.clone()
    y[1:] += 1.0  # change every sample but the first
    assert not torch.allclose(D(x)[0], D(y)[0])  # D(x_0) depends on the other samples
    assert D.net[-1].in_features == 8 + 4
    img = dcgan.Discriminator(dcgan.DCGANConfig(width=2, minibatch_discrimination=3), (3, 16, 16), "none")
    assert img(torch.randn(4, 3, 16, 16)).shape == (4,) and img.net[-1].in_features == 4 * 4 * 4 + 3
    with pytest.raises(ConfigError, match="^minibatch_discrimination: must be 0 \\(off\\)"):
        mlp.MLPConfig(minibatch_discrimination=-1)


@pytest.mark.parametrize("name", ["dcgan", "mlp"])
def test_minibatch_discrimination_off_leaves_d_unchanged(name):
    """The default D has the layers it always had (same names, types, RNG draws, outputs)."""
    shape = (3, 16, 16) if name == "dcgan" else (2,)

    def build(**extra):
        torch.manual_seed(3)
        if name == "dcgan":
            D = dcgan.Discriminator(dcgan.DCGANConfig(width=4, **extra), shape, "batch")
        else:
            D = mlp.Discriminator(mlp.MLPConfig(width=8, depth=2, **extra), shape)
        return D, torch.rand(4)

    D0, after0 = build()
    D1, after1 = build(minibatch_discrimination=0, mbd_dim=7)
    assert not any(isinstance(m, MinibatchDiscrimination) for m in D0.modules())
    assert_same_tensors(D0.state_dict(), D1.state_dict())
    assert torch.equal(after0, after1)
    assert isinstance(D0.net[-1], nn.Conv2d if name == "dcgan" else nn.Linear)
    x = torch.randn(6, *shape)
    assert torch.equal(D0(x), D0.net(x if name == "dcgan" else x.flatten(1)).flatten())


def test_minibatch_discrimination_refuses_gradient_penalties(tmp_path):
    with pytest.raises(ConfigError, match="^arch.minibatch_discrimination: couples the samples of a batch"):
        run_train(tmp_path, POINTS + ["objective=dragan", "arch.minibatch_discrimination=4", "train.iterations=1"])


# ---- 4. historical averaging ----
def test_historical_averaging_by_hand_over_three_steps():
    """Bilinear game L_D = xy, L_G = -xy with w‖θ - mean of past θ‖² on each player, SGD, alternating."""
    eta, w = 0.1, 0.5
    G, D = Point(1.0), Linear1(0.5)
    players = Players(G, D, torch.optim.SGD(G.parameters(), lr=eta), torch.optim.SGD(D.parameters(), lr=eta))
    pen = Historical(weight=w)
    game = DYNAMICS["alternating"]().bind(players, Wasserstein(), pen, 1, Zeros(), 4)
    xs, ys = [1.0], [0.5]
    pens = []
    for t in range(3):
        # the mean of the values before the current one, θ_0..θ_{t-1}; no history at t = 0: the term is 0
        ybar = sum(ys[:-1]) / t if t else ys[-1]
        xbar = sum(xs[:-1]) / t if t else xs[-1]
        x, y = xs[-1], ys[-1]
        y_new = y - eta * (x + 2 * w * (y - ybar))
        pens.append(w * (y - ybar) ** 2)
        x_new = x - eta * (-y_new + 2 * w * (x - xbar))
        stats = game.step()
        xs.append(x_new)
        ys.append(y_new)
        assert stats[2].item() == pytest.approx(pens[-1], abs=1e-7)
        assert G.x.item() == pytest.approx(x_new, rel=1e-6) and D.y.item() == pytest.approx(y_new, rel=1e-6)
    assert pens[2] > 0
    state = pen.state_dict()
    assert state["D"]["count"] == 3 and state["D"]["mean"]["y"].item() == pytest.approx(sum(ys[:3]) / 3, rel=1e-6)
    assert state["G"]["mean"]["x"].item() == pytest.approx(sum(xs[:3]) / 3, rel=1e-6)


def test_historical_is_validated():
    with pytest.raises(ConfigError, match="^every: historical averaging averages over every past step; must be 1"):
        Historical(every=2)
    with pytest.raises(ConfigError, match="^weight: must be >= 0"):
        Historical(weight=-1.0)


def test_historical_resumes_exactly(tmp_path, monkeypatch):
    a = assert_resumes_exactly(tmp_path, monkeypatch, POINTS + ["penalty=historical"])
    assert a["penalty_state"]["G"]["count"] == 6 and a["penalty_state"]["D"]["count"] == 6
    run_train(tmp_path / "plain", POINTS + ["train.iterations=6"])
    plain = load_ckpt(tmp_path / "plain")
    assert not torch.equal(plain["G"]["net.0.weight"], a["G"]["net.0.weight"])  # the terms do act


# ---- 5. virtual batch norm ----
def test_virtual_batch_norm_by_hand():
    vbn = VirtualBatchNorm(1, eps=0.0)
    h = torch.tensor([[1.0], [3.0], [5.0], [-1.0]])  # 2 reference rows, then examples 5 and -1
    out = vbn(h, 2)
    # reference rows: their own mean 2, variance 1
    assert out[:2].flatten().tolist() == pytest.approx([-1.0, 1.0])
    # example 5: union {1, 3, 5}: mean 3, variance 8/3; example -1: union {1, 3, -1}: mean 1, variance 8/3
    assert out[2].item() == pytest.approx(2 / math.sqrt(8 / 3)) and out[3].item() == pytest.approx(-2 / math.sqrt(8 / 3))
    # with spatial positions: the statistics of the union over (batch, H, W), per channel
    g = torch.Generator().manual_seed(0)
    h4 = torch.randn(5, 2, 3, 3, generator=g)
    out4 = VirtualBatchNorm(2)(h4, 3)
    for i in (3, 4):
        union = torch.cat([h4[:3], h4[i:i + 1]])
        mu, var = union.mean((0, 2, 3), keepdim=True), union.var((0, 2, 3), unbiased=False, keepdim=True)
        assert torch.allclose(out4[i:i + 1], (h4[i:i + 1] - mu) / torch.sqrt(var + 1e-5), atol=1e-5)


def vbn_generator(seed: int = 0, **extra) -> dcgan.Generator:
    torch.manual_seed(seed)
    return dcgan.Generator(dcgan.DCGANConfig(width=4, z_dim=8, g_norm="virtual_batch", vbn_ref_size=6, **extra), (3, 16, 16))


def test_virtual_batch_norm_outputs_are_per_example():
    G = vbn_generator()
    assert sum(isinstance(m, VirtualBatchNorm) for m in G.modules()) == 2
    z = torch.randn(5, 8)
    other = torch.cat([z[:1], 3 * torch.randn(4, 8)])
    assert torch.allclose(G(z)[0], G(other)[0], atol=1e-6) and torch.allclose(G(z[:1])[0], G(z)[0], atol=1e-6)
    torch.manual_seed(0)
    bn = dcgan.Generator(dcgan.DCGANConfig(width=4, z_dim=8), (3, 16, 16))
    assert not torch.allclose(bn(z)[0], bn(other)[0], atol=1e-3)  # batch norm does couple them


def test_virtual_batch_reference_is_seeded_kept_and_restored():
    before = torch.get_rng_state()
    torch.manual_seed(11)
    state = torch.get_rng_state()
    ref = reference_latents(6, 8)
    assert torch.equal(torch.get_rng_state(), state)  # the training RNG stream is untouched
    torch.set_rng_state(before)
    G0, G1 = vbn_generator(0), vbn_generator(1)
    assert not torch.equal(G0.z_ref, G1.z_ref) and G0.z_ref.shape == (6, 8)
    assert torch.equal(vbn_generator(11).z_ref, ref)
    assert "z_ref" in G0.state_dict()
    G1.load_state_dict(G0.state_dict())
    assert torch.equal(G1.z_ref, G0.z_ref)
    z = torch.randn(3, 8)
    assert torch.equal(G1(z), G0(z))
    # the default G has no reference batch: its state_dict is what it always was
    assert "z_ref" not in dcgan.Generator(dcgan.DCGANConfig(width=4, z_dim=8), (3, 16, 16)).state_dict()


def test_virtual_batch_run_resumes_with_its_reference(tmp_path, image_overrides):
    over = image_overrides + ["arch.g_norm=virtual_batch", "arch.vbn_ref_size=4", "train.ckpt_every=1"]
    run_train(tmp_path / "straight", over + ["train.iterations=2"])
    run_train(tmp_path / "split", over + ["train.iterations=1"])
    run_train(tmp_path / "split", over + ["train.iterations=2"])
    a, b = load_ckpt(tmp_path / "straight"), load_ckpt(tmp_path / "split")
    assert a["G"]["z_ref"].shape == (4, 8)
    assert_same_tensors(a["G"], b["G"], "G")
    assert_same_tensors(a["D"], b["D"], "D")


# ---- tiny runs ----
@pytest.mark.parametrize("extra", [
    ["objective=vanilla", "objective.real_label=0.9"],
    ["objective=feature_matching"],
    ["objective=feature_matching", "objective.layer=hidden1", "dynamics=simultaneous"],
    ["objective=vanilla", "arch.minibatch_discrimination=4", "arch.mbd_dim=3"],
    ["penalty=historical", "dynamics=simultaneous"],
])
def test_tiny_points_runs(tmp_path, extra):
    run_train(tmp_path, POINTS + extra + ["train.iterations=3"])
    assert results(tmp_path)["status"] == "completed"


def test_tiny_image_run_with_every_technique(tmp_path, image_overrides):
    over = image_overrides + ["objective=feature_matching", "objective.real_label=0.9", "penalty=historical",
                              "arch.minibatch_discrimination=3", "arch.g_norm=virtual_batch", "arch.vbn_ref_size=4",
                              "train.iterations=2"]
    run_train(tmp_path, over)
    assert results(tmp_path)["status"] == "completed"
    ckpt = load_ckpt(tmp_path)
    assert "z_ref" in ckpt["G"] and ckpt["penalty_state"]["G"]["count"] == 2
    assert any(k.endswith(".T") for k in ckpt["D"])
