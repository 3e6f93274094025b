"""f-GAN (Nowozin et al. 2016): every divergence of REFERENCE.md's table against its definition.

(a) at the optimal critic T* = f'(p/q) the loss's F equals D_f(P‖Q) = Σ q f(p/q) of two discrete distributions,
and any other critic gives less (F is a lower bound); (b) every conjugate satisfies Fenchel–Young, with equality
at t = f'(u); (c) the losses are finite with finite gradients at raw outputs of ±1e4; (d) both generator forms
against hand-computed values; (e) the seven recipes compose, validate and train (a 2-step run), and compose
with penalty=dragan. f, f' and the table's g_f, f* are written out here in plain Python math, independently of
ganbench/objectives/fgan.py.
"""
import math

import pytest
import torch

from conftest import POINTS, compose, results, run_train
from ganbench.config import validate
from ganbench.errors import ConfigError
from ganbench.objectives import LOSSES
from ganbench.objectives.fgan import (EXP_LINEAR_ABOVE, FGAN, Divergence, GForm, activation, conjugate,
                                      conjugate_of_activation, exp_lin, expm1_lin)

DIVS = ["kl", "reverse_kl", "pearson", "hellinger", "js", "gan", "tv"]
L2 = math.log(2)


def sp(v):
    """softplus in plain math (moderate v only)."""
    return math.log1p(math.exp(v))


# f (Nowozin et al. Table 1) and f'.
F_GEN = {
    "kl": lambda u: u * math.log(u),
    "reverse_kl": lambda u: -math.log(u),
    "pearson": lambda u: (u - 1) ** 2,
    "hellinger": lambda u: (math.sqrt(u) - 1) ** 2,
    "js": lambda u: -(u + 1) * math.log((1 + u) / 2) + u * math.log(u),
    "gan": lambda u: u * math.log(u) - (u + 1) * math.log(u + 1),
    "tv": lambda u: 0.5 * abs(u - 1),
}
F_PRIME = {
    "kl": lambda u: 1 + math.log(u),
    "reverse_kl": lambda u: -1 / u,
    "pearson": lambda u: 2 * (u - 1),
    "hellinger": lambda u: 1 - 1 / math.sqrt(u),
    "js": lambda u: math.log(2 * u / (1 + u)),
    "gan": lambda u: math.log(u / (u + 1)),
    "tv": lambda u: 0.5 * math.copysign(1.0, u - 1),
}
# g_f and f* exactly as printed in REFERENCE.md's table (naive forms; moderate arguments only).
G_F = {
    "kl": lambda v: v,
    "reverse_kl": lambda v: -math.exp(-v),
    "pearson": lambda v: v,
    "hellinger": lambda v: 1 - math.exp(-v),
    "js": lambda v: L2 - math.log(1 + math.exp(-v)),
    "gan": lambda v: -math.log(1 + math.exp(-v)),
    "tv": lambda v: 0.5 * math.tanh(v),
}
F_STAR = {
    "kl": lambda t: math.exp(t - 1),
    "reverse_kl": lambda t: -1 - math.log(-t),
    "pearson": lambda t: t * t / 4 + t,
    "hellinger": lambda t: t / (1 - t),
    "js": lambda t: -math.log(2 - math.exp(t)),
    "gan": lambda t: -math.log(1 - math.exp(t)),
    "tv": lambda t: t,
}
# v with g_f(v) = f'(u), solved by hand (tv: tanh(±40) is ±1 in float64, the supremum at |v| → ∞).
V_STAR = {
    "kl": lambda u: 1 + math.log(u),
    "reverse_kl": lambda u: math.log(u),
    "pearson": lambda u: 2 * (u - 1),
    "hellinger": lambda u: 0.5 * math.log(u),
    "js": lambda u: math.log(u),
    "gan": lambda u: math.log(u),
    "tv": lambda u: math.copysign(40.0, u - 1),
}
# A grid inside each conjugate's domain.
T_GRID = {
    "kl": (-6.0, 4.0),
    "reverse_kl": (-8.0, -0.02),
    "pearson": (-8.0, 6.0),
    "hellinger": (-6.0, 0.98),
    "js": (-6.0, L2 - 0.01),
    "gan": (-6.0, -0.01),
    "tv": (-0.5, 0.5),
}

# Two distributions on four points with probabilities in tenths: a batch of 10 samples with the right counts
# makes the batch mean the exact expectation.
P_COUNTS = [1, 2, 3, 4]
Q_COUNTS = [4, 3, 1, 2]


def t64(values):
    return torch.tensor(values, dtype=torch.float64)


