"""The Roth et al. 2017 regulariser (penalty=roth) against hand-computed values on a non-linear D.

D(x) = Σⱼ xⱼ³ + b (a cubic, so ∇ₓD = 3x² differs per sample; b moves σ(D) away from ½ so that the real
weight (1-σ)² and the fake weight σ² differ), with distinct real and fake batches.
"""
import math

import pytest
import torch
from torch import nn

from conftest import POINTS, compose, results, run_train
from ganbench.config import validate
from ganbench.errors import ConfigError
from ganbench.penalties import PENALTIES
from ganbench.penalties.roth import Roth

DTYPE = torch.float64
REAL = [[0.5, -0.3], [1.0, 0.2], [-0.4, 0.8]]
FAKE = [[0.3, 0.9], [0.8, 0.6], [-0.2, 1.0], [1.2, -0.5]]
B = 0.7


class Cubic(nn.Module):
    def __init__(self, b=B):
        super().__init__()
        self.b = nn.Parameter(torch.tensor(b, dtype=DTYPE))

    def forward(self, x):
        return x.pow(3).sum(dim=1) + self.b


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def psi(x, b=B):
    return sum(xi ** 3 for xi in x) + b


def grad_sq(x):
    """‖∇ₓ(Σ x³)‖² = Σ (3xⱼ²)² = 9 Σ xⱼ⁴."""
    return sum((3 * xi ** 2) ** 2 for xi in x)


def mean(values):
    return sum(values) / len(values)


def omega(real_weight, fake_weight, b=B):
    return (mean([real_weight(sigmoid(psi(x, b))) * grad_sq(x) for x in REAL])
            + mean([fake_weight(sigmoid(psi(x, b))) * grad_sq(x) for x in FAKE]))


def omega_by_hand(b=B):
    """Ω = E_P[(1-σ(ψ))²‖∇ψ‖²] + E_Q[σ(ψ)²‖∇ψ‖²]."""
    return omega(lambda s: (1 - s) ** 2, lambda s: s ** 2, b)


def test_registry_and_defaults():
    assert PENALTIES["roth"] is Roth
    pen = Roth()
    assert pen.gamma == 2.0 and pen.every == 1 and pen.gradient_penalty and pen.adds_loss


@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_value_by_hand(gamma):
    D = Cubic()
    value = Roth(gamma=gamma)(D, torch.tensor(REAL, dtype=DTYPE), torch.tensor(FAKE, dtype=DTYPE))
    assert value.dim() == 0
    assert value.item() == pytest.approx(gamma / 2 * omega_by_hand(), rel=1e-12)


def test_swapped_weighting_is_told_apart():
    """The hand value distinguishes (1-σ)² on reals and σ² on fakes from the swapped, the all-(1-σ)² and the
    all-σ² weighting, and from the unweighted R1+R2 sum: each differs from it by far more than the tolerance."""
    value = Roth(gamma=2.0)(Cubic(), torch.tensor(REAL, dtype=DTYPE), torch.tensor(FAKE, dtype=DTYPE)).item()
    right = omega_by_hand()
    wrong = {
        "swapped": omega(lambda s: s ** 2, lambda s: (1 - s) ** 2),
        "both (1-σ)²": omega(lambda s: (1 - s) ** 2, lambda s: (1 - s) ** 2),
        "both σ²": omega(lambda s: s ** 2, lambda s: s ** 2),
        "unweighted": omega(lambda s: 1.0, lambda s: 1.0),
        "1-σ not squared": omega(lambda s: 1 - s, lambda s: s),
    }
    for name, w in wrong.items():
        assert abs(w - right) > 0.2 * right, name
        assert value != pytest.approx(w, rel=1e-3), name
    assert value == pytest.approx(right, rel=1e-12)


