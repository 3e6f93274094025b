"""Spectral normalisation (Miyato et al. 2018): arch.g.spectral_norm / arch.d.spectral_norm for every family,
the SNGAN networks (arch=sngan, arch=sngan_resnet) and the sngan recipe (objective=sngan)."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from conftest import FAST, POINTS, assert_same_tensors, compose, load_ckpt, run_train
from toy_game import crash_at

from ganbench.archs import build, describe
from ganbench.archs.base import SN_LAYERS
from ganbench.errors import ConfigError

IMAGE = (3, 32, 32)
SMALL = (3, 16, 16)


def _arch(overrides):
    return compose(FAST + list(overrides)).arch


def _sn_layers(net: nn.Module):
    return [m for m in net.modules() if isinstance(m, SN_LAYERS)]


def _matrix(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """W as Miyato et al. reshape it, (out, in·k·k): a transposed convolution's (in, out, k, k) weight
    with its output axis first."""
    if isinstance(module, nn.ConvTranspose2d):
        weight = weight.transpose(0, 1)
    return weight.flatten(1)


FAMILY_CASES = {
    "dcgan": (["arch=dcgan", "arch.width=8"], SMALL),
    "dcgan_k5_mbd": (["arch=dcgan", "arch.width=8", "arch.kernel=5", "arch.minibatch_discrimination=4"], SMALL),
    "mlp": (["arch=mlp", "arch.width=16"], (2,)),
    "mlp_maxout": (["arch=mlp", "arch.width=16", "arch.d_maxout=3"], (2,)),
    "resnet": (["arch=resnet", "arch.dim=8"], SMALL),
    "sngan": (["arch=sngan", "arch.width=4"], SMALL),
    "sngan_resnet": (["arch=sngan_resnet", "arch.dim=8", "arch.g.dim=8"], SMALL),
    "bogonet_seed0": (["arch=bogonet", "arch.seed=0"], SMALL),
    "bogonet_seed3": (["arch=bogonet", "arch.seed=3"], SMALL),
    "bogonet_points": (["arch=bogonet", "arch.seed=1"], (2,)),
}


@pytest.mark.parametrize("case", sorted(FAMILY_CASES))
def test_every_layer_is_divided_by_its_largest_singular_value(case):
    """After enough power iterations (one per forward in train mode) each normalised weight W̄ = W/σ̃ has
    ‖W̄‖₂ = 1 by torch.linalg.matrix_norm(ord=2), i.e. σ̃ = ‖W‖₂, for every convolution and linear layer of
    both sides; and with the key off no layer is normalised."""
    overrides, shape = FAMILY_CASES[case]
    torch.manual_seed(0)
    G, D = build(_arch(overrides + ["arch.g.spectral_norm=true", "arch.d.spectral_norm=true"]), shape, False)
    with torch.no_grad():
        D(G(torch.randn(4, G.z_dim)))  # the normalised weights are the ones the forward uses
    for net in (G, D):
        layers = _sn_layers(net)
        assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
        net.train()
        for m in layers:
            with torch.no_grad():
                for _ in range(1000):  # in train mode every read of .weight (each forward's) is one power iteration
                    m.weight
            W = _matrix(m, m.parametrizations.weight.original.detach())
            sigma = torch.linalg.matrix_norm(W, ord=2)
            m.eval()  # read W̄ = W / σ̃ from the current ũ, ṽ without another iteration
            W_bar = _matrix(m, m.weight.detach())
            assert torch.linalg.matrix_norm(W_bar, ord=2).item() == pytest.approx(1.0, rel=1e-3), (case, m)
            # ... and W̄ is W scaled by 1/σ̃ (the same matrix, not another one)
            torch.testing.assert_close(W_bar * sigma, W, rtol=1e-3, atol=1e-6)
    G0, D0 = build(_arch(overrides), shape, False)
    assert not any(parametrize.is_parametrized(m) for net in (G0, D0) for m in net.modules())


def test_power_iteration_runs_once_per_forward_in_train_mode_only():
    """One power iteration per forward (Miyato et al.'s setting): ũ after one train-mode forward is
    normalize(W ṽ) of the previous ṽ; eval mode leaves ũ, ṽ alone."""
    torch.manual_seed(0)
    _, D = build(_arch(POINTS + ["arch.d.spectral_norm=true"]), (2,), False)
    sn = D.net[0].parametrizations.weight[0]
    W = D.net[0].parametrizations.weight.original.detach()
    u0, v0 = sn._u.clone(), sn._v.clone()
    D.eval()
    D(torch.randn(5, 2))
    assert torch.equal(sn._u, u0) and torch.equal(sn._v, v0)
    D.train()
    D(torch.randn(5, 2))
    u1 = torch.nn.functional.normalize(W @ v0, dim=0, eps=1e-12)
    v1 = torch.nn.functional.normalize(W.T @ u1, dim=0, eps=1e-12)
    torch.testing.assert_close(sn._u, u1, rtol=0, atol=1e-7)
    torch.testing.assert_close(sn._v, v1, rtol=0, atol=1e-7)


def test_auto_norm_resolves_to_none_with_spectral_norm():
    """dcgan's arch.d_norm=auto is batch norm without a penalty, none with SN on D (Miyato et al.'s Ds)."""
    plain = describe(_arch(["arch=dcgan"]), IMAGE, False)
    sn = describe(_arch(["arch=dcgan", "arch.d.spectral_norm=true"]), IMAGE, False)
    assert plain["d"]["norm"] == "batch" and sn["d"]["norm"] == "none" and sn["d"]["spectral_norm"] is True


def test_bogonet_draws_the_same_networks_with_spectral_norm():
    """SN is not a variation of the draw: the drawn sides are the same with it, plus the flag."""
    for seed in range(4):
        a = describe(_arch(["arch=bogonet", f"arch.seed={seed}"]), IMAGE, False)
        b = describe(_arch(["arch=bogonet", f"arch.seed={seed}", "arch.d.spectral_norm=true"]), IMAGE, False)
        assert b["d"].pop("spectral_norm") is True and a["d"].pop("spectral_norm") is False
        assert a == b


def test_sngan_standard_cnn_layers():
    """Miyato et al. Table 3: G z ∈ ℝ¹²⁸ → 4×4×512 → 8×8×256 → 16×16×128 → 32×32×64 → 3 (tanh); D 3×3 / 4×4
    convolutions of 64, 64, 128, 128, 256, 256, 512 channels, LeakyReLU 0.1, dense → 1."""
    G, D = build(_arch(["arch=sngan"]), IMAGE, False)
    assert G.z_dim == 128 and G.input[0].out_features == 4 * 4 * 512
    deconvs = [m for m in G.net if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in deconvs] == [
        (512, 256, (4, 4), (2, 2)), (256, 128, (4, 4), (2, 2)), (128, 64, (4, 4), (2, 2))]
    last = [m for m in G.net if isinstance(m, nn.Conv2d)][-1]
    assert (last.in_channels, last.out_channels, last.kernel_size) == (64, 3, (3, 3))
    z = torch.randn(2, 128)
    x = G(z)
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1
    convs = [m for m in D.net if isinstance(m, nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size[0], m.stride[0]) for m in convs] == [
        (64, 3, 1), (64, 4, 2), (128, 3, 1), (128, 4, 2), (256, 3, 1), (256, 4, 2), (512, 3, 1)]
    assert all(m.negative_slope == 0.1 for m in D.net if isinstance(m, nn.LeakyReLU))
    assert D.net[-1].in_features == 4 * 4 * 512 and D(x).shape == (2,)


def test_sngan_resnet_is_the_wgan_gp_resnet_with_sum_pooling():
    """G 256 filters, D 128 with 4 blocks (the first optimized) and F.sum over the 8×8 positions."""
    from ganbench.archs import resnet

    G, D = build(_arch(["arch=sngan_resnet"]), IMAGE, False)
    assert G.dim == 256 and G.z_dim == 128
    assert [type(b).__name__ for b in D.blocks] == ["OptimizedBlock"] + ["ResidualBlock"] * 3
    assert D.blocks[1].resample == "down" and D.blocks[2].resample is None
    x = torch.randn(3, *IMAGE)
    h = D.relu(D.blocks(x))
    torch.testing.assert_close(D(x), D.output(h.sum((2, 3))).flatten())
    assert resnet.DConfig().pool == "mean"  # the WGAN-GP critic keeps its mean
    with pytest.raises(ConfigError, match="pool: unknown option 'max'; allowed: mean, sum"):
        build(_arch(["arch=sngan_resnet", "arch.d.pool=max"]), IMAGE, False)


def test_sngan_recipe():
    """objective=sngan: hinge loss, no penalty, n_dis 5, Adam 2e-4 β=(0, 0.9), SN on D and not on G."""
    cfg = compose(FAST + ["objective=sngan", "arch=sngan"])
    assert cfg.objective.loss == "hinge" and cfg.objective.n_dis == 5 and cfg.penalty.name == "none"
    assert cfg.optimizer.name == "adam" and cfg.optimizer.d.lr == 2e-4 and list(cfg.optimizer.d.betas) == [0.0, 0.9]
    assert cfg.arch.d.spectral_norm is True and cfg.arch.g.spectral_norm is False
    # on any D, the toy MLP included; and it can be turned off
    assert compose(FAST + POINTS + ["objective=sngan"]).arch.d.spectral_norm is True
    assert compose(FAST + ["objective=sngan", "arch.d.spectral_norm=false"]).arch.d.spectral_norm is False
    assert compose(FAST + POINTS + ["arm=sngan"]).objective.name == "sngan"


def test_power_iteration_vectors_are_in_the_checkpoint_and_resume_exactly(tmp_path, monkeypatch):
    """ũ, ṽ are buffers of D's state_dict: a run killed after its checkpoint at step 4 and resumed ends
    bit-identical to the straight run (parameters, ũ, ṽ, optimizer, RNG)."""
    over = POINTS + ["objective=sngan", "arch.g.spectral_norm=true", "train.iterations=8", "train.ckpt_every=4",
                     "train.log_every=4"]
    run_train(tmp_path / "straight", over)
    with monkeypatch.context() as m:
        crash_at(m, 6)
        with pytest.raises(RuntimeError, match="killed"):
            run_train(tmp_path / "split", over)
    assert load_ckpt(tmp_path / "split")["step"] == 4
    run_train(tmp_path / "split", over)
    a, b = load_ckpt(tmp_path / "straight"), load_ckpt(tmp_path / "split")
    for side in ("G", "D"):
        assert sum(k.endswith(("._u", "._v")) for k in a[side]) == 6, side  # 3 layers × (ũ, ṽ)
    for key in ("G", "D", "opt_G", "opt_D", "rng", "step", "d_step"):
        assert_same_tensors(a[key], b[key], key)


def test_resume_without_the_vectors_is_not_exact(tmp_path, monkeypatch):
    """The control of the resume test: a resume whose ũ, ṽ restart from the step-4 checkpoint's weights
    but fresh vectors differs, so the test above sees the vectors."""
    over = POINTS + ["objective=sngan", "train.iterations=8", "train.ckpt_every=4", "train.log_every=4"]
    run_train(tmp_path / "straight", over)
    with monkeypatch.context() as m:
        crash_at(m, 6)
        with pytest.raises(RuntimeError, match="killed"):
            run_train(tmp_path / "split", over)
    path = tmp_path / "split" / "checkpoints" / "last.pt"
    ck = torch.load(path, weights_only=True)
    for k in ck["D"]:
        if k.endswith(("._u", "._v")):
            ck["D"][k] = torch.nn.functional.normalize(torch.ones_like(ck["D"][k]), dim=0)
    torch.save(ck, path)
    run_train(tmp_path / "split", over)
    a, b = load_ckpt(tmp_path / "straight"), load_ckpt(tmp_path / "split")
    assert not all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])


def _has_compiler() -> bool:
    import shutil

    return shutil.which("g++") is not None or shutil.which("c++") is not None


@pytest.mark.skipif(not _has_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_sngan_step_equals_eager(tmp_path):
    """train.compile with SN on D (and G): from one state, the compiled D step's loss, parameter gradients
    and power-iteration updates of ũ, ṽ equal eager's; a second call continues from the updated vectors.
    (The SN case of tests/test_compile.py's equivalence test, kept here with the other SN tests.)"""
    import copy

    from ganbench.run.start import prepare

    game = prepare(compose(FAST + POINTS + ["objective=sngan", "arch.g.spectral_norm=true"]), tmp_path / "run").game
    start = copy.deepcopy(game.D.state_dict())
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    results = []
    for compile_now in (False, True):
        game.D.load_state_dict(start)
        if compile_now:
            game.compile_steps()
        steps = []
        for _ in range(2):
            d_loss, pen, _, _ = game.d_objective(real, fake, True)
            grads = torch.autograd.grad(d_loss, list(game.D.parameters()), allow_unused=True)
            vectors = {k: v.clone() for k, v in game.D.state_dict().items() if k.endswith(("._u", "._v"))}
            steps.append((d_loss.detach(), grads, vectors))
        results.append(steps)
    for (a, ga, ua), (b, gb, ub) in zip(*results):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-7)
        for x, y in zip(ga, gb):
            if x is not None:
                # the gradient through σ̃ = ũᵀWṽ rounds differently once fused (measured ~1e-6 relative)
                assert torch.allclose(x, y, rtol=1e-4, atol=1e-5 * x.abs().max().item())
        assert ua.keys() == ub.keys() and len(ua) == 6
        for k in ua:
            torch.testing.assert_close(ua[k], ub[k], rtol=1e-6, atol=1e-7)
    # the vectors moved between the two calls (one power iteration per forward)
    assert not all(torch.equal(results[1][0][2][k], results[1][1][2][k]) for k in results[1][0][2])


