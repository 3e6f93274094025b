"""The GMM-GAN lab: closed forms against autograd, finite differences and quadrature; the dynamics against a
plain-Python scalar re-implementation; the paper's phenomena (discriminator collapse, convergence of the
optimal dynamics); config validation; the CLI end to end on a tiny grid."""
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ganbench.errors import ConfigError
from ganbench.gmm import config as gmm_config
from ganbench.gmm.dynamics import (State, discriminator_step, keep_ordered, step, unrolled_gradient_analytic,
                                   unrolled_gradient_forward, unrolled_gradient_reverse)
from ganbench.gmm import native
from ganbench.gmm.heatmap import choose_backend, classify, grid_starts, off_diagonal, random_discriminators, run_method
from ganbench.gmm.model import (grad_ends, grad_mu, loss, optimal_discriminator, pdf_difference,
                                pdf_difference_slope, pdf_difference_zeros, total_variation)
from ganbench.gmm.simulate import simulate

scipy_integrate = pytest.importorskip("scipy.integrate")

F64 = torch.float64
PAPER_TARGET = torch.tensor([-0.5, 0.5], dtype=F64)
FIG2_TARGET = torch.tensor([-2.0, 2.0], dtype=F64)
FIG2_MU = torch.tensor([-1.0, 2.5], dtype=F64)
FIG2_ENDS = torch.tensor([-1.0, 0.2, 1.0, 2.5], dtype=F64)   # intervals [-1, 0.2] and [1, 2.5]
REPO = Path(__file__).resolve().parents[1]