def expand(per_point, counts):
    return t64([value for value, n in zip(per_point, counts) for _ in range(n)])


def divergence_by_definition(div):
    return sum(q / 10 * F_GEN[div]((p / 10) / (q / 10)) for p, q in zip(P_COUNTS, Q_COUNTS))


def test_registry_and_defaults():
    assert LOSSES["fgan"] is FGAN
    loss = FGAN()
    assert loss.divergence is Divergence.gan and loss.g_form is GForm.nonsaturating
    assert sorted(d.value for d in Divergence) == sorted(DIVS)


# ------------------------------------------------------------------ (a) F at T* = f'(p/q) is D_f(P‖Q)

@pytest.mark.parametrize("div", DIVS)
def test_optimal_critic_gives_the_divergence(div):
    ratios = [p / q for p, q in zip(P_COUNTS, Q_COUNTS)]
    v_star = [V_STAR[div](r) for r in ratios]
    # The hand-solved v really gives T* = g_f(v) = f'(p/q) through the module's activation.
    torch.testing.assert_close(activation(Divergence(div), t64(v_star)), t64([F_PRIME[div](r) for r in ratios]),
                               rtol=1e-12, atol=1e-12)
    loss = FGAN(divergence=Divergence(div))
    F_star = -loss.d_loss(expand(v_star, P_COUNTS), expand(v_star, Q_COUNTS)).item()
    expected = divergence_by_definition(div)
    assert F_star == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # P ≠ Q: clearly away from D_f(P‖P) = f(1) (0, or -log 4 for the GAN row).
    assert expected - F_GEN[div](1.0) > 0.05
    # Any other critic gives a smaller F: the bound is variational (a wrong sign of f* would break it).
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = t64(v_star) + 0.3 * torch.randn(4, generator=gen, dtype=torch.float64)
        F = -loss.d_loss(expand(v.tolist(), P_COUNTS), expand(v.tolist(), Q_COUNTS)).item()
        assert F <= expected + 1e-12


def test_known_closed_forms():
    """Two rows by a second route: KL = Σ p log(p/q); GAN = 2·JSD - log 4 with JSD from its mixture form."""
    p = [c / 10 for c in P_COUNTS]
    q = [c / 10 for c in Q_COUNTS]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert divergence_by_definition("kl") == pytest.approx(kl, rel=1e-12)
    m = [(pi + qi) / 2 for pi, qi in zip(p, q)]
    jsd = 0.5 * sum(pi * math.log(pi / mi) for pi, mi in zip(p, m)) + 0.5 * sum(qi * math.log(qi / mi)
                                                                                  for qi, mi in zip(q, m))
    assert divergence_by_definition("gan") == pytest.approx(2 * jsd - math.log(4), rel=1e-12)
    assert divergence_by_definition("js") == pytest.approx(2 * jsd, rel=1e-12)


# ------------------------------------------------------------------ (b) Fenchel–Young