def test_a_mirror_of_a_normalised_d_is_fresh_and_leaves_d_intact():
    """EBGAN's / MD-GAN's encoder mirrors D: with SN its layers are re-initialised (W and ũ, ṽ) and normalised,
    and D keeps working (removing the copy's parametrization would delete the property from the class the
    copy shares with D's layer: 'ParametrizedLinear' object has no attribute 'weight')."""
    from ganbench.archs.base import mirror_of_discriminator

    torch.manual_seed(0)
    _, D = build(_arch(POINTS + ["arch.d.spectral_norm=true"]), (2,), False)
    before = {k: v.clone() for k, v in D.state_dict().items()}
    body, head, _ = mirror_of_discriminator(D, 4, "mdgan")
    assert_same_tensors(D.state_dict(), before)  # D untouched
    for k, v in body.state_dict().items():
        assert not torch.equal(v, before["net." + k]), k
    x = torch.randn(5, 2)
    assert D(x).shape == (5,) and head(body(x)).shape == (5, 4)
    assert all(parametrize.is_parametrized(m, "weight") for m in _sn_layers(body) + [head])


@pytest.mark.slow
@pytest.mark.skipif(not _has_compiler(), reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_sn_training_follows_eager_for_20_steps(tmp_path):
    """20 generator steps of the ring8 MLP with SN on D, compiled against eager, from one seed: D's weights and
    power-iteration vectors stay within 1e-4 (measured 2.3e-5; without SN the two are identical): rounding,
    not a different computation."""
    from ganbench.run.start import prepare

    def state(extra):
        torch.manual_seed(0)
        start = prepare(compose(FAST + POINTS + ["objective=vanilla", "arch.d.spectral_norm=true"] + extra),
                        tmp_path / ("c" if extra else "e"))
        for _ in range(20):
            start.game.step()
        D = start.game.D
        return torch.cat([t.detach().flatten() for t in list(D.parameters()) + list(D.buffers())])

    eager, compiled = state([]), state(["train.compile=true"])
    assert (eager - compiled).abs().max() < 1e-4