def random_batch(n, seed=0, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    mu = (torch.rand(2, n, generator=g, dtype=F64) * 2 - 1) * spread
    ends = ((torch.rand(4, n, generator=g, dtype=F64) * 2 - 1) * spread).sort(0).values
    return mu, ends


# ------------------------------------------------------------------ plain-Python reference (math only)
SIGNS = (-1.0, 1.0, -1.0, 1.0)


def phi(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def big_phi(x):
    return 0.5 * math.erfc(-x / math.sqrt(2))


def f_ref(x, mu, target):
    return 0.5 * (phi(x - target[0]) + phi(x - target[1]) - phi(x - mu[0]) - phi(x - mu[1]))


def loss_ref(mu, ends, target):
    mass = lambda a, b, m: 0.5 * sum(big_phi(b - mj) - big_phi(a - mj) for mj in m)  # noqa: E731
    return 1 + sum(mass(ends[2 * i], ends[2 * i + 1], target) - mass(ends[2 * i], ends[2 * i + 1], mu) for i in range(2))


def project_ref(ends, alive):
    """The ordering/collapse rules, restated for one run."""
    l1, r1, l2, r2 = ends
    a1, a2 = alive
    if a1 and a2 and r1 > l2:
        r1 = l2 = (r1 + l2) / 2
    if a1 and r1 <= l1:
        l1 = r1 = (l1 + r1) / 2
        a1 = False
    if a2 and r2 <= l2:
        l2 = r2 = (l2 + r2) / 2
        a2 = False
    if not a1 and r1 > l2:
        l1 = r1 = l2
    if not a2 and l2 < r1:
        l2 = r2 = r1
    return [l1, r1, l2, r2], [a1, a2]


def d_step_ref(mu, ends, alive, target, lr):
    moved = [e + lr * s * f_ref(e, mu, target) * (1.0 if alive[i // 2] else 0.0)
             for i, (e, s) in enumerate(zip(ends, SIGNS))]
    return project_ref(moved, alive)


def grad_mu_ref(mu, ends):
    return [0.5 * sum(s * phi(e - m) for s, e in zip(SIGNS, ends)) for m in mu]


def first_order_ref(mu, ends, target, lr, steps):
    alive = [True, True]
    for _ in range(steps):
        g = grad_mu_ref(mu, ends)
        ends, alive = d_step_ref(mu, ends, alive, target, lr)
        mu = [m - lr * gj for m, gj in zip(mu, g)]
    return mu, ends, alive


def unrolled_ref(mu, ends, target, lr, unroll, steps, h=1e-6):
    """Unrolled dynamics with d/dμ L(μ, D_K(μ)) by central differences of the scalar unroll."""
    alive = [True, True]

    def unrolled_loss(m):
        e, a = list(ends), list(alive)
        for _ in range(unroll):
            e, a = d_step_ref(m, e, a, target, lr)
        return loss_ref(m, e, target)

    for _ in range(steps):
        g = []
        for j in range(2):
            plus, minus = list(mu), list(mu)
            plus[j] += h
            minus[j] -= h
            g.append((unrolled_loss(plus) - unrolled_loss(minus)) / (2 * h))
        ends, alive = d_step_ref(mu, ends, alive, target, lr)
        mu = [m - lr * gj for m, gj in zip(mu, g)]
    return mu, ends, alive


def optimal_ends_ref(mu, target):
    """{F > 0} by a sign scan on a fine grid and bisection: the intervals as a list of (a, b)."""
    lo, hi = min(list(mu) + list(target)) - 10, max(list(mu) + list(target)) + 10
    n = 20000
    xs = [lo + (hi - lo) * k / n for k in range(n + 1)]
    zeros = []
    for a, b in zip(xs, xs[1:]):
        fa, fb = f_ref(a, mu, target), f_ref(b, mu, target)
        if fa * fb < 0:
            for _ in range(60):
                c = 0.5 * (a + b)
                if f_ref(c, mu, target) * fa <= 0:
                    b = c
                else:
                    a, fa = c, f_ref(c, mu, target)
            zeros.append(0.5 * (a + b))
    bounds = [-math.inf] + zeros + [math.inf]
    intervals = []
    for a, b in zip(bounds, bounds[1:]):
        mid = b - 1 if a == -math.inf else (a + 1 if b == math.inf else 0.5 * (a + b))
        if f_ref(mid, mu, target) > 0:
            intervals.append((a, b))
    return intervals


def optimal_ref(mu, target, lr, steps):
    for _ in range(steps):
        intervals = optimal_ends_ref(mu, target)
        g = [0.5 * sum(phi(b - m) - phi(a - m) for a, b in intervals) for m in mu]
        mu = [m - lr * gj for m, gj in zip(mu, g)]
    return mu


# ------------------------------------------------------------------ closed forms
def test_loss_matches_quadrature_and_hand_value():
    # L = 1 + ∫_{ℓ1}^{r1} F + ∫_{ℓ2}^{r2} F, checked by quadrature; and the value for D = ∅ is exactly 1.
    mu, ends = random_batch(5, seed=1)
    for k in range(5):
        m, e = mu[:, k].tolist(), ends[:, k].tolist()
        integral = sum(scipy_integrate.quad(lambda x: f_ref(x, m, PAPER_TARGET.tolist()), e[2 * i], e[2 * i + 1],
                                            epsabs=1e-14)[0] for i in range(2))
        assert float(loss(mu[:, k], ends[:, k], PAPER_TARGET)) == pytest.approx(1 + integral, abs=1e-12)
    empty = torch.tensor([0.3, 0.3, 1.0, 1.0], dtype=F64)
    assert float(loss(FIG2_MU, empty, FIG2_TARGET)) == pytest.approx(1.0, abs=1e-15)


def test_gradients_match_autograd_and_finite_differences():
    mu, ends = random_batch(64, seed=2)
    mu_, ends_ = mu.clone().requires_grad_(True), ends.clone().requires_grad_(True)
    g_mu, g_ends = torch.autograd.grad(loss(mu_, ends_, PAPER_TARGET).sum(), (mu_, ends_))
    assert torch.allclose(grad_mu(mu, ends), g_mu, atol=1e-13)
    assert torch.allclose(grad_ends(mu, ends, PAPER_TARGET), g_ends, atol=1e-13)
    # central differences on a few runs, every coordinate
    h = 1e-6
    for k in range(4):
        m, e = mu[:, k].clone(), ends[:, k].clone()
        for j in range(2):
            d = torch.zeros(2, dtype=F64)
            d[j] = h
            fd = (loss(m + d, e, PAPER_TARGET) - loss(m - d, e, PAPER_TARGET)) / (2 * h)
            assert float(grad_mu(m, e)[j]) == pytest.approx(float(fd), abs=1e-8)
        for i in range(4):
            d = torch.zeros(4, dtype=F64)
            d[i] = h
            fd = (loss(m, e + d, PAPER_TARGET) - loss(m, e - d, PAPER_TARGET)) / (2 * h)
            assert float(grad_ends(m, e, PAPER_TARGET)[i]) == pytest.approx(float(fd), abs=1e-8)
    x = torch.linspace(-4, 4, 9, dtype=F64)
    fd = (pdf_difference(x + h, FIG2_MU, FIG2_TARGET) - pdf_difference(x - h, FIG2_MU, FIG2_TARGET)) / (2 * h)
    assert torch.allclose(pdf_difference_slope(x, FIG2_MU, FIG2_TARGET), fd, atol=1e-9)


def test_gradient_hand_value():
    # μ = (0, 0), one interval [0, ∞): ∂L/∂μⱼ = ½(φ(∞) − φ(0)) = −φ(0)/2 = −0.19947114020071635
    ends = torch.tensor([0.0, math.inf, math.inf, math.inf], dtype=F64)
    assert grad_mu(torch.zeros(2, dtype=F64), ends).tolist() == pytest.approx([-0.19947114020071635] * 2, abs=1e-15)


@pytest.mark.parametrize("target", [PAPER_TARGET, FIG2_TARGET, torch.tensor([-1.0, 1.5], dtype=F64)])
def test_optimal_discriminator_attains_one_plus_tv(target):
    mu, ends = random_batch(40, seed=3, spread=4.0)
    optimal = optimal_discriminator(mu, target)
    best = loss(mu, optimal, target)
    # ordering ℓ₁ ≤ r₁ ≤ ℓ₂ ≤ r₂ (with ±inf) and F = 0 at every finite endpoint
    assert bool((optimal[:-1] <= optimal[1:]).all())
    finite = torch.isfinite(optimal)
    assert pdf_difference(optimal, mu, target)[finite].abs().max() < 1e-13
    for k in range(mu.shape[1]):
        m = mu[:, k].tolist()
        zeros = [z for z in pdf_difference_zeros(mu[:, k], target).tolist() if not math.isnan(z)]
        points = sorted(m + target.tolist() + zeros)
        tv = scipy_integrate.quad(lambda x: 0.5 * abs(f_ref(x, m, target.tolist())), -40, 40, points=points,
                                  limit=400, epsabs=1e-13)[0]
        assert float(best[k]) - 1 == pytest.approx(tv, abs=1e-6)
        assert float(total_variation(mu[:, k], target)) == pytest.approx(tv, abs=1e-6)
    # no discriminator does better than the optimal one
    assert bool((loss(mu, ends, target) <= best + 1e-12).all())


def test_total_variation_known_values():
    # TV(G_(0,0), G_(-.5,.5)) by quadrature: 0.058058865703794...; TV of a distribution with itself: 0.
    assert float(total_variation(torch.zeros(2, dtype=F64), PAPER_TARGET)) == pytest.approx(0.0580588657038, abs=1e-10)
    assert float(total_variation(PAPER_TARGET.flip(0), PAPER_TARGET)) == pytest.approx(0.0, abs=1e-15)


def test_pdf_difference_has_three_zero_crossings_in_figure2():
    # Figure 2's start: F > 0 far left, < 0 around −0.5, > 0 around 1.5, < 0 right of ~2.3: three crossings.
    zeros = pdf_difference_zeros(FIG2_MU, FIG2_TARGET)
    assert not bool(torch.isnan(zeros).any())
    assert bool((pdf_difference(zeros, FIG2_MU, FIG2_TARGET).abs() < 1e-14).all())
    intervals = optimal_ends_ref(FIG2_MU.tolist(), FIG2_TARGET.tolist())
    expected = [intervals[0][0], intervals[0][1], intervals[1][0], intervals[1][1]]
    assert optimal_discriminator(FIG2_MU, FIG2_TARGET).tolist() == pytest.approx(expected, abs=1e-9)


# ------------------------------------------------------------------ dynamics
def test_interval_in_negative_region_collapses_and_stays_collapsed():
    # Figure 2: the left interval [-1, 0.2] lies where F < 0; first-order discriminator steps shrink it to a point.
    assert float(pdf_difference(torch.linspace(-1, 0.2, 50, dtype=F64), FIG2_MU, FIG2_TARGET).max()) < 0
    ends, alive = list(FIG2_ENDS.unbind(0)), [torch.tensor(True), torch.tensor(True)]
    collapsed_at = None
    for t in range(300):
        ends, alive, _ = discriminator_step(FIG2_MU, ends, alive, FIG2_TARGET, 0.3)
        if collapsed_at is None and not bool(alive[0]):
            collapsed_at = t
    assert collapsed_at is not None and bool(alive[1])
    assert float(ends[0]) == float(ends[1])          # zero width, for good
    assert float(ends[2]) < float(ends[3])           # the right interval lives on
    # Once collapsed it never moves again, even where F > 0 (the paper: it can never uncollapse).
    point = float(ends[0])
    positive_mu = torch.tensor([-3.0, 3.0], dtype=F64)   # now F(point) > 0
    assert float(pdf_difference(torch.tensor(point, dtype=F64), positive_mu, FIG2_TARGET)) > 0
    for _ in range(10):
        ends, alive, _ = discriminator_step(positive_mu, ends, alive, FIG2_TARGET, 0.3)
    assert float(ends[0]) == float(ends[1]) == point and not bool(alive[0])


def test_figure2_dynamics_collapse_both_intervals():
    state = State(FIG2_MU, FIG2_ENDS, torch.ones(2, dtype=torch.bool))
    for method in ("first_order", "unrolled"):
        s = state
        for _ in range(400):
            s = step(method, s, FIG2_TARGET, 0.3, unroll=5)
        assert not bool(s.alive.any()), method                     # both intervals collapsed (paper §3.1)
        assert float(total_variation(s.mu, FIG2_TARGET)) > 0.3, method
        assert float(grad_mu(s.mu, s.ends).abs().max()) == 0.0     # and the generator gets no gradient


def test_ordering_is_maintained():
    mu, ends = random_batch(1000, seed=4, spread=2.0)
    alive = torch.ones(2, mu.shape[1], dtype=torch.bool)
    state = State(mu, ends, alive)
    for _ in range(150):
        state = step("first_order", state, PAPER_TARGET, 0.3)
        assert bool((state.ends[:-1] <= state.ends[1:]).all())
    assert 0 < int((~state.alive).sum())  # some collapse happened on the way
    # keep_ordered on hand-made violations: crossing intervals meet at the midpoint; a reversed one collapses
    e, a, _ = keep_ordered([torch.tensor(0.0), torch.tensor(1.2), torch.tensor(1.0), torch.tensor(2.0)],
                           [torch.tensor(True), torch.tensor(True)])
    assert [float(v) for v in e] == pytest.approx([0.0, 1.1, 1.1, 2.0]) and all(bool(v) for v in a)
    e, a, _ = keep_ordered([torch.tensor(0.5), torch.tensor(0.3), torch.tensor(1.0), torch.tensor(2.0)],
                           [torch.tensor(True), torch.tensor(True)])
    assert [float(v) for v in e] == pytest.approx([0.4, 0.4, 1.0, 2.0]) and not bool(a[0]) and bool(a[1])


def test_optimal_dynamics_converge_from_a_separated_start():
    state = State(torch.tensor([-1.0, 1.0], dtype=F64), torch.zeros(4, dtype=F64), torch.ones(2, dtype=torch.bool))
    tv0 = float(total_variation(state.mu, PAPER_TARGET))
    for _ in range(300):
        state = step("optimal", state, PAPER_TARGET, 0.3)
    assert tv0 > 0.14 and float(total_variation(state.mu, PAPER_TARGET)) < 0.05
    assert state.mu.tolist() == pytest.approx([-0.5, 0.5], abs=0.1)


def test_unrolled_gradient_three_ways_and_finite_differences():
    mu, ends = random_batch(500, seed=5, spread=2.0)
    alive = torch.ones(2, mu.shape[1], dtype=torch.bool)
    alive[0, :50] = False                       # some runs start with a collapsed interval
    ends[1, :50] = ends[0, :50]
    for unroll in (1, 5):
        a = unrolled_gradient_analytic(mu, ends, alive, PAPER_TARGET, 0.3, unroll)
        assert torch.allclose(a, unrolled_gradient_reverse(mu, ends, alive, PAPER_TARGET, 0.3, unroll), atol=1e-12)
        assert torch.allclose(a, unrolled_gradient_forward(mu, ends, alive, PAPER_TARGET, 0.3, unroll), atol=1e-12)
    # against central differences of the scalar reference's unrolled loss, on a few runs
    for k in range(60, 64):
        m, e = mu[:, k].tolist(), ends[:, k].tolist()
        ref = unrolled_ref(m, e, PAPER_TARGET.tolist(), 0.3, 5, steps=1)[0]
        got = (mu[:, k] - 0.3 * unrolled_gradient_analytic(mu[:, k:k + 1], ends[:, k:k + 1], alive[:, k:k + 1],
                                                             PAPER_TARGET, 0.3, 5)[:, 0]).tolist()
        assert got == pytest.approx(ref, abs=1e-8)
    # K = 1 through one unprojected step: d/dμ L(μ, D + η∇_D L) = ∂_μL + η (∂∇_D L/∂μ)ᵀ ∇_D L at D₁
    one = unrolled_gradient_analytic(mu, ends, alive, PAPER_TARGET, 0.3, 1)
    assert not torch.allclose(one, grad_mu(mu, ends))


def test_vectorised_grid_point_equals_scalar_reference():
    # One grid point × a few initialisations inside a larger batch, against the plain-Python runs.
    g = torch.Generator().manual_seed(7)
    discs = random_discriminators(6, -3.0, 3.0, g)
    starts = grid_starts(torch.linspace(-1, 1, 5, dtype=F64))            # 25 points
    mu = starts.repeat_interleave(6, 1)
    ends = discs.repeat(1, 25)
    state = State(mu, ends, torch.ones(2, mu.shape[1], dtype=torch.bool))
    point = 7                                                             # (-0.5, 0.5) ... any point
    final, _ = simulate("first_order", state, PAPER_TARGET, 0.3, 300, chunk=64)
    for i in range(6):
        k = point * 6 + i
        ref_mu, ref_ends, ref_alive = first_order_ref(starts[:, point].tolist(), discs[:, i].tolist(),
                                                      PAPER_TARGET.tolist(), 0.3, 300)
        assert final.mu[:, k].tolist() == pytest.approx(ref_mu, abs=1e-9)
        assert final.ends[:, k].tolist() == pytest.approx(ref_ends, abs=1e-9)
        assert final.alive[:, k].tolist() == ref_alive
    final, _ = simulate("unrolled", state, PAPER_TARGET, 0.3, 15, unroll=5)
    for i in range(2):
        k = point * 6 + i
        ref_mu, ref_ends, _ = unrolled_ref(starts[:, point].tolist(), discs[:, i].tolist(), PAPER_TARGET.tolist(),
                                           0.3, 5, steps=15)
        assert final.mu[:, k].tolist() == pytest.approx(ref_mu, abs=1e-7)
        assert final.ends[:, k].tolist() == pytest.approx(ref_ends, abs=1e-9)
    final, _ = simulate("optimal", State(starts, torch.zeros(4, 25, dtype=F64), torch.ones(2, 25, dtype=torch.bool)),
                        PAPER_TARGET, 0.3, 20)
    assert final.mu[:, 3].tolist() == pytest.approx(optimal_ref(starts[:, 3].tolist(), PAPER_TARGET.tolist(), 0.3, 20),
                                                    abs=1e-9)


def test_classify_by_hand():
    spec = gmm_config.GMMConfig()
    mu = torch.tensor([[-0.5, 0.0, -1.0, 2.0], [0.5, 0.0, 1.0, 2.0]], dtype=F64)
    ends = torch.tensor([[-9.0, 0.0, -9.0, 1.0], [-8.0, 0.0, -8.0, 1.0], [1.0, 1.0, 8.0, 1.0], [2.0, 1.0, 9.0, 1.0]],
                        dtype=F64)
    alive = torch.tensor([[True, False, True, False], [True, False, True, False]])
    direction = torch.tensor([[0.1, 0.0, 0.2, 0.0], [0.1, 0.0, 0.2, 0.0]], dtype=F64)
    out = classify(State(mu, ends, alive), direction, PAPER_TARGET, spec, "first_order")
    assert out["success"].tolist() == [True, False, False, False]      # (0, 0): TV 0.058 < 0.1 but collapsed
    assert out["mode_collapse"].tolist() == [False, True, False, True]
    assert out["disc_collapse"].tolist() == [False, True, False, True]
    assert out["vanishing_grad"].tolist() == [False, True, False, True]
    assert off_diagonal(torch.linspace(-1, 1, 3)).tolist() == [False, True, True, True, False, True, True, True, False]


def test_heatmap_method_optimal_broadcasts_and_first_order_fails_sometimes():
    spec = gmm_config.GMMConfig(grid=3, inits=8, iterations=400)
    starts = grid_starts(torch.linspace(-1, 1, 3, dtype=F64))
    discs = random_discriminators(8, -3.0, 3.0, torch.Generator().manual_seed(0))
    opt = run_method("optimal", spec, starts, discs, torch.device("cpu"), F64, "false")
    assert opt.outcomes["success"].shape == (9, 8) and opt.outcomes["disc_collapse"] is None
    mask = off_diagonal(torch.linspace(-1, 1, 3))
    assert bool(opt.outcomes["success"][mask].all()) and not bool(opt.outcomes["success"][~mask].any())


# ------------------------------------------------------------------ config
def _node(**overrides):
    base = OmegaConf.load(REPO / "conf/experiment/gmm_heatmap.yaml").gmm
    return OmegaConf.merge(base, OmegaConf.create(overrides))


def test_presets_document_every_key():
    for name in ("gmm_heatmap", "gmm_trajectory"):
        text = (REPO / f"conf/experiment/{name}.yaml").read_text()
        node = OmegaConf.load(REPO / f"conf/experiment/{name}.yaml")
        assert text.startswith("# @package _global_") and node.task == "gmm"
        assert set(node.gmm.keys()) == set(gmm_config.keys())
        for key in gmm_config.keys():
            line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
            assert "#" in line or key == "init", (name, key)
        gmm_config.validate(node.gmm)


@pytest.mark.parametrize("overrides, message", [
    ({"lr": -1}, "gmm.lr: must be > 0 (got -1.0)"),
    ({"methods": ["first_order", "newton"]}, "gmm.methods: unknown option"),
    ({"init": {"l": [0.0, 1.0], "r": [2.0, 3.0]}}, "gmm.init: the discriminator must satisfy"),
    ({"unroll": 0}, "gmm.unroll: must be >= 1"),
    ({"grid": "many"}, "gmm.grid"),
    ({"nonsense": 1}, "gmm.nonsense"),
    ({"backend": "c"}, "gmm.backend: unknown option; allowed: auto, native, torch (got 'c')"),
])
def test_bad_values_raise_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gmm_config.validate(_node(**overrides))


# ------------------------------------------------------------------ CLI end to end
def _ganbench():
    exe = Path(sys.executable).with_name("ganbench")
    return str(exe) if exe.exists() else shutil.which("ganbench")


@pytest.mark.skipif(_ganbench() is None, reason="the ganbench console script is not installed")
def test_cli_heatmap_tiny_grid(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run([_ganbench(), "experiment=gmm_heatmap", "gmm.grid=3", "gmm.inits=4", "gmm.iterations=50",
                          f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, HYDRA_FULL_ERROR="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["step"] == 50 and results["iterations"] == 50
    assert results["protocol"]["backend"]["optimal"] == "torch"
    assert results["protocol"]["backend"]["unrolled"] == ("native" if native.library() is not None else "torch")
    for method in ("first_order", "unrolled", "optimal"):
        for name in ("success", "mode_collapse", "disc_collapse", "vanishing_grad", "final_tv"):
            metric = results["metrics"][f"{method}_{name}"]
            assert set(metric) == {"final", "final_step", "best", "best_step", "higher_is_better", "reason"}
            assert metric["final_step"] == 50
            assert (metric["final"] is None) == (method == "optimal" and name == "disc_collapse")
        assert (run_dir / f"heatmap_{method}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["metrics"]["optimal_disc_collapse"]["reason"]
    rows = (run_dir / "heatmap.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 9 and rows[0].startswith("mu1_init,mu2_init,first_order_success")
    lines = (run_dir / "metrics.jsonl").read_text().strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["step"] == 50
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "heatmaps.png").exists()


@pytest.mark.skipif(_ganbench() is None, reason="the ganbench console script is not installed")
def test_cli_trajectory_reports_discriminator_collapse(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run([_ganbench(), "experiment=gmm_trajectory", "gmm.iterations=200", "gmm.d_only_steps=300",
                          "gmm.methods=[first_order,optimal]", f"hydra.run.dir={run_dir}"],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ, HYDRA_FULL_ERROR="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    metrics = results["metrics"]
    assert metrics["first_order_collapsed_intervals"]["final"] == 2
    assert metrics["first_order_first_collapse_step"]["final"] < 100
    assert metrics["d_only_collapsed_intervals"]["final"] == 1
    assert metrics["optimal_final_tv"]["final"] < 0.1
    assert "collapsed at step" in (run_dir / "train.log").read_text()
    for name in ("trajectory_first_order.png", "pdf_difference_first_order.png", "discriminator_only.png",
                 "trajectory_optimal.png"):
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG"
    assert list(run_dir.glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_compiled_step_equals_eager():
    mu, ends = random_batch(4096, seed=9, spread=2.0)
    state = State(mu, ends, torch.ones(2, mu.shape[1], dtype=torch.bool))
    # One method: the fused step is the same mechanism for all three, and each cold compile costs minutes on 2 cores.
    for method in ("first_order",):
        eager, _ = simulate(method, state, PAPER_TARGET, 0.3, 30, compiled=False, chunk=1024)
        fused, _ = simulate(method, state, PAPER_TARGET, 0.3, 30, compiled=True, chunk=1024)
        assert torch.allclose(eager.mu, fused.mu, atol=1e-9), method
        assert torch.equal(eager.alive, fused.alive), method


def test_float32_dynamics_agree_with_float64():
    # The heatmap preset runs the dynamics in float32 (outcomes in float64): the optimal discriminator's TV and a
    # few hundred first-order steps must match float64 closely.
    mu, ends = random_batch(200, seed=11, spread=2.0)
    tv32 = total_variation(mu.float(), PAPER_TARGET.float()).double()
    assert torch.allclose(tv32, total_variation(mu, PAPER_TARGET), atol=1e-5)
    state = State(mu, ends, torch.ones(2, mu.shape[1], dtype=torch.bool))
    f64, _ = simulate("first_order", state, PAPER_TARGET, 0.3, 200)
    f32, _ = simulate("first_order", State(mu.float(), ends.float(), state.alive), PAPER_TARGET.float(), 0.3, 200)
    close = (f64.mu - f32.mu.double()).abs().amax(0) < 1e-3
    assert float(close.double().mean()) > 0.97


# ------------------------------------------------------------------ the C loop (native.py)
needs_native = pytest.mark.skipif(native.library() is None, reason=f"C kernel unavailable: {native.unavailable_reason()}")


@needs_native
@pytest.mark.parametrize("method, unroll", [("first_order", 5), ("alternating", 5), ("unrolled", 5), ("unrolled", 2)])
def test_native_loop_equals_tensor_dynamics(method, unroll):
    # Spread 2: starts where intervals cross, collapse (alive changes mid-run) and slide, over 120 steps.
    mu, ends = random_batch(600, seed=3, spread=2.0)
    state = State(mu, ends, torch.ones(2, mu.shape[1], dtype=torch.bool))
    ref, ref_dir = simulate(method, state, PAPER_TARGET, 0.3, 120, unroll)
    out, out_dir = native.simulate(method, state, PAPER_TARGET, 0.3, 120, unroll)
    assert 0 < int((~ref.alive).sum()) < ref.alive.numel()         # the collapse rules were exercised
    assert torch.equal(out.alive, ref.alive)
    assert torch.allclose(out.mu, ref.mu, rtol=0, atol=1e-10)
    assert torch.allclose(out.ends, ref.ends, rtol=0, atol=1e-10)
    assert torch.allclose(out_dir, ref_dir, rtol=0, atol=1e-9)
    f32, _ = native.simulate(method, State(mu.float(), ends.float(), state.alive), PAPER_TARGET.float(), 0.3, 120,
                             unroll)
    assert f32.mu.dtype == torch.float32 and float((f32.mu.double() - ref.mu).abs().median()) < 1e-5


@needs_native
def test_native_fixed_point_removal_and_threads_change_nothing():
    # Runs whose intervals are both collapsed get no gradient and never move: they leave the loop early with
    # direction exactly 0, and the others are bit-for-bit those of a loop that never removes anything.
    mu, ends = random_batch(2500, seed=5, spread=2.0)   # > 2 blocks of 1024: block edges and a short last block
    alive = torch.ones(2, mu.shape[1], dtype=torch.bool)
    alive[:, ::7] = False
    ends[1, ::7] = ends[0, ::7]                          # dead intervals are points
    ends[3, ::7] = ends[2, ::7]
    state = State(mu, ends, alive)
    keep, keep_dir = native.simulate("first_order", state, PAPER_TARGET, 0.3, 200, compact=0)
    drop, drop_dir = native.simulate("first_order", state, PAPER_TARGET, 0.3, 200, compact=1)
    both, both_dir = native.simulate("first_order", state, PAPER_TARGET, 0.3, 200, threads=2, compact=3)
    for a, b in ((keep, drop), (keep, both)):
        assert torch.equal(a.mu, b.mu) and torch.equal(a.ends, b.ends) and torch.equal(a.alive, b.alive)
    assert torch.equal(keep_dir, drop_dir) and torch.equal(keep_dir, both_dir)
    assert torch.equal(drop.mu[:, ::7], mu[:, ::7]) and torch.equal(drop.ends[:, ::7], ends[:, ::7])
    assert bool((drop_dir[:, ::7] == 0).all()) and float(drop_dir.abs().amax()) > 0
    assert torch.equal(state.mu, mu)                     # the input state is not modified in place


def test_backend_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    f32 = torch.tensor([-0.5, 0.5])
    assert choose_backend("auto", "optimal", cpu, torch.float32, "analytic", f32) == "torch"
    assert choose_backend("native", "unrolled", cpu, torch.float32, "reverse", f32) == "torch"
    assert choose_backend("auto", "first_order", cuda, torch.float32, "analytic", f32) == "torch"
    assert choose_backend("torch", "first_order", cpu, torch.float32, "analytic", f32) == "torch"
    expected = "native" if native.library() is not None else "torch"
    assert choose_backend("auto", "unrolled", cpu, torch.float32, "analytic", f32) == expected


def test_backend_native_fails_with_one_line_when_it_cannot_build(monkeypatch):
    monkeypatch.setattr(native, "library", lambda: None)
    monkeypatch.setattr(native, "_failed", "no C compiler (cc, gcc or clang) on PATH")
    f32 = torch.tensor([-0.5, 0.5])
    assert choose_backend("auto", "first_order", torch.device("cpu"), torch.float32, "analytic", f32) == "torch"
    with pytest.raises(ConfigError, match=r"^gmm\.backend: native requested but no C compiler .* allowed: auto"):
        choose_backend("native", "first_order", torch.device("cpu"), torch.float32, "analytic", f32)


# ------------------------------------------------------------------ the C library's cache cannot run planted code
_LOAD = ("import sys; from ganbench.gmm import native; lib = native.library(); "
         "print(lib._name if lib is not None else 'NONE: ' + native.unavailable_reason())")


def _load_in_fresh_process(cache: Path) -> str:
    """native.library() in a new interpreter (dlopen would hand this process its already loaded copy)."""
    env = {**os.environ, "GANBENCH_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", _LOAD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def _planted_library(tmp_path: Path, marker: Path) -> bytes:
    """A valid shared library whose constructor (run by dlopen) creates ``marker``."""
    src = tmp_path / "evil.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {\n'
                   f'    FILE *f = fopen("{marker}", "w"); if (f) fclose(f);\n}}\n'
                   'void gmm_run(void) {}\n')
    subprocess.run([native.compiler(), "-shared", "-fPIC", str(src), "-o", str(tmp_path / "evil.so")], check=True)
    return (tmp_path / "evil.so").read_bytes()


@needs_native
def test_replaced_native_library_is_rebuilt_not_loaded(tmp_path):
    cache = tmp_path / "cache"
    built = Path(_load_in_fresh_process(cache))
    assert built.parent == cache / "native" and (built.parent.stat().st_mode & 0o777) == 0o700
    digest = built.with_name(built.name + ".sha256")
    assert digest.read_text().strip() == hashlib.sha256(built.read_bytes()).hexdigest()
    marker = tmp_path / "MARKER"
    built.write_bytes(_planted_library(tmp_path, marker))   # another valid library under the cached name
    assert _load_in_fresh_process(cache) == str(built)
    assert not marker.exists()                                # its constructor never ran
    assert digest.read_text().strip() == hashlib.sha256(built.read_bytes()).hexdigest()
    assert b"gmm_run" in built.read_bytes() and built.read_bytes() != (tmp_path / "evil.so").read_bytes()


def test_native_cache_folder_writable_by_others_is_recreated(tmp_path, monkeypatch):
    """Files in a folder others could write may be planted: the folder is emptied and made 0700."""
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "native"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    (folder / "gmm_native_0123456789abcdef.so").write_bytes(b"planted")
    assert native.cache_dir() == folder
    assert folder.stat().st_mode & 0o777 == 0o700 and list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the folder to another user")
def test_native_cache_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_failed", None)
    folder = tmp_path / "cache" / "native"
    folder.mkdir(parents=True, mode=0o700)
    (folder / "planted.so").write_bytes(b"planted")
    os.chown(folder, 65534, 65534)
    assert native.library() is None
    reason = native.unavailable_reason()
    assert reason.startswith(f"the C kernel has no safe place: cache folder {folder} is owned by uid 65534")
    assert (folder / "planted.so").exists()    # someone else's files are not deleted
