"""Every loss of ganbench.objectives against values computed by hand (plain Python math) on fixed numbers."""
import math

import pytest
import torch

from ganbench.objectives import LOSSES

REAL = [1.5, -0.5, 0.0, 2.0]
FAKE = [-1.0, 0.25, 3.0, -2.5]


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def mean(values):
    return sum(values) / len(values)


def softplus(v):
    return math.log1p(math.exp(v))


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def relu(v):
    return max(0.0, v)


def check(loss, d_expected, g_expected):
    d = loss.d_loss(t(REAL), t(FAKE))
    g = loss.g_loss(t(FAKE), t(REAL))
    assert d.dim() == 0 and g.dim() == 0
    assert d.item() == pytest.approx(d_expected, rel=1e-12, abs=1e-12)
    assert g.item() == pytest.approx(g_expected, rel=1e-12, abs=1e-12)


def test_registry_holds_every_loss():
    assert set(LOSSES) == {"nonsaturating", "minimax", "wasserstein", "least_squares", "hinge", "fgan",
                           "energy_based", "loss_sensitive", "mode_regularized", "mixture", "feature_matching"}


def test_nonsaturating():
    # L_D = -E log σ(D(x)) - E log(1-σ(D(x̃)));  L_G = -E log σ(D(x̃)).
    d = mean([-math.log(sigmoid(r)) for r in REAL]) + mean([-math.log(1 - sigmoid(f)) for f in FAKE])
    g = mean([-math.log(sigmoid(f)) for f in FAKE])
    check(LOSSES["nonsaturating"](), d, g)


def test_minimax():
    d = mean([softplus(-r) for r in REAL]) + mean([softplus(f) for f in FAKE])
    # G minimises E log(1 - σ(D(x̃))) = -E softplus(D(x̃)).
    g = mean([math.log(1 - sigmoid(f)) for f in FAKE])
    assert g == pytest.approx(-mean([softplus(f) for f in FAKE]))
    check(LOSSES["minimax"](), d, g)


def test_wasserstein():
    check(LOSSES["wasserstein"](), mean(FAKE) - mean(REAL), -mean(FAKE))


def test_least_squares_default():
    loss = LOSSES["least_squares"]()
    assert (loss.a, loss.b, loss.c) == (0.0, 1.0, 1.0)
    d = 0.5 * mean([(r - 1) ** 2 for r in REAL]) + 0.5 * mean([(f - 0) ** 2 for f in FAKE])
    g = 0.5 * mean([(f - 1) ** 2 for f in FAKE])
    check(loss, d, g)


def test_least_squares_pearson():
    loss = LOSSES["least_squares"](a=-1.0, b=1.0, c=0.0)
    d = 0.5 * mean([(r - 1) ** 2 for r in REAL]) + 0.5 * mean([(f + 1) ** 2 for f in FAKE])
    g = 0.5 * mean([f**2 for f in FAKE])
    check(loss, d, g)


def test_hinge():
    d = mean([relu(1 - r) for r in REAL]) + mean([relu(1 + f) for f in FAKE])
    check(LOSSES["hinge"](), d, -mean(FAKE))


@pytest.mark.parametrize("name", ["nonsaturating", "minimax"])
def test_gan_losses_at_d_zero(name):
    """D ≡ 0 (σ = ½): L_D = 2 log 2; non-saturating L_G = log 2, minimax L_G = -log 2."""
    zeros = torch.zeros(5, dtype=torch.float64)
    loss = LOSSES[name]()
    assert loss.d_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2), rel=1e-14)
    expected_g = math.log(2) if name == "nonsaturating" else -math.log(2)
    assert loss.g_loss(zeros, zeros).item() == pytest.approx(expected_g, rel=1e-14)


@pytest.mark.parametrize("name", ["nonsaturating", "minimax"])
def test_gan_losses_stable_for_large_logits(name):
    """softplus form: no inf/NaN for |D| = 200 (log σ would underflow)."""
    big = torch.tensor([200.0, -200.0])
    loss = LOSSES[name]()
    d = loss.d_loss(big, -big)
    assert torch.isfinite(d)
    assert d.item() == pytest.approx(0.5 * 200 + 0.5 * 200)  # the two -200 logits on the wrong side


def test_generator_gradients_point_the_right_way():
    """Every G loss moves D(x̃) towards "real" (below LSGAN's target c=1): G wants its samples called real.
    For a logit/critic D that is up; for an energy or loss-function D (EBGAN, LS-GAN) it is down."""
    # Not functions of D(x̃) alone: feature matching's G loss is on D's features (in g_extra); the mixture's
    # payoff needs its bound players (tests/test_mixgan.py), and its base losses are checked here.
    for name, cls in LOSSES.items():
        if name in ("feature_matching", "mixture"):
            continue
        fake = torch.tensor([0.3, 0.7], dtype=torch.float64, requires_grad=True)
        cls().g_loss(fake, torch.zeros(2, dtype=torch.float64)).backward()
        expect = -1.0 if cls.higher_is_real else 1.0
        assert (fake.grad * expect > 0).all(), name
