"""objective=lsgan_qi: the Loss-Sensitive GAN (Qi 2017) by hand, pairing, recipe settings and tiny runs."""
from types import SimpleNamespace

import pytest
import torch

from conftest import POINTS, compose, load_ckpt, run_train
from ganbench.config import validate
from ganbench.errors import ConfigError
from ganbench.objectives.loss_sensitive import LossSensitive


def bound(loss, real, fake):
    loss.bind(SimpleNamespace(real=real, fake=fake))
    return loss


def test_margin_active_by_hand():
    # x = (0, 0), x̃ = (1, -2): Δ = |0-1| + |0+2| = 3. D(x) = 0.5, D(x̃) = 1 → L = relu: 0.5, 1.
    # hinge = (3 + 0.5 - 1)₊ = 2.5; L_D = 0.5 + λ·2.5 with λ = 2 → 5.5.
    loss = bound(LossSensitive(lam=2.0), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -2.0]]))
    assert loss.d_loss(torch.tensor([0.5]), torch.tensor([1.0])).item() == pytest.approx(5.5)
    # mean over the 2 dimensions: Δ = 1.5 → hinge 1.0 → 0.5 + 2·1.0
    loss = bound(LossSensitive(lam=2.0, distance_reduce="mean"), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -2.0]]))
    assert loss.d_loss(torch.tensor([0.5]), torch.tensor([1.0])).item() == pytest.approx(2.5)


def test_margin_inactive_and_nonnegative_loss():
    # Δ = 0.1 (scale 0.1 of L1 = 1), L(x) = relu(-3) = 0, L(x̃) = 2: (0.1 + 0 - 2)₊ = 0 → L_D = E L(x) = 0
    loss = bound(LossSensitive(margin_scale=0.1), torch.tensor([[0.0, 0.0]]), torch.tensor([[0.5, 0.5]]))
    real_out = torch.tensor([-3.0], requires_grad=True)
    fake_out = torch.tensor([2.0], requires_grad=True)
    value = loss.d_loss(real_out, fake_out)
    assert value.item() == 0.0
    value.backward()
    assert fake_out.grad.item() == 0.0  # inactive margin: no push on the fake's loss
    # softplus keeps L > 0 and smooth
    soft = bound(LossSensitive(activation="softplus"), torch.zeros(1, 2), torch.zeros(1, 2))
    assert soft.g_loss(torch.tensor([0.0]), None).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert LossSensitive().g_loss(torch.tensor([-1.0, 3.0]), None).item() == pytest.approx(1.5)  # relu: (0+3)/2


def test_pairs_real_and_fake_row_by_row():
    """Δ is taken between real i and fake i: swapping the fake rows changes the loss (a cross-pairing bug fails)."""
    real = torch.tensor([[0.0], [10.0]])
    fake = torch.tensor([[0.0], [10.0]])  # each fake equals its real: Δ = (0, 0)
    out_r, out_f = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])
    # paired: hinge (0 + 1 - 1)₊ = 0 → L_D = E L(x) = 1
    assert bound(LossSensitive(), real, fake).d_loss(out_r, out_f).item() == pytest.approx(1.0)
    # swapped fakes: Δ = (10, 10) → hinge 10 → 1 + 10
    assert bound(LossSensitive(), real, fake.flip(0)).d_loss(out_r, out_f).item() == pytest.approx(11.0)
    # per-pair hinge, not a hinge of the means: pairs (Δ=2, L diff -3) and (Δ=0, L diff +1)
    real, fake = torch.tensor([[2.0], [0.0]]), torch.tensor([[0.0], [0.0]])
    value = bound(LossSensitive(), real, fake).d_loss(torch.tensor([0.0, 1.0]), torch.tensor([3.0, 0.0]))
    assert value.item() == pytest.approx(0.5 + (0.0 + 1.0) / 2)


def test_needs_bind_and_validates():
    with pytest.raises(RuntimeError, match="bind"):
        LossSensitive().d_loss(torch.zeros(1), torch.zeros(1))
    with pytest.raises(ConfigError, match="activation"):
        LossSensitive(activation="tanh")
    with pytest.raises(ConfigError, match="distance_reduce"):
        LossSensitive(distance_reduce="max")


def test_recipe_sets_weight_decay_on_D_only():
    spec = validate(compose(["objective=lsgan_qi"] + POINTS))
    assert isinstance(spec.loss, LossSensitive)
    assert spec.opt_d.weight_decay == 5.0e-5 and spec.opt_g.weight_decay == 0.0
    assert spec.opt_d.lr == 1.0e-4 and spec.n_dis == 1
    spec = validate(compose(["objective=lsgan_qi", "optimizer.d.weight_decay=0.001"] + POINTS))
    assert spec.opt_d.weight_decay == 0.001


def test_tiny_points_run_uses_the_margin(tmp_path):
    rec = run_train(tmp_path / "a", ["objective=lsgan_qi", "train.iterations=5"] + POINTS)
    assert rec["status"] == "completed"
    # the margin scale reaches D's update: a different scale trains a different D
    run_train(tmp_path / "b", ["objective=lsgan_qi", "objective.margin_scale=0.0", "train.iterations=5"] + POINTS)
    a, b = load_ckpt(tmp_path / "a"), load_ckpt(tmp_path / "b")
    assert not all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])
    assert a["opt_D"]["param_groups"][0]["weight_decay"] == 5.0e-5


def test_tiny_dcgan_run(tmp_path, image_overrides):
    rec = run_train(tmp_path / "img", ["objective=lsgan_qi", "train.iterations=3"] + image_overrides)
    assert rec["status"] == "completed"
