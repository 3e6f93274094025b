"""objective=mdgan: the mode regulariser by hand, the sign of the λ₂ term, the encoder player, exact resume."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import POINTS, load_ckpt, run_train
from toy_game import assert_resumes_exactly
from ganbench.objectives.mode_regularized import Encoder, ModeRegularized


class Scale(nn.Module):
    def __init__(self, a: float, z_dim: int = 1):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.z_dim = z_dim

    def forward(self, x):
        return self.a * x


class SumD(nn.Module):
    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return self.w * x.flatten(1).sum(1)


def test_regulariser_by_hand():
    # x = [[1, 2], [0, -1]]; E(x) = 0.5x; G(z) = 3z → x_rec = 1.5x; x - x_rec = -0.5x
    # ‖·‖² per sample: 0.25·5 = 1.25, 0.25·1 = 0.25 → mean 0.75
    # D(x_rec) = 1·Σ 1.5x = 4.5, -1.5 → mean softplus(-D) = (softplus(-4.5) + softplus(1.5)) / 2
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    loss = ModeRegularized(lambda1=0.2, lambda2=0.4)
    value = loss.regulariser(x, Scale(3.0), SumD(1.0), Scale(0.5))
    mode = (F.softplus(torch.tensor(-4.5)) + F.softplus(torch.tensor(1.5))) / 2
    assert value.item() == pytest.approx(0.2 * 0.75 + 0.4 * mode.item(), rel=1e-6)
    # squared L2 summed over dimensions, not the mean: a per-dimension mean would give 0.2·0.375
    only_rec = ModeRegularized(lambda1=1.0, lambda2=0.0).regulariser(x, Scale(3.0), SumD(1.0), Scale(0.5))
    assert only_rec.item() == pytest.approx(0.75)


@pytest.mark.parametrize("player", ["E", "G"])
def test_mode_term_raises_D_of_reconstructions(player):
    """A gradient step on E (or G) with only the λ₂ term raises D(G(E(x))): the regulariser makes
    reconstructions look real (minimising +λ₂ log σ(D) as printed would lower it and fails here)."""
    torch.manual_seed(0)
    x = torch.randn(16, 2)
    G, D, E = nn.Linear(3, 2), nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)), nn.Linear(2, 3)
    D.requires_grad_(False)
    loss = ModeRegularized(lambda1=0.0, lambda2=1.0)
    before = D(G(E(x))).mean().item()
    loss.regulariser(x, G, lambda v: D(v).flatten(), E).backward()
    module = E if player == "E" else G
    with torch.no_grad():
        for p in module.parameters():
            p -= 0.05 * p.grad
    assert D(G(E(x))).mean().item() > before


def test_encoder_mirrors_D():
    from omegaconf import OmegaConf

    from ganbench.archs import build

    G, D = build(OmegaConf.create({"name": "mlp", "depth": 2, "width": 8, "activation": "relu", "z_dim": 3}), (2,), False)
    E = Encoder(D, 3, image=False)
    assert E(torch.randn(5, 2)).shape == (5, 3)
    assert [type(m) for m in E.body] == [type(m) for m in D.net[:-1]]
    assert not torch.equal(E.body[0].weight, D.net[0].weight)  # re-initialised, not D's weights
    cfg = OmegaConf.create({"name": "dcgan", "width": 4, "z_dim": 8, "d_norm": "batch", "g_norm": "batch",
                            "g_activation": "relu", "d_activation": "leaky_relu", "g_constant_width": False})
    G, D = build(cfg, (3, 16, 16), False)
    E = Encoder(D, 8, image=True)
    z = E(torch.randn(4, 3, 16, 16))
    assert z.shape == (4, 8) and G(z).shape == (4, 3, 16, 16)
    assert any(isinstance(m, nn.BatchNorm2d) for m in E.modules())


def test_encoder_optimizer_follows_G_unless_e_lr():
    G, D = nn.Sequential(nn.Linear(2, 2)), nn.Module()
    D.net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    G.z_dim = 2
    opt_G = torch.optim.Adam(G.parameters(), lr=3e-4, betas=(0.1, 0.2), weight_decay=0.5)
    game = SimpleNamespace(G=G, D=D, data=SimpleNamespace(shape=(2,)), device=torch.device("cpu"),
                           players=SimpleNamespace(opt_G=opt_G))
    (E, opt_E), = ModeRegularized().players(game).values()
    group = opt_E.param_groups[0]
    assert isinstance(opt_E, torch.optim.Adam) and group["lr"] == 3e-4 and group["betas"] == (0.1, 0.2)
    assert group["weight_decay"] == 0.5
    assert {id(p) for p in group["params"]} == {id(p) for p in E.parameters()}
    (_, opt_E), = ModeRegularized(e_lr=1e-3).players(game).values()
    assert opt_E.param_groups[0]["lr"] == 1e-3


def test_encoder_is_trained_and_checkpointed(tmp_path):
    rec = run_train(tmp_path / "a", ["objective=mdgan", "train.iterations=4"] + POINTS)
    assert rec["status"] == "completed"
    state = load_ckpt(tmp_path / "a")
    assert set(state["extra"]) == {"E"} and set(state["extra_opt"]) == {"E"}
    assert all(s["step"].item() == 4 for s in state["extra_opt"]["E"]["state"].values())  # E stepped every G step
    # the regulariser reaches G: without it G trains differently
    run_train(tmp_path / "b", ["objective=mdgan", "objective.lambda1=0", "objective.lambda2=0", "train.iterations=4"] + POINTS)
    b = load_ckpt(tmp_path / "b")
    assert not all(torch.equal(state["G"][k], b["G"][k]) for k in state["G"])


def test_exact_resume_with_the_encoder(tmp_path, monkeypatch):
    state = assert_resumes_exactly(tmp_path, monkeypatch, ["objective=mdgan"] + POINTS)
    assert set(state["extra"]) == {"E"} and set(state["extra_opt"]) == {"E"}


def test_tiny_dcgan_run(tmp_path, image_overrides):
    rec = run_train(tmp_path / "img", ["objective=mdgan", "train.iterations=3"] + image_overrides)
    assert rec["status"] == "completed"
    assert "E" in load_ckpt(tmp_path / "img")["extra"]
