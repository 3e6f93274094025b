"""Penalties against exact values.

A LINEAR D(x) = w·x + b has ∇ₓD = w everywhere, so every gradient penalty is known exactly whatever the
noise; a QUADRATIC D(x) = ½‖x‖² has ∇ₓD(x̂) = x̂, so ‖g‖ = ‖x̂‖ exposes the perturbation itself, which the
tests reproduce by replaying the random draws in the code's order.
"""
import math

import pytest
import torch
from torch import nn

from conftest import POINTS, compose, run_train, scalar_events
from ganbench.config import validate
from ganbench.errors import ConfigError
from ganbench.penalties import PENALTIES
from ganbench.penalties.base import input_grad_norm, input_grad_sqnorm
from ganbench.penalties.dragan import Form, Noise

DTYPE = torch.float64


class Linear(nn.Module):
    """D(x) = w·x + b over all non-batch dimensions."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=DTYPE).clone())
        self.b = nn.Parameter(torch.tensor(0.3, dtype=DTYPE))

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1) + self.b


class Quadratic(nn.Module):
    """D(x) = ½‖x‖² per sample: ∇ₓD(x) = x."""

    def forward(self, x):
        return 0.5 * x.flatten(1).square().sum(1)


def batch(shape=(6, 2), seed=123):
    g = torch.Generator().manual_seed(seed)
    # Columns with different means and scales: the batch std, a per-feature std and the unbiased std differ.
    x = torch.randn(shape, generator=g, dtype=DTYPE)
    return x * torch.linspace(0.5, 3.0, x[0].numel(), dtype=DTYPE).view(x[0].shape) + 1.0


def wnorm(w):
    return math.sqrt(sum(v * v for v in w))


W = [0.6, -1.3]  # ‖w‖² = 2.05, ‖w‖ ≈ 1.432
W_IMG = torch.linspace(-0.4, 0.5, 3 * 4 * 4, dtype=DTYPE).view(3, 4, 4)


def test_registry_and_defaults():
    assert set(PENALTIES) == {"none", "dragan", "wgan_gp", "r1", "weight_clip", "roth", "consensus", "nk", "historical"}
    d = PENALTIES["dragan"]()
    assert (d.lambda_, d.k, d.form, d.noise, d.c, d.scale, d.every) == (10.0, 1.0, Form.centered, Noise.reference, 10.0, 0.5, 1)
    assert d.gradient_penalty and d.adds_loss
    gp = PENALTIES["wgan_gp"]()
    assert (gp.lambda_, gp.k) == (10.0, 1.0) and gp.gradient_penalty
    assert PENALTIES["r1"]().gamma == 10.0 and PENALTIES["r1"]().gradient_penalty
    wc = PENALTIES["weight_clip"]()
    assert wc.clip == 0.01 and not wc.adds_loss and not wc.gradient_penalty
    assert not PENALTIES["none"]().adds_loss


# ------------------------------------------------------------------ linear D: exact values for any noise


def assert_centered_linear(D, value, lam, k):
    """A linear D has ∇ₓD = w everywhere: λ(‖w‖-k)², and d/dw = 2λ(‖w‖-k) w/‖w‖ (b does not enter ∇ₓD)."""
    n = wnorm(W)
    assert value.item() == pytest.approx(lam * (n - k) ** 2, rel=1e-10)
    value.backward()
    expected = [2 * lam * (n - k) * wi / n for wi in W]
    torch.testing.assert_close(D.w.grad, torch.tensor(expected, dtype=DTYPE), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("noise", ["reference", "gaussian"])
@pytest.mark.parametrize("lam,k", [(10.0, 1.0), (3.0, 2.5), (0.5, 0.0)])
def test_dragan_centered_linear(noise, lam, k):
    D = Linear(W)
    pen = PENALTIES["dragan"](lambda_=lam, k=k, form=Form.centered, noise=Noise(noise))
    torch.manual_seed(0)
    assert_centered_linear(D, pen(D, batch(), batch(seed=9)), lam, k)
    assert D.b.grad is None or D.b.grad.abs().item() == 0


@pytest.mark.parametrize("noise", ["reference", "gaussian"])
def test_dragan_squared_linear(noise):
    D = Linear(W)
    lam = 4.0
    pen = PENALTIES["dragan"](lambda_=lam, form=Form.squared, noise=Noise(noise))
    torch.manual_seed(1)
    value = pen(D, batch(), batch(seed=9))
    assert value.item() == pytest.approx(lam * 2.05, rel=1e-10)
    value.backward()
    torch.testing.assert_close(D.w.grad, 2 * lam * torch.tensor(W, dtype=DTYPE), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("noise", ["reference", "gaussian"])
def test_dragan_hinge_linear_both_branches(noise):
    lam = 2.0
    # Active branch: ‖w‖² = 2.05 > k = 1  ->  λ(‖w‖² - k), gradient 2λw.
    D = Linear(W)
    pen = PENALTIES["dragan"](lambda_=lam, k=1.0, form=Form.hinge, noise=Noise(noise))
    torch.manual_seed(2)
    value = pen(D, batch(), batch(seed=9))
    assert value.item() == pytest.approx(lam * (2.05 - 1.0), rel=1e-10)
    value.backward()
    torch.testing.assert_close(D.w.grad, 2 * lam * torch.tensor(W, dtype=DTYPE), rtol=1e-10, atol=1e-12)
    # Inactive branch: ‖w‖² = 2.05 < k = 3  ->  0, no gradient.
    D = Linear(W)
    pen = PENALTIES["dragan"](lambda_=lam, k=3.0, form=Form.hinge, noise=Noise(noise))
    value = pen(D, batch(), batch(seed=9))
    assert value.item() == 0.0
    value.backward()
    assert D.w.grad is None or torch.equal(D.w.grad, torch.zeros_like(D.w))


@pytest.mark.parametrize("noise", ["reference", "gaussian"])
def test_dragan_on_images_linear(noise):
    """Norms over all non-batch dimensions (C,H,W)."""
    D = Linear(W_IMG)
    pen = PENALTIES["dragan"](noise=Noise(noise))
    torch.manual_seed(3)
    value = pen(D, batch((5, 3, 4, 4)), batch((5, 3, 4, 4), seed=9))
    n = W_IMG.square().sum().sqrt().item()
    assert value.item() == pytest.approx(10.0 * (n - 1.0) ** 2, rel=1e-10)


@pytest.mark.parametrize("lam,k", [(10.0, 1.0), (1.0, 0.5)])
def test_wgan_gp_linear(lam, k):
    D = Linear(W)
    pen = PENALTIES["wgan_gp"](lambda_=lam, k=k)
    torch.manual_seed(4)
    assert_centered_linear(D, pen(D, batch(), batch(seed=9)), lam, k)


@pytest.mark.parametrize("on", ["real", "fake"])
def test_r1_r2_linear(on):
    from ganbench.penalties.r1 import On

    D = Linear(W)
    gamma = 6.0
    value = PENALTIES["r1"](gamma=gamma, on=On(on))(D, batch(), batch(seed=9))
    assert value.item() == pytest.approx(gamma / 2 * 2.05, rel=1e-10)
    value.backward()
    torch.testing.assert_close(D.w.grad, gamma * torch.tensor(W, dtype=DTYPE), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ quadratic D: the perturbations themselves

def test_dragan_reference_perturbation_quadratic():
    """x̂ = x + α·0.5·std(x)·u: std one scalar over the whole batch (population), α per sample, u elementwise."""
    x = batch((6, 2))
    lam, k = 10.0, 1.0
    pen = PENALTIES["dragan"](lambda_=lam, k=k, noise=Noise.reference)
    torch.manual_seed(7)
    value = pen(Quadratic(), x, batch(seed=9))

    torch.manual_seed(7)
    u = torch.rand(6, 2, dtype=DTYPE)  # drawn first (rand_like(x)) ...
    alpha = torch.rand(6, 1, dtype=DTYPE)  # ... then one α per sample
    flat = [v for row in x.tolist() for v in row]
    m = sum(flat) / len(flat)
    std = math.sqrt(sum((v - m) ** 2 for v in flat) / len(flat))  # population std over every element
    x_hat = [[x[i, j].item() + alpha[i, 0].item() * 0.5 * std * u[i, j].item() for j in range(2)] for i in range(6)]
    expected = lam * sum((math.sqrt(sum(v * v for v in row)) - k) ** 2 for row in x_hat) / 6
    assert value.item() == pytest.approx(expected, rel=1e-10)

    torch.manual_seed(7)
    torch.testing.assert_close(pen.perturb(x), torch.tensor(x_hat, dtype=DTYPE), rtol=1e-12, atol=1e-12)
    # The same with the unbiased std, or α elementwise, would differ: the check above is sharp.
    unbiased = x.std().item()
    assert abs(unbiased - std) > 1e-3


def test_dragan_reference_perturbation_scale_on_images():
    x = batch((3, 2, 2, 2))
    pen = PENALTIES["dragan"](noise=Noise.reference, scale=2.0)
    torch.manual_seed(8)
    got = pen.perturb(x)
    torch.manual_seed(8)
    u = torch.rand_like(x)
    alpha = torch.rand(3, 1, 1, 1, dtype=DTYPE)
    std = x.flatten().std(correction=0)
    torch.testing.assert_close(got, x + alpha * 2.0 * std * u, rtol=1e-12, atol=1e-12)


def test_dragan_gaussian_perturbation_quadratic():
    """x̂ = x + √c·δ, δ ~ N(0, I)."""
    x = batch((6, 2))
    c, lam, k = 4.0, 2.0, 0.5
    pen = PENALTIES["dragan"](lambda_=lam, k=k, c=c, noise=Noise.gaussian)
    torch.manual_seed(11)
    value = pen(Quadratic(), x, batch(seed=9))
    torch.manual_seed(11)
    x_hat = x + 2.0 * torch.randn(6, 2, dtype=DTYPE)
    expected = lam * sum((math.sqrt(sum(v * v for v in row)) - k) ** 2 for row in x_hat.tolist()) / 6
    assert value.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("form", ["squared", "hinge"])
def test_dragan_sq_forms_quadratic(form):
    x = batch((6, 2))
    pen = PENALTIES["dragan"](lambda_=1.5, k=1.8, c=0.25, form=Form(form), noise=Noise.gaussian)
    torch.manual_seed(12)
    value = pen(Quadratic(), x, x)
    torch.manual_seed(12)
    sq = (x + 0.5 * torch.randn(6, 2, dtype=DTYPE)).square().sum(1)
    per = sq if form == "squared" else (sq - 1.8).clamp_min(0)
    assert 0 < (sq > 1.8).sum() < 6 or form == "squared"  # the hinge sees both branches within the batch
    assert value.item() == pytest.approx(1.5 * per.mean().item(), rel=1e-10)


def test_wgan_gp_interpolation_quadratic():
    """x̂ = εx + (1-ε)x̃, ε ~ U[0,1] per sample."""
    real, fake = batch((6, 2)), batch((6, 2), seed=9)
    pen = PENALTIES["wgan_gp"]()
    torch.manual_seed(13)
    value = pen(Quadratic(), real, fake)
    torch.manual_seed(13)
    eps = torch.rand(6, 1, dtype=DTYPE)
    x_hat = eps * real + (1 - eps) * fake
    expected = 10.0 * ((x_hat.square().sum(1).sqrt() - 1.0) ** 2).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    torch.manual_seed(13)
    torch.testing.assert_close(pen.interpolate(real, fake), x_hat)


def test_penalties_do_not_reach_the_generator():
    """fake is detached: WGAN-GP and R2 give no gradient to G's parameters."""
    from ganbench.penalties.r1 import On

    theta = nn.Parameter(torch.ones(2, dtype=DTYPE))
    fake = batch() * theta
    for pen in (PENALTIES["wgan_gp"](), PENALTIES["r1"](on=On.fake)):
        pen(Linear(W), batch(seed=5), fake).backward()
        assert theta.grad is None


