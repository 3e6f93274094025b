"""Targeted tests from a deliberate-bug study: each one checks a property against hand-computed values and
fails when the named realistic bug is made (every test was checked against its mutation)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import POINTS, compose, run_train

SIGMA = 0.05


# ------------------------------------------------------------------ 1. hq_pct: Euclidean 3σ, not per coordinate

def test_hq_is_euclidean_three_sigma():
    """Bug: a sample counted high-quality when |dx| ≤ 3σ and |dy| ≤ 3σ (a square) instead of ‖d‖ ≤ 3σ (a disc).

    Around the grid25 centre (2, -4), σ = 0.05: (2.5σ, 2.5σ) is at ‖d‖ = 2.5√2 σ = 3.54σ (not HQ, although both
    coordinates are within 3σ); (2.9σ, 0) and (0, -2.9σ) are HQ; (2.2σ, 2.0σ) is at 2.97σ (HQ).
    3 of 4 points HQ -> hq_pct 75, all of them nearest to one centre -> modes 1, reverse KL = log 25.
    """
    from ganbench.data.toy import grid_centers
    from ganbench.metrics.toy import mode_metrics

    centers = grid_centers(5, 2.0)
    c = torch.tensor([2.0, -4.0])
    offsets = torch.tensor([[2.5, 2.5], [2.9, 0.0], [0.0, -2.9], [2.2, 2.0]], dtype=torch.float64) * SIGMA
    assert math.hypot(2.5, 2.5) == pytest.approx(3.5355, abs=1e-4) and math.hypot(2.2, 2.0) < 3.0
    m = mode_metrics(c + offsets, centers, SIGMA)
    assert m["hq_pct"] == pytest.approx(75.0)
    assert m["modes"] == 1.0
    assert m["reverse_kl"] == pytest.approx(math.log(25))
    # The square-corner point alone: no high-quality sample at all.
    alone = mode_metrics((c + offsets[:1]).float(), centers, SIGMA)
    assert alone["hq_pct"] == 0.0 and alone["modes"] == 0.0 and alone["reverse_kl"] is None


# ------------------------------------------------------------------ 2. checkpoints are written atomically

def test_failed_checkpoint_save_leaves_old_file(tmp_path, monkeypatch):
    """Bug: the checkpoint written in place (open(path, "wb")): a save that dies mid-write leaves a torn last.pt.

    torch.save is made to write 100 bytes of garbage to its file object and then raise; last.pt must still be
    the old file, byte for byte, and load (weights_only=True) to the old state.
    """
    from ganbench.run import checkpoint

    path = tmp_path / "checkpoints" / "last.pt"
    old = {"step": 3, "G": {"w": torch.arange(6.0)}, "d_step": 3}
    checkpoint.save(old, path)
    before = path.read_bytes()

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"\x80garbage" * 12 + b"tear")  # 100 bytes, then the "disk full"
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save({"step": 4, "G": {"w": torch.zeros(6)}, "d_step": 4}, path)
    monkeypatch.undo()

    assert path.read_bytes() == before
    state = checkpoint.load(path)
    assert state["step"] == 3 and torch.equal(state["G"]["w"], torch.arange(6.0))


# ------------------------------------------------------------------ 3. a fresh fake and real batch per critic step

def test_every_critic_step_sees_fresh_batches(tmp_path, monkeypatch):
    """Bug: one fake batch (or one real batch) drawn per generator step and reused for all n_dis critic steps.

    n_dis = 3, 2 generator steps, batch 16: D must see 6 critic-step inputs of 16 real + 16 fake rows (in that
    order, concatenated or in two calls). Every real row is a fresh continuous draw, so no real row may repeat;
    G does not change during the critic steps, so a reused noise batch gives an identical fake block.
    """
    import ganbench.run.board as board
    import ganbench.run.start as train_mod

    monkeypatch.setattr(board, "log_density", lambda *args, **kwargs: None)
    seen = []
    build = train_mod.build_arch

    def build_and_watch(*args, **kwargs):
        G, D = build(*args, **kwargs)

        def record(module, inputs):
            # Critic phase only: in the generator step the loop freezes D's parameters.
            if all(p.requires_grad for p in module.parameters()):
                seen.append(inputs[0].detach().clone())

        D.register_forward_pre_hook(record)
        return G, D

    monkeypatch.setattr(train_mod, "build_arch", build_and_watch)
    n_dis, iters, B = 3, 2, 16
    run_train(tmp_path / "run", POINTS + ["objective=vanilla", f"objective.n_dis={n_dis}", "penalty=none",
                                          f"train.iterations={iters}", f"train.batch_size={B}", "train.log_every=1000",
                                          "train.sample_every=1000", "train.ckpt_every=1000"])
    rows = torch.cat(seen)
    assert rows.shape == (n_dis * iters * 2 * B, 2), [tuple(s.shape) for s in seen]
    blocks = rows.view(n_dis * iters, 2, B, 2)
    real, fake = blocks[:, 0], blocks[:, 1]
    assert len(torch.unique(real.reshape(-1, 2), dim=0)) == n_dis * iters * B, "a real batch was reused"
    for i in range(n_dis * iters):
        for j in range(i):
            assert not torch.equal(fake[i], fake[j]), f"critic steps {j} and {i} saw the same fake batch"
            assert not torch.equal(real[i], fake[j]) and not torch.equal(fake[i], real[j])


# ------------------------------------------------------------------ 4. R1 on real data, R2 on generated data

class Cubic(nn.Module):
    """D(x) = Σⱼ xⱼ³ per sample: ∇ₓD = 3x², ‖∇D(x)‖² = 9 Σⱼ xⱼ⁴ (depends on x, unlike a linear D)."""

    def forward(self, x):
        return x.flatten(1).pow(3).sum(1)


REAL = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
FAKE = torch.tensor([[0.5, 0.5], [-1.0, 1.0]], dtype=torch.float64)
# γ = 2, so γ/2·E‖∇D‖² = E‖∇D‖²:  real: (9·1 + 9·16)/2 = 76.5;  fake: (9·0.125 + 9·2)/2 = 9.5625.
R1_EXPECTED = {"real": 76.5, "fake": 9.5625}


@pytest.mark.parametrize("on", ["real", "fake"])
def test_r1_r2_on_the_right_batch(on):
    """Bug: R1 and R2 swapped (on: real penalising the fake batch). A non-linear D tells the batches apart."""
    from ganbench.penalties import PENALTIES
    from ganbench.penalties.r1 import On

    value = PENALTIES["r1"](gamma=2.0, on=On(on))(Cubic(), REAL, FAKE)
    assert value.item() == pytest.approx(R1_EXPECTED[on], rel=1e-12)


@pytest.mark.parametrize("on", ["real", "fake"])
def test_r1_r2_from_config(on):
    """The same through conf/penalty/r1.yaml and validate(): penalty.on=real is R1, penalty.on=fake is R2."""
    from ganbench.config import validate

    spec = validate(compose(["objective=vanilla", "penalty=r1", f"penalty.on={on}", "penalty.gamma=2"]))
    assert spec.penalty(Cubic(), REAL, FAKE).item() == pytest.approx(R1_EXPECTED[on], rel=1e-12)


# ------------------------------------------------------------------ DCGAN helpers

def dcgan_node(**overrides):
    from omegaconf import OmegaConf

    base = {"name": "dcgan", "width": 8, "z_dim": 16}
    base.update(overrides)
    return OmegaConf.create(base)


NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


# ------------------------------------------------------------------ 5. no norm layer on D's first layer

@pytest.mark.parametrize("gradient_penalty", [False, True])
@pytest.mark.parametrize("d_norm", ["auto", "batch", "layer", "none"])
def test_dcgan_d_first_layer_has_no_norm(d_norm, gradient_penalty):
    """Bug: a norm layer after D's first convolution. Radford et al.: no normalisation on D's input layer,
    whichever norm the other layers use. D for 32×32: conv(3→w) LReLU, conv(w→2w) norm LReLU, conv(2w→4w) norm
    LReLU, conv(4w→1): a norm after the 2nd and 3rd convolutions only (for batch/layer, and auto without GP)."""
    from ganbench.archs import build

    _, D = build(dcgan_node(d_norm=d_norm), (3, 32, 32), gradient_penalty)
    mods = list(D.net)
    convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    assert isinstance(mods[convs[0] + 1], nn.LeakyReLU), mods[convs[0] + 1]
    assert mods[convs[0]].bias is not None  # no norm follows, so the conv keeps its bias
    norms = [i for i, m in enumerate(mods) if isinstance(m, NORM_TYPES)]
    effective = ("none" if gradient_penalty else "batch") if d_norm == "auto" else d_norm
    assert norms == ([] if effective == "none" else [convs[1] + 1, convs[2] + 1])


# ------------------------------------------------------------------ 6. DCGAN initialisation

def test_dcgan_init_std():
    """Bug: init std other than 0.02 (0.01, 0.05), or PyTorch's default init (std = 1/√(3·fan_in), e.g. 0.0128
    for fan_in 2048). Conv weights ~ N(0, 0.02): over the 524,288 weights of G's 256→128 layer the sample std
    has standard error 0.02/√(2n) = 2e-5, so a tolerance of 1e-3 is 50 s.e. and still far from 0.01/0.05.
    Norm scales ~ N(1, 0.02) over G's and D's 832 batch-norm scales (s.e. of the std 5e-4): tolerance 3e-3.
    Every bias is 0."""
    from ganbench.archs import build

    torch.manual_seed(0)
    G, D = build(dcgan_node(width=64, z_dim=100, d_norm="batch"), (3, 32, 32), False)
    convs = [m for net in (G, D) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    big = max(convs, key=lambda m: m.weight.numel())
    assert big.weight.numel() >= 500_000
    assert big.weight.std().item() == pytest.approx(0.02, abs=1e-3)
    assert abs(big.weight.mean().item()) < 1e-3
    for m in convs:  # every layer, not just the big one (small layers: looser)
        assert m.weight.std().item() == pytest.approx(0.02, abs=4e-3), m
        if m.bias is not None:
            assert torch.all(m.bias == 0), m
    bns = [m for net in (G, D) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    scales = torch.cat([m.weight.detach() for m in bns])
    assert len(scales) == 832
    assert scales.mean().item() == pytest.approx(1.0, abs=3e-3)
    assert scales.std().item() == pytest.approx(0.02, abs=3e-3)
    assert all(torch.all(m.bias == 0) for m in bns)


# ------------------------------------------------------------------ 7. G's tanh output

@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_image_generator_tanh_output(arch):
    """Bug: G's final tanh dropped. Image G outputs lie in [-1, 1]: with the last layer's weights ×10⁵ and a
    large z, the last linear/conv layer's output (the pre-activation) reaches far beyond ±1, while G's output
    is exactly tanh of it, saturating at ±1."""
    from omegaconf import OmegaConf

    from ganbench.archs import build

    node = dcgan_node() if arch == "dcgan" else OmegaConf.create({"name": "mlp", "depth": 2, "width": 16, "z_dim": 8})
    torch.manual_seed(1)
    G, _ = build(node, (1, 8, 8), False)
    G.eval()
    last = [m for m in G.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))][-1]
    captured = {}
    last.register_forward_hook(lambda m, i, o: captured.update(pre=o.detach().clone()))
    with torch.no_grad():
        last.weight.mul_(1e5)
        out = G(10.0 * torch.randn(4, G.z_dim))
    pre = captured["pre"].reshape(out.shape)
    assert pre.abs().max().item() > 10.0
    assert out.abs().max().item() <= 1.0
    assert out.abs().max().item() > 0.999
    torch.testing.assert_close(out, torch.tanh(pre))


# ------------------------------------------------------------------ 8. LeakyReLU slope 0.2 in D

def _check_leaky(D, expected_count):
    leaky = [m for m in D.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == expected_count
    for m in leaky:
        assert m.negative_slope == 0.2
        # And as a function: f(-1) = -0.2, f(3) = 3 (inplace modules: give each its own tensor).
        torch.testing.assert_close(m(torch.tensor([-1.0, 3.0])), torch.tensor([-0.2, 3.0]))
    assert not any(isinstance(m, nn.ReLU) for m in D.modules())


def test_dcgan_d_leaky_relu_slope():
    """Bug: D's LeakyReLU slope other than 0.2 (REFERENCE.md, Radford et al.: LeakyReLU(0.2)). The default arch
    config (conf/arch/dcgan.yaml) must give D one LeakyReLU(0.2) per stride-2 convolution (3 for 32×32)."""
    from ganbench.archs import build

    cfg = compose(["arch=dcgan", "arch.width=8"])
    _, D = build(cfg.arch, (3, 32, 32), False)
    _check_leaky(D, 3)


def test_mlp_d_leaky_relu_slope():
    """MLP: REFERENCE.md's hard variant (4) has a LeakyReLU MLP D without naming the slope; the MLP's
    activation=leaky_relu uses the repository's one LeakyReLU definition, slope 0.2 (the default MLP activation
    is relu, conf/arch/mlp.yaml). Bug: another slope for the MLP's leaky_relu."""
    from omegaconf import OmegaConf

    from ganbench.archs import build

    node = OmegaConf.create({"name": "mlp", "depth": 4, "width": 8, "z_dim": 2, "activation": "leaky_relu"})
    _, D = build(node, (2,), False)
    _check_leaky(D, 4)
    _, D = build(compose(["dataset=ring8", "arch=mlp"]).arch, (2,), False)
    assert [type(m) for m in D.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))] == [nn.ReLU] * 3


