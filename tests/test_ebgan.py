"""objective=ebgan: the pull-away term, the autoencoder's energy and the losses by hand; the autoencoder
mirrors the arch's D; runs on points and images; exact resume; bad input."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import POINTS, assert_same_tensors, compose, ganbench_run, load_ckpt, results, run_train
from toy_game import assert_resumes_exactly
from ganbench.archs import dcgan, mlp
from ganbench.archs.autoencoder import AutoencoderD
from ganbench.config import validate
from ganbench.errors import ConfigError
from ganbench.objectives.ebgan import EnergyBased, pull_away


# ------------------------------------------------------------------ the pull-away term

def test_pull_away_orthogonal_codes_is_zero():
    # Orthogonal rows of different lengths: every cosine is 0 (the term ignores the norms).
    S = torch.diag(torch.tensor([1.0, 3.0, 0.5, 2.0]))
    assert pull_away(S).item() == 0.0


def test_pull_away_parallel_codes_is_one():
    # Rows ±c·v: every cosine is ±1, its square 1; the mean over the N(N-1) pairs is 1.
    v = torch.tensor([1.0, -2.0, 0.5])
    S = torch.stack([2 * v, -v, 0.1 * v, 5 * v])
    assert pull_away(S).item() == pytest.approx(1.0, abs=1e-6)


def test_pull_away_mixed_by_hand():
    # S = [(1,0), (1,1), (0,2)]: cos² = ½ (rows 1,2), 0 (1,3), ½ (2,3); Σ_{i≠j} counts each pair twice: 2;
    # 1/(N(N-1)) = 1/6 → 1/3. (Including the diagonal: 5/6; cosines not squared: 0.471; ÷N²: 2/9.)
    S = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    assert pull_away(S).item() == pytest.approx(1 / 3, rel=1e-6)


def test_pull_away_flattens_codes_and_handles_tiny_batches():
    S = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    assert pull_away(S.view(3, 2, 1, 1)).item() == pytest.approx(1 / 3, rel=1e-6)  # conv codes (B, code, 1, 1)
    assert pull_away(S[:1]).item() == 0.0  # one sample: no pairs
    # a zero code has cosine 0 with the others (no NaN)
    assert pull_away(torch.tensor([[0.0, 0.0], [1.0, 0.0]])).item() == 0.0


# ------------------------------------------------------------------ the autoencoder's energy

def tiny_autoencoder() -> AutoencoderD:
    """Enc: Linear(2,2)=I, ReLU, Linear(2,1)=[1,1] → c = relu(x₁)+relu(x₂); Dec: Linear(1,2)=[1,2]ᵀ, ReLU,
    Linear(2,2)=diag(1, ½) + (0, 1) → Dec(c) = (c, c+1) for c ≥ 0."""
    D = mlp.Discriminator(mlp.MLPConfig(depth=1, width=2), (2,))
    ae = AutoencoderD.from_discriminator(D, code_dim=1, image=False)
    kinds = [type(m) for m in ae.encoder] + [type(m) for m in ae.decoder]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.Linear, nn.ReLU, nn.Linear]
    e1, _, e2 = ae.encoder
    d1, _, d2 = ae.decoder
    with torch.no_grad():
        e1.weight.copy_(torch.eye(2)), e1.bias.zero_()
        e2.weight.copy_(torch.tensor([[1.0, 1.0]])), e2.bias.zero_()
        d1.weight.copy_(torch.tensor([[1.0], [2.0]])), d1.bias.zero_()
        d2.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.5]])), d2.bias.copy_(torch.tensor([0.0, 1.0]))
    return ae


def test_energy_by_hand():
    # x = (1, 2): c = 3, Dec = (3, 4), error (2, 2) → mean of squares 4 (the sum would be 8).
    # x = (-1, 3): c = 3, Dec = (3, 4), error (4, 1) → (16 + 1)/2 = 8.5.
    ae = tiny_autoencoder()
    x = torch.tensor([[1.0, 2.0], [-1.0, 3.0]])
    assert ae.encode(x).tolist() == [[3.0], [3.0]]
    assert ae.reconstruct(x).tolist() == [[3.0, 4.0], [3.0, 4.0]]
    assert torch.allclose(ae(x), torch.tensor([4.0, 8.5]))


def test_dcgan_autoencoder_mirrors_the_discriminator():
    """Conv encoder (D's stride-2 convolutions, then a 4×4 conv to a 1×1×code code), transposed-conv decoder
    back to the image; batch norm as D has it (none under a gradient penalty)."""
    cfg = dcgan.DCGANConfig(width=4, z_dim=8)
    shape = (3, 16, 16)
    for norm, expect in (("batch", nn.BatchNorm2d), ("none", None), ("layer", nn.GroupNorm)):
        ae = AutoencoderD.from_discriminator(dcgan.Discriminator(cfg, shape, norm), code_dim=5, image=True)
        x = torch.randn(6, *shape)
        assert ae.encode(x).shape == (6, 5)
        assert ae.reconstruct(x).shape == x.shape and ae(x).shape == (6,)
        convs = [m for m in ae.encoder if isinstance(m, nn.Conv2d)]
        deconvs = [m for m in ae.decoder if isinstance(m, nn.ConvTranspose2d)]
        assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 4), (4, 8), (8, 5)]
        assert [(c.in_channels, c.out_channels) for c in deconvs] == [(5, 8), (8, 4), (4, 3)]
        norms = [m for m in ae.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        # encoder: on every conv but the first and the code layer; decoder: on every layer but the output
        assert len(norms) == (0 if expect is None else 3) and all(isinstance(m, expect) for m in norms)
        assert not isinstance(ae.decoder[-1], (nn.Tanh, nn.ReLU, nn.LeakyReLU))  # a linear reconstruction


# ------------------------------------------------------------------ the losses

def test_d_loss_by_hand_margin_active_and_inactive():
    loss = EnergyBased(margin=1.0)
    real = torch.tensor([0.5, 1.5])
    # fakes 0.2 (inside the margin: relu(1 - 0.2) = 0.8) and 3.0 (outside: 0) → 1.0 + 0.4
    assert loss.d_loss(real, torch.tensor([0.2, 3.0])).item() == pytest.approx(1.4)
    # every fake beyond m: only E D(x) is left
    assert loss.d_loss(real, torch.tensor([2.0, 3.0])).item() == pytest.approx(1.0)
    # a larger margin reaches the second fake too: 1.0 + (3.8 + 1.0)/2
    assert EnergyBased(margin=4.0).d_loss(real, torch.tensor([0.2, 3.0])).item() == pytest.approx(3.4)


def test_d_loss_gradient_stops_at_the_margin():
    fake = torch.tensor([0.2, 3.0], requires_grad=True)
    EnergyBased(margin=1.0).d_loss(torch.tensor([0.5, 1.5]), fake).backward()
    assert fake.grad.tolist() == [-0.5, 0.0]  # the fake past m gets no push


def test_g_loss_and_pull_away_term_by_hand():
    ae = tiny_autoencoder()
    loss = EnergyBased(pt_weight=0.1)
    assert loss.g_loss(torch.tensor([0.2, 3.0]), torch.tensor([9.0, 9.0])).item() == pytest.approx(1.6)
    # One-dimensional codes 3 and 1 (both > 0): parallel, f_PT = 1 → 0.1·1.
    fake_g = torch.tensor([[1.0, 2.0], [0.5, 0.5]], requires_grad=True)
    game = SimpleNamespace(D=ae, fake_g=fake_g, zero=torch.zeros(()))
    extra = loss.g_extra(game)
    assert extra.item() == pytest.approx(0.1)
    # Codes 1 and -1 after the encoder's ReLU are 1 and 0: orthogonal → 0.
    game.fake_g = torch.tensor([[1.0, 0.0], [-1.0, -2.0]])
    assert loss.g_extra(game).item() == 0.0
    # pt_weight = 0 skips the encoder pass
    called = []
    ae.encode = lambda x: called.append(x)
    assert EnergyBased(pt_weight=0.0).g_extra(game) is game.zero and not called


def test_pull_away_gradient_reaches_the_fake_batch():
    torch.manual_seed(0)
    D = mlp.Discriminator(mlp.MLPConfig(depth=2, width=8), (2,))
    ae = AutoencoderD.from_discriminator(D, code_dim=4, image=False)
    fake_g = torch.randn(8, 2, requires_grad=True)
    EnergyBased(pt_weight=0.1).g_extra(SimpleNamespace(D=ae, fake_g=fake_g, zero=torch.zeros(()))).backward()
    assert fake_g.grad is not None and fake_g.grad.abs().sum() > 0


def test_pull_away_term_moves_G_not_D(tmp_path):
    """One step with λ_PT = 0.1 vs 0: D (stepped before G) is identical, G is not: the term is G's.
    SGD, since Adam's first step is lr·sign(g), which a small extra term seldom changes."""
    over = POINTS + ["objective=ebgan", "optimizer=sgd", "arch.width=32", "train.iterations=1"]
    run_train(tmp_path / "pt", over)
    run_train(tmp_path / "nopt", over + ["objective.pt_weight=0"])
    a, b = load_ckpt(tmp_path / "pt"), load_ckpt(tmp_path / "nopt")
    assert_same_tensors(a["D"], b["D"], "D")
    assert not all(torch.equal(a["G"][k], b["G"][k]) for k in a["G"])


# ------------------------------------------------------------------ runs

def test_players_are_G_and_the_autoencoder(tmp_path):
    run_train(tmp_path / "r", POINTS + ["objective=ebgan", "train.iterations=1"])
    D = load_ckpt(tmp_path / "r")["D"]
    assert any(k.startswith("encoder.") for k in D) and any(k.startswith("decoder.") for k in D)
    # code_dim = 128 (the recipe), width 8 (POINTS): the code layer is Linear(8, 128)
    assert D["encoder.4.weight"].shape == (128, 8) and D["decoder.0.weight"].shape == (8, 128)


def test_cli_200_steps_on_ring8(tmp_path):
    run_dir = tmp_path / "ring8"
    cmd = ["dataset=ring8", "arch=mlp", "objective=ebgan", "train.iterations=200",
           "train.progress=false", "threads=1", "eval.every=0", "metrics.names=[]", "device=cpu",
           f"hydra.run.dir={run_dir}"]
    proc = ganbench_run(cmd, run_dir.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = results(run_dir)
    assert rec["status"] == "completed" and rec["step"] == 200


def test_with_a_gradient_penalty(tmp_path):
    # ∇ₓ of the energy is well defined (double backward through the autoencoder): dragan runs.
    rec = run_train(tmp_path / "r", POINTS + ["objective=ebgan", "penalty=dragan", "train.iterations=2"])
    assert rec["status"] == "completed"


def test_tiny_dcgan_run(tmp_path, image_overrides):
    rec = run_train(tmp_path / "img", ["objective=ebgan", "train.iterations=3"] + image_overrides)
    assert rec["status"] == "completed"
    D = load_ckpt(tmp_path / "img")["D"]
    assert any("running_mean" in k for k in D)  # batch norm in the autoencoder (no gradient penalty)


def test_exact_resume(tmp_path, monkeypatch):
    assert_resumes_exactly(tmp_path, monkeypatch, ["objective=ebgan"] + POINTS)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("override, key", [("objective.margin=0", "margin"), ("objective.pt_weight=-1", "pt_weight"),
                                           ("objective.code_dim=0", "code_dim")])
def test_bad_values(override, key):
    with pytest.raises(ConfigError, match=f"^objective.{key}: must be"):
        validate(compose(POINTS + ["objective=ebgan", override]))


def test_bad_value_on_the_cli_is_one_line(tmp_path):
    cmd = ["dataset=ring8", "arch=mlp", "objective=ebgan", "objective.margin=-1", "device=cpu",
           f"hydra.run.dir={tmp_path / 'bad'}"]
    proc = ganbench_run(cmd, tmp_path, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "objective.margin: must be > 0 (got -1.0)" in proc.stderr.strip().splitlines()[-1]


def test_minibatch_discrimination_refused(tmp_path):
    with pytest.raises(ConfigError, match="arch.minibatch_discrimination"):
        run_train(tmp_path / "r", POINTS + ["objective=ebgan", "arch.minibatch_discrimination=3", "train.iterations=1"])