@pytest.mark.parametrize("div", DIVS)
def test_fenchel_young(div):
    d = Divergence(div)
    us = [0.05 * 1.25 ** k for k in range(25)]  # 0.05 .. 10.6
    lo, hi = T_GRID[div]
    ts = torch.linspace(lo, hi, 201, dtype=torch.float64)
    f_star = conjugate(d, ts)
    assert torch.isfinite(f_star).all()
    for u in us:
        gap = F_GEN[div](u) + f_star - u * ts
        assert gap.min().item() >= -1e-12, (u, gap.argmin().item())
        # Equality at t = f'(u) (tv: f' = ±½, a subgradient; u = 1 is skipped there as no grid point is 1).
        t_u = t64([F_PRIME[div](u)])
        assert (F_GEN[div](u) + conjugate(d, t_u) - u * t_u).item() == pytest.approx(0.0, abs=1e-11)
    # The table's formula, as printed.
    for t in ts.tolist()[::10]:
        assert conjugate(d, t64([t])).item() == pytest.approx(F_STAR[div](t), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("div", ["reverse_kl", "hellinger", "js", "gan", "tv"])
def test_conjugate_is_infinite_outside_its_domain(div):
    outside = {"reverse_kl": 0.5, "hellinger": 1.5, "js": 1.0, "gan": 0.1, "tv": 0.6}[div]
    assert conjugate(Divergence(div), t64([outside])).item() == math.inf


@pytest.mark.parametrize("div", DIVS)
def test_stable_forms_equal_the_table(div):
    """activation and f*(g_f(v)) as computed by the loss equal the table's g_f and f*∘g_f on moderate v."""
    d = Divergence(div)
    vs = [x / 4 for x in range(-24, 25)]
    got_g = activation(d, t64(vs)).tolist()
    got_fg = conjugate_of_activation(d, t64(vs)).tolist()
    for v, g, fg in zip(vs, got_g, got_fg):
        assert g == pytest.approx(G_F[div](v), rel=1e-12, abs=1e-12)
        assert fg == pytest.approx(F_STAR[div](G_F[div](v)), rel=1e-9, abs=1e-12)


def test_exp_lin_exact_below_and_tangent_above():
    a = EXP_LINEAR_ABOVE
    x = torch.tensor([-50.0, -1.0, 0.0, 1e-8, 5.0, a], dtype=torch.float64)
    assert torch.equal(exp_lin(x), torch.exp(x)) and torch.equal(expm1_lin(x), torch.expm1(x))
    big = torch.tensor([a + 1.0, a + 100.0], dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(exp_lin(big), math.exp(a) * (1 + big.detach() - a), rtol=1e-14, atol=0)
    torch.testing.assert_close(expm1_lin(big), math.exp(a) * (1 + big.detach() - a) - 1, rtol=1e-14, atol=0)
    # C¹ at a: the slope on both sides is exp(a).
    for fn in (exp_lin, expm1_lin):
        x = torch.tensor([a - 1e-9, a + 1e-9], dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(fn(x).sum(), x)
        torch.testing.assert_close(grad, torch.full((2,), math.exp(a), dtype=torch.float64), rtol=1e-8, atol=0)


# ------------------------------------------------------------------ (c) stability at ±1e4

@pytest.mark.parametrize("g_form", ["nonsaturating", "saddle"])
@pytest.mark.parametrize("div", DIVS)
def test_finite_at_large_outputs(div, g_form):
    """Every divergence's g_f maps all of ℝ into dom f*, so V = ±1e4 is in the domain; float32 (training's)."""
    loss = FGAN(divergence=Divergence(div), g_form=GForm(g_form))
    values = [1e4, -1e4, 0.0, 50.0, -50.0]
    for real_v in values:
        for fake_v in values:
            real = torch.tensor([real_v, 1.0], requires_grad=True)
            fake = torch.tensor([fake_v, -1.0], requires_grad=True)
            d = loss.d_loss(real, fake)
            g = loss.g_loss(fake, real.detach())
            assert torch.isfinite(d) and torch.isfinite(g), (real_v, fake_v, d.item(), g.item())
            gr, gf = torch.autograd.grad(d, (real, fake))
            (gg,) = torch.autograd.grad(g, fake)
            assert torch.isfinite(gr).all() and torch.isfinite(gf).all() and torch.isfinite(gg).all(), (real_v, fake_v)


def test_large_outputs_push_the_right_way():
    """Beyond the linear continuation D still lowers V on fakes (kl, hellinger) and raises V on reals
    (reverse_kl, hellinger): the gradient of d_loss keeps its sign at ±1e4."""
    big = torch.tensor([1e4], requires_grad=True)
    for div in ("kl", "hellinger"):
        (g,) = torch.autograd.grad(FGAN(divergence=Divergence(div)).d_loss(torch.zeros(1), big), big)
        assert g.item() > 0
    small = torch.tensor([-1e4], requires_grad=True)
    for div in ("reverse_kl", "hellinger"):
        (g,) = torch.autograd.grad(FGAN(divergence=Divergence(div)).d_loss(small, torch.zeros(1)), small)
        assert g.item() < 0


# ------------------------------------------------------------------ (d) both generator forms by hand

REAL = [1.5, -0.5, 0.0, 2.0]
FAKE = [-1.0, 0.25, 3.0, -2.5]


def mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.parametrize("div", DIVS)
def test_losses_by_hand(div):
    F_hand = mean([G_F[div](r) for r in REAL]) - mean([F_STAR[div](G_F[div](f)) for f in FAKE])
    nonsat_hand = -mean([G_F[div](f) for f in FAKE])
    for g_form, g_expected in (("nonsaturating", nonsat_hand), ("saddle", F_hand)):
        loss = FGAN(divergence=Divergence(div), g_form=GForm(g_form))
        d = loss.d_loss(t64(REAL), t64(FAKE))
        g = loss.g_loss(t64(FAKE), t64(REAL))
        assert d.dim() == 0 and g.dim() == 0
        assert d.item() == pytest.approx(-F_hand, rel=1e-12, abs=1e-12)
        assert g.item() == pytest.approx(g_expected, rel=1e-12, abs=1e-12)
    # The two forms really differ (the test above would not tell them apart otherwise).
    assert abs(F_hand - nonsat_hand) > 1e-3


def test_generator_gradients_by_hand():
    """d L_G / d V(x̃ᵢ) for KL: nonsaturating -1/B (G raises V); saddle -exp(V-1)/B (G raises f*(g_f(V)))."""
    fake = t64(FAKE).requires_grad_(True)
    (g_ns,) = torch.autograd.grad(FGAN(divergence=Divergence.kl).g_loss(fake, t64(REAL)), fake)
    torch.testing.assert_close(g_ns, torch.full((4,), -0.25, dtype=torch.float64))
    (g_sd,) = torch.autograd.grad(FGAN(divergence=Divergence.kl, g_form=GForm.saddle).g_loss(fake, t64(REAL)), fake)
    torch.testing.assert_close(g_sd, t64([-math.exp(f - 1) / 4 for f in FAKE]), rtol=1e-12, atol=0)


def test_gan_row_is_the_standard_gan():
    """divergence=gan: L_D is the non-saturating GAN's D loss, nonsaturating L_G its G loss, and saddle L_G the
    minimax G loss minus the constant E softplus(-D(x))."""
    real, fake = t64(REAL), t64(FAKE)
    ns, mm = LOSSES["nonsaturating"](), LOSSES["minimax"]()
    loss = FGAN(divergence=Divergence.gan)
    torch.testing.assert_close(loss.d_loss(real, fake), ns.d_loss(real, fake), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(loss.g_loss(fake, real), ns.g_loss(fake, real), rtol=1e-14, atol=1e-14)
    saddle = FGAN(divergence=Divergence.gan, g_form=GForm.saddle)
    const = torch.nn.functional.softplus(-real).mean()
    torch.testing.assert_close(saddle.g_loss(fake, real), mm.g_loss(fake, real) - const, rtol=1e-14, atol=1e-14)


# ------------------------------------------------------------------ (e) recipes compose and run

@pytest.fixture
def no_density(monkeypatch):
    """The 2-D density figure (matplotlib) dominates a 2-step run."""
    import ganbench.run.board as board

    monkeypatch.setattr(board, "log_density", lambda *args, **kwargs: None)


@pytest.mark.parametrize("div", DIVS)
def test_recipe_composes(div):
    cfg = compose([f"objective=fgan_{div}"])
    assert cfg.objective.name == f"fgan_{div}" and cfg.penalty.name == "none" and cfg.optimizer.name == "adam"
    spec = validate(cfg)
    assert type(spec.loss) is FGAN and spec.loss.divergence is Divergence(div)
    assert spec.loss.g_form is GForm.nonsaturating and spec.n_dis == 1 and spec.penalty.name == "none"
    assert spec.opt_g.lr == 2e-4 and list(spec.opt_d.betas) == [0.5, 0.999]
    spec = validate(compose([f"objective=fgan_{div}", "objective.g_form=saddle"]))
    assert spec.loss.g_form is GForm.saddle


@pytest.mark.parametrize("div", DIVS)
def test_recipe_runs(tmp_path, no_density, div):
    run_dir = tmp_path / "run"
    record = run_train(run_dir, POINTS + [f"objective=fgan_{div}", "train.iterations=2", "train.log_every=1",
                                          "train.sample_every=1000", "train.ckpt_every=1000"])
    res = results(run_dir)
    assert record["status"] == res["status"] == "completed", res.get("error")
    assert res["step"] == 2 and res["config"]["objective"]["divergence"] == div


def test_fgan_with_dragan_penalty(tmp_path, no_density):
    """objective=fgan_kl penalty=dragan (DRAGAN paper §3.3: the penalty applies to any objective)."""
    spec = validate(compose(["objective=fgan_kl", "penalty=dragan"]))
    assert type(spec.loss) is FGAN and spec.penalty.name == "dragan" and spec.penalty.lambda_ == 10.0
    run_dir = tmp_path / "run"
    run_train(run_dir, POINTS + ["objective=fgan_kl", "penalty=dragan", "objective.g_form=saddle",
                                 "train.iterations=2", "train.sample_every=1000"])
    assert results(run_dir)["status"] == "completed"


@pytest.mark.parametrize("override,key", [
    ("objective.divergence=chi2", "objective.divergence"),
    ("objective.g_form=minimax", "objective.g_form"),
    ("+objective.alpha=1", "objective.alpha"),
])
def test_bad_fgan_config(override, key):
    with pytest.raises(ConfigError) as info:
        validate(compose(["objective=fgan_kl", override]))
    message = str(info.value)
    assert message.startswith(key + ":") and "\n" not in message, message