def test_input_grad_norm_per_sample():
    """‖∇ₓD(xᵢ)‖ per sample: with D = ½‖x‖², exactly ‖xᵢ‖; squared form exactly ‖xᵢ‖²."""
    x = batch((5, 3, 4, 4))
    norms = input_grad_norm(Quadratic(), x)
    assert norms.shape == (5,)
    torch.testing.assert_close(norms, x.flatten(1).norm(dim=1), rtol=1e-12, atol=0)
    assert len(set(norms.tolist())) == 5
    torch.testing.assert_close(input_grad_sqnorm(Quadratic(), x), x.flatten(1).square().sum(1), rtol=1e-12, atol=0)
    torch.testing.assert_close(input_grad_norm(Linear(W_IMG), x), torch.full((5,), W_IMG.norm().item(), dtype=DTYPE))


def test_weight_clipping():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))  # weights ~ U(-0.71, 0.71)
    before = [p.detach().clone() for p in D.parameters()]
    clip = PENALTIES["weight_clip"](clip=0.3)
    clip.after_d_step(D)
    bound = torch.tensor(0.3, dtype=torch.float32).item()
    for b, p in zip(before, D.parameters()):
        assert p.abs().max().item() <= bound
        torch.testing.assert_close(p.detach(), b.clamp(-0.3, 0.3), rtol=0, atol=0)
    assert (before[0].abs() > 0.3).any() and (before[0].abs() < 0.3).any()  # both cases were present