def test_gradient_in_d_by_hand():
    """∂Ω/∂b, weights differentiated: σ' = σ(1-σ), so
    ∂Ω/∂b = E_P[-2(1-σ)·σ(1-σ)‖∇ψ‖²] + E_Q[2σ·σ(1-σ)‖∇ψ‖²] (‖∇ψ‖² does not depend on b)."""
    D = Cubic()
    Roth(gamma=2.0)(D, torch.tensor(REAL, dtype=DTYPE), torch.tensor(FAKE, dtype=DTYPE)).backward()
    expected = 0.0
    for x in REAL:
        s = sigmoid(psi(x))
        expected += -2 * (1 - s) * s * (1 - s) * grad_sq(x) / len(REAL)
    for x in FAKE:
        s = sigmoid(psi(x))
        expected += 2 * s * s * (1 - s) * grad_sq(x) / len(FAKE)
    assert D.b.grad.item() == pytest.approx(expected, rel=1e-10)
    # A finite difference agrees (the analytic formula above is not the only check).
    h = 1e-6
    fd = (omega_by_hand(B + h) - omega_by_hand(B - h)) / (2 * h)
    assert D.b.grad.item() == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("b", [60.0, -60.0, 1e4, -1e4])
def test_finite_for_large_outputs(b):
    """Saturated D (|ψ| up to 1e4): value and D's gradient finite, value as by hand (float32, as training)."""
    D = Cubic(b=b).float()
    value = Roth(gamma=2.0)(D, torch.tensor(REAL), torch.tensor(FAKE))
    value.backward()
    assert math.isfinite(value.item()) and math.isfinite(D.b.grad.item())
    # Hand value with 1-σ(ψ) = e^{-ψ}/(1+e^{-ψ}) and σ(ψ) computed without overflow.
    def sig(v):
        return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
    expected = (mean([sig(-psi(x, b)) ** 2 * grad_sq(x) for x in REAL])
                + mean([sig(psi(x, b)) ** 2 * grad_sq(x) for x in FAKE]))
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-30)


def test_penalty_does_not_reach_the_generator():
    g = nn.Parameter(torch.tensor(1.5, dtype=DTYPE))
    fake = torch.tensor(FAKE, dtype=DTYPE) * g
    Roth()(Cubic(), torch.tensor(REAL, dtype=DTYPE), fake).backward()
    assert g.grad is None


def test_per_sample_norms_on_images():
    """4-D inputs: the norm runs over all non-batch dimensions (ψ = Σ x³ over C×H×W)."""

    class CubicImages(nn.Module):
        def forward(self, x):
            return x.pow(3).flatten(1).sum(dim=1)

    gen = torch.Generator().manual_seed(1)
    real = torch.randn(3, 2, 2, 2, generator=gen, dtype=DTYPE) * 0.5
    fake = torch.randn(2, 2, 2, 2, generator=gen, dtype=DTYPE) * 0.5
    value = Roth(gamma=2.0)(CubicImages(), real, fake).item()
    expected = 0.0
    for x in real:
        s = sigmoid(x.pow(3).sum().item())
        expected += (1 - s) ** 2 * (9 * x.pow(4).sum().item()) / 3
    for x in fake:
        s = sigmoid(x.pow(3).sum().item())
        expected += s ** 2 * (9 * x.pow(4).sum().item()) / 2
    assert value == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ config and runs

def test_config_composes():
    spec = validate(compose(["objective=vanilla", "penalty=roth"]))
    assert isinstance(spec.penalty, Roth) and spec.penalty.gamma == 2.0 and spec.penalty.every == 1
    spec = validate(compose(["objective=vanilla", "penalty=roth", "penalty.gamma=0.1", "penalty.every=4"]))
    assert spec.penalty.gamma == 0.1 and spec.penalty.every == 4


@pytest.mark.parametrize("override,key", [
    ("penalty.gamma=-1", "penalty.gamma"),
    ("penalty.every=0", "penalty.every"),
    ("+penalty.anneal=true", "penalty.anneal"),
])
def test_bad_config(override, key):
    with pytest.raises(ConfigError) as info:
        validate(compose(["objective=vanilla", "penalty=roth", override]))
    message = str(info.value)
    assert message.startswith(key + ":") and "\n" not in message, message


@pytest.fixture
def no_density(monkeypatch):
    import ganbench.run.board as board

    monkeypatch.setattr(board, "log_density", lambda *args, **kwargs: None)


@pytest.mark.parametrize("extra", [[], ["penalty.every=2"]], ids=["every1", "every2"])
def test_vanilla_with_roth_runs(tmp_path, no_density, extra):
    run_dir = tmp_path / "run"
    record = run_train(run_dir, POINTS + ["objective=vanilla", "penalty=roth", "train.iterations=2",
                                          "train.sample_every=1000"] + extra)
    res = results(run_dir)
    assert record["status"] == res["status"] == "completed", res.get("error")
    assert res["config"]["penalty"]["name"] == "roth"