# ------------------------------------------------------------------ 10. GMM discriminator endpoints sorted

def _loss_by_quadrature(mu, ends, target):
    """1 + ∫_{[ℓ₁,r₁] ∪ [ℓ₂,r₂]} F dx with D as a SET: empty intervals (r < ℓ) dropped, overlapping ones merged,
    then the trapezoid rule on 20,001 points per piece (error ~1e-10 for these smooth F)."""
    from ganbench.gmm.model import pdf_difference

    pieces = sorted((l, r) for l, r in ((ends[0].item(), ends[1].item()), (ends[2].item(), ends[3].item())) if l <= r)
    merged = []
    for l, r in pieces:
        if merged and l <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], r))
        else:
            merged.append((l, r))
    total = 0.0
    for l, r in merged:
        x = torch.linspace(l, r, 20_001, dtype=torch.float64)
        total += torch.trapezoid(pdf_difference(x, mu, target), x).item()
    return 1.0 + total


def test_gmm_random_discriminators_are_sorted():
    """Bug: the heatmap's random discriminators left unsorted (four i.i.d. uniforms used as ℓ₁, r₁, ℓ₂, r₂ in
    draw order). The loss 1 + Σᵢ∫_{ℓᵢ}^{rᵢ} F then counts an interval with rᵢ < ℓᵢ negatively and is no longer
    1 + ∫_D F over the union of the intervals. The ends must be the same draws, sorted ascending per run, and
    the closed-form loss must equal the quadrature over the set."""
    from ganbench.gmm.heatmap import random_discriminators
    from ganbench.gmm.model import loss

    count, low, high = 6, -3.0, 3.0
    ends = random_discriminators(count, low, high, torch.Generator().manual_seed(5))
    draws = low + (high - low) * torch.rand(4, count, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert ends.shape == (4, count)
    for k in range(count):
        assert ends[:, k].tolist() == sorted(draws[:, k].tolist())
    mu, target = torch.tensor([-0.7, 1.2], dtype=torch.float64), torch.tensor([-0.5, 0.5], dtype=torch.float64)
    for k in range(count):
        closed = loss(mu.reshape(2, 1), ends[:, k:k + 1], target).item()
        assert closed == pytest.approx(_loss_by_quadrature(mu, ends[:, k], target), abs=1e-8)


def test_gmm_keep_ordered_projection():
    """Bug: a gradient step's endpoints left unsorted (no projection onto ℓ₁ ≤ r₁ ≤ ℓ₂ ≤ r₂).

    Crossing: (ℓ₁, r₁, ℓ₂, r₂) = (-1, 1.0, 0.6, 2) -> r₁ = ℓ₂ = 0.8 (the midpoint of the crossing, the Euclidean
    projection onto r₁ ≤ ℓ₂), both intervals alive.
    Collapse: (0.5, 0.3, 1, 2) -> ℓ₁ = r₁ = 0.4, interval 1 dead for good; interval 2 untouched.
    """
    from ganbench.gmm.dynamics import keep_ordered

    def run(values, alive=(True, True)):
        ends = [torch.tensor([v], dtype=torch.float64) for v in values]
        flags = [torch.tensor([a]) for a in alive]
        e, a, _ = keep_ordered(ends, flags)
        return [x.item() for x in e], [bool(x) for x in a]

    ends, alive = run([-1.0, 1.0, 0.6, 2.0])
    assert ends == pytest.approx([-1.0, 0.8, 0.8, 2.0]) and alive == [True, True]
    ends, alive = run([0.5, 0.3, 1.0, 2.0])
    assert ends == pytest.approx([0.4, 0.4, 1.0, 2.0]) and alive == [False, True]


# ------------------------------------------------------------------ 11. grid25 std 0.05

def test_grid25_std_is_0_05():
    """Bug: grid25's default std other than 0.05 (REFERENCE.md: centres {-4,-2,0,2,4}², std 0.05). Checked in the
    code default (an empty dataset node), in conf/dataset/grid25.yaml, and empirically: 40,000 samples around
    their nearest centre have per-coordinate std 0.05 (s.e. 0.05/√(2·80,000) ≈ 1.3e-4; tolerance 1.5e-3)."""
    from omegaconf import OmegaConf

    from ganbench.data.toy import build_grid25, options_grid25

    assert options_grid25(OmegaConf.create({})) == {"spacing": 2.0, "std": 0.05}
    yaml = compose(["dataset=grid25"]).dataset
    assert yaml.std == 0.05 and yaml.spacing == 2.0
    data = build_grid25(yaml, torch.device("cpu"))
    assert data.std == 0.05
    axis = [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert sorted(map(tuple, data.centers.tolist())) == [(a, b) for a in axis for b in axis]
    x = data.sample_eval(40_000, torch.Generator().manual_seed(0)).double()
    nearest = torch.cdist(x, data.centers.double()).argmin(1)
    d = x - data.centers.double()[nearest]
    assert d.mean(0).abs().max().item() < 1e-3
    assert d.std(0).tolist() == pytest.approx([0.05, 0.05], abs=1.5e-3)