def test_other_penalties_have_no_after_step_effect():
    D = Linear(W)
    for name in ("none", "dragan", "wgan_gp", "r1"):
        PENALTIES[name]().after_d_step(D)
        assert D.w.tolist() == W


# ------------------------------------------------------------------ the lazy schedule, through a run

def test_lazy_every_schedule(tmp_path, monkeypatch):
    """every=3: the penalty is called on D steps 0, 3, 6, 9 (of 12 = n_dis 2 × 6 steps) and weighted ×3."""
    from ganbench.penalties.dragan import DRAGAN

    calls = []

    def recording(self, D, real, fake):
        calls.append(real.shape[0])
        return 0.5 + 0.0 * D(real).sum()

    monkeypatch.setattr(DRAGAN, "__call__", recording)
    run_dir = tmp_path / "run"
    run_train(run_dir, POINTS + ["objective=dragan", "objective.n_dis=2", "penalty.every=3", "train.iterations=6",
                                 "train.log_every=1", "train.sample_every=1000"])
    assert calls == [16] * 4
    steps = scalar_events(run_dir)
    assert steps["loss/penalty"] == [1, 2, 3, 4, 5, 6]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    # The logged value is the last D step's penalty of each G step: D steps 2s-2, 2s-1 belong to G step s.
    values = {e.step: e.value for e in acc.Scalars("loss/penalty")}
    assert values == {1: 0.0, 2: 1.5, 3: 0.0, 4: 0.0, 5: 1.5, 6: 0.0}


# ------------------------------------------------------------------ config validation

@pytest.mark.parametrize("overrides,key", [
    (["penalty.form=foo"], "penalty.form"),
    (["penalty.noise=bar"], "penalty.noise"),
    (["penalty.k=-1"], "penalty.k"),
    (["penalty.lambda_=-1"], "penalty.lambda_"),
    (["penalty.every=0"], "penalty.every"),
    (["penalty.c=-2"], "penalty.c"),
    (["penalty=wgan_gp", "penalty.lambda_=-1"], "penalty.lambda_"),
    (["penalty=r1", "penalty.gamma=-1"], "penalty.gamma"),
    (["penalty=r1", "penalty.on=both"], "penalty.on"),
    (["penalty=weight_clip", "penalty.clip=0"], "penalty.clip"),
    (["penalty=none", "penalty.every=0"], "penalty.every"),
    (["+penalty.foo=1"], "penalty.foo"),
])
def test_bad_penalty_config(overrides, key):
    cfg = compose(["objective=dragan"] + overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert message.startswith(key + ":"), message
    assert "\n" not in message


def test_good_penalty_config_types():
    spec = validate(compose(["objective=dragan", "penalty.form=hinge", "penalty.noise=gaussian", "penalty.k=2"]))
    assert spec.penalty.form is Form.hinge and spec.penalty.noise is Noise.gaussian and spec.penalty.k == 2.0


@pytest.mark.parametrize("on", ["real", "fake"])
def test_r1_config_composes(on):
    """conf/penalty/r1.yaml's key must be the string 'on' (unquoted, YAML 1.1 reads it as the boolean True)."""
    from ganbench.penalties.r1 import On

    cfg = compose(["objective=vanilla", "penalty=r1", f"penalty.on={on}", "penalty.gamma=2"])
    assert "on" in cfg.penalty and True not in cfg.penalty
    spec = validate(cfg)
    assert spec.penalty.on is On(on) and spec.penalty.gamma == 2.0
