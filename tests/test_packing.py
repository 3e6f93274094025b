"""PacGAN packing (``pack=m``) and the MLP options of PacGAN's toy protocol (maxout D, batch-norm G, D's own
depth and width): packing reshapes exactly, every input D sees in a game step is packed, pack=1 is no packing
bit for bit, packed replicas follow their separate packed runs, and bad values are one-line ConfigErrors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import (FAST, POINTS, all_tags, assert_same_tensors, compose, load_ckpt, results, run_train,
                      scalar_events)

from ganbench.archs.layers import Maxout
from ganbench.errors import ConfigError
from ganbench.packing import pack, packed_shape

SHORT = ["train.iterations=6", "train.log_every=3", "train.ckpt_every=6", "train.sample_every=3"]


def _prepare(overrides, run_dir):
    from ganbench.run.start import prepare

    return prepare(compose(FAST + list(overrides)), run_dir)


# ------------------------------------------------------------------ the reshape

def test_pack_concatenates_consecutive_points_along_the_feature_axis():
    x = torch.arange(12.0).view(6, 2)  # sample i is (2i, 2i+1)
    packed = pack(x, 3)
    assert packed.shape == (2, 6)
    assert packed.tolist() == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert torch.equal(packed[1], torch.cat([x[3], x[4], x[5]]))
    assert packed_shape((2,), 3) == (6,)


def test_pack_stacks_image_channels():
    x = torch.randn(4, 3, 5, 5)
    packed = pack(x, 2)
    assert packed.shape == (2, 6, 5, 5) and packed_shape((3, 5, 5), 2) == (6, 5, 5)
    assert torch.equal(packed[1], torch.cat([x[2], x[3]], 0))  # channels of image 2, then of image 3


def test_pack_reshapes_each_replica_on_its_own():
    x = torch.randn(3, 8, 2)  # (N, B, d)
    packed = pack(x, 4, batch_dims=2)
    assert packed.shape == (3, 2, 8)
    for n in range(3):
        assert torch.equal(packed[n], pack(x[n], 4))
    assert torch.equal(packed[2, 1], x[2, 4:].reshape(-1))


def test_pack_1_is_the_input_itself_and_a_partial_pack_is_refused():
    x = torch.randn(5, 2)
    assert pack(x, 1) is x
    with pytest.raises(ValueError, match="5 samples cannot be packed by 2"):
        pack(x, 2)


# ------------------------------------------------------------------ maxout and the MLP options

def test_maxout_against_hand_computed_values():
    h = torch.tensor([[1.0, -2.0, 3.0, 0.5, 4.0, -1.0]])
    assert Maxout(3)(h).tolist() == [[3.0, 4.0]]  # units (1, -2, 3) and (0.5, 4, -1)
    assert Maxout(2)(h).tolist() == [[1.0, 3.0, 4.0]]  # units (1, -2), (3, 0.5), (4, -1)
    assert Maxout(2)(h.view(1, 1, 6)).shape == (1, 1, 3)  # leading batch axes (replicas)
    with pytest.raises(ValueError, match="units of 4 pieces"):
        Maxout(4)(h)


def test_maxout_discriminator_against_a_hand_computed_value():
    from ganbench.archs import mlp

    D = mlp.Discriminator(mlp.MLPConfig(depth=1, width=2, d_maxout=2), (2,))
    kinds = [type(m).__name__ for m in D.net]
    assert kinds == ["Linear", "Maxout", "Linear"] and D.net[0].out_features == 4
    assert D.feature_names == ["hidden1"]
    with torch.no_grad():
        D.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]))
        D.net[0].bias.zero_()
        D.net[2].weight.copy_(torch.tensor([[2.0, -1.0]]))
        D.net[2].bias.fill_(0.5)
    # x = (3, -1): pieces (3, -1, -3, 2) -> units max(3, -1) = 3, max(-3, 2) = 2 -> 2·3 - 1·2 + 0.5 = 4.5
    assert D(torch.tensor([[3.0, -1.0]])).tolist() == [4.5]


def test_pacgan_protocol_networks():
    """G = 4 × (FC 400 + BN + ReLU), D = 3 × maxout(200 units, 5 pieces) → linear, D input 2m for pack m."""
    from ganbench.archs import build

    cfg = compose(FAST + ["arch=mlp", "arch.depth=4", "arch.width=400", "arch.g_norm=batch", "arch.d_depth=3",
                          "arch.d_width=200", "arch.d_maxout=5"]).arch
    G, D = build(cfg, (2,), False, packed_shape((2,), 4))
    g_linear = [m for m in G.net if isinstance(m, nn.Linear)]
    assert [type(m).__name__ for m in G.net[:3]] == ["Linear", "BatchNorm1d", "ReLU"]
    assert len([m for m in G.net if isinstance(m, nn.BatchNorm1d)]) == 4
    assert [m.out_features for m in g_linear] == [400] * 4 + [2] and all(m.bias is None for m in g_linear[:4])
    assert not G.batched_forward  # BatchNorm1d takes (B, C): replicas run this G under vmap
    d_linear = [m for m in D.net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in d_linear] == [(8, 1000), (200, 1000), (200, 1000), (200, 1)]
    assert sum(isinstance(m, Maxout) for m in D.net) == 3 and not any(isinstance(m, nn.ReLU) for m in D.net)
    assert G(torch.randn(5, 2)).shape == (5, 2) and D(torch.randn(5, 8)).shape == (5,)


def test_default_mlp_is_unchanged():
    from ganbench.archs import mlp

    torch.manual_seed(0)
    G = mlp.Generator(mlp.MLPConfig(width=4, depth=2), (2,))
    D = mlp.Discriminator(mlp.MLPConfig(width=4, depth=2), (2,))
    assert [type(m).__name__ for m in G.net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"] and G.batched_forward
    assert [type(m).__name__ for m in D.net] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert all(m.bias is not None for m in G.net if isinstance(m, nn.Linear))


# ------------------------------------------------------------------ the game: every D input is packed

class Recorder:
    """D's inputs, by a forward pre-hook."""

    def __init__(self, D):
        self.inputs = []
        D.register_forward_pre_hook(lambda module, args: self.inputs.append(args[0].detach().clone()))


@pytest.mark.parametrize("objective", ["vanilla", "wgan_gp", "dragan"])
def test_every_input_of_d_is_a_packed_batch(tmp_path, objective):
    """B=16, m=4: every D call sees 4-packs of 2-D points, (·, 8); the D step's real half is the real batch
    of 16·4 points packed, and the penalty's samples (WGAN-GP's interpolates, DRAGAN's perturbations) are
    packs too."""
    start = _prepare(POINTS + [f"objective={objective}", "pack=4", "objective.n_dis=1"], tmp_path / "run")
    game = start.game
    rec = Recorder(game.D)
    drawn = []
    real_batch = game.real_batch
    game.real_batch = lambda: drawn.append(real_batch()) or drawn[-1]
    game.step()
    assert all(x.shape[1:] == (8,) for x in rec.inputs), [tuple(x.shape) for x in rec.inputs]
    first = rec.inputs[0]  # [real; fake] in one pass (no batch norm in D)
    assert drawn[0].shape == (64, 2)
    assert first.shape == (32, 8) and torch.equal(first[:16], pack(drawn[0], 4))
    assert game.real.shape == game.fake.shape == (16, 8)
    assert rec.inputs[-1].shape == (16, 8)  # the generator step's packed fake
    if objective != "vanilla":  # the gradient penalty's own D call, on 16 packed samples
        assert len(rec.inputs) == 3 and rec.inputs[1].shape == (16, 8)


class Counter:
    """The rows of each input of D (packs) and of G (latents, one per generated sample), by forward pre-hooks;
    with replicas, the rows of one run (the batch axis after the replica axis)."""

    def __init__(self, game):
        self.d_rows, self.g_rows = [], []
        batch_axis = game.layout.batch_dims - 1
        game.D.register_forward_pre_hook(lambda module, args: self.d_rows.append(args[0].shape[batch_axis]))
        game.G.register_forward_pre_hook(lambda module, args: self.g_rows.append(args[0].shape[batch_axis]))


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("m", [1, 2, 4])
def test_d_sees_batch_size_packs_of_m_samples_per_step(tmp_path, m, replicas):
    """train.batch_size=16 counts packs (PacGAN's code: its batch of packs per step): D's step judges 16 real
    and 16 fake packs, 16·m real and 16·m generated samples; the generator step generates 16·m samples and D
    judges them as 16 packs. pack=1: 16 samples of each, as before the key existed. With replicas, per run."""
    over = POINTS + ["objective=vanilla", f"pack={m}", f"train.replicas={replicas}"]
    game = _prepare(over, tmp_path / "run").game
    count = Counter(game)
    game.step()
    # G: the D step's fake batch, then the generator step's; D: [real; fake], then the generator's fake
    assert count.g_rows == [16 * m, 16 * m]
    assert count.d_rows == [2 * 16, 16]
    assert game.real.shape[-2:] == game.fake.shape[-2:] == (16, 2 * m)
    assert game.real.shape[:-2] == ((replicas,) if replicas > 1 else ())


@pytest.mark.parametrize("arm, m", [("vanilla", 1), ("pacgan2", 2), ("pacgan4", 4)])
def test_toy_pacgan_feeds_d_its_batch_of_100_packs(tmp_path, arm, m):
    """experiment=toy_pacgan (batch 100): per D step 100 real and 100 fake packs, 100·m samples of each, as
    PacGAN's code; the vanilla arm sees 100 samples."""
    over = ["experiment=toy_pacgan", f"arm={arm}", "train.replicas=1", "dataset=grid25"]
    game = _prepare(over, tmp_path / "run").game
    count = Counter(game)
    drawn = []
    real_batch = game.real_batch
    game.real_batch = lambda: drawn.append(real_batch()) or drawn[-1]
    game.step()
    assert [x.shape for x in drawn] == [(100 * m, 2)]
    assert count.g_rows == [100 * m, 100 * m]
    # D has no batch norm (maxout): [real; fake] in one pass, then the generator step's fake
    assert count.d_rows == [200, 100]


def test_instance_noise_is_drawn_on_the_unpacked_batch_then_packed(tmp_path):
    start = _prepare(POINTS + ["pack=2", "dynamics.instance_noise=0.5"], tmp_path / "run")
    game = start.game
    x = torch.randn(16, 2)
    torch.manual_seed(5)
    view = game.noisy(x)
    torch.manual_seed(5)
    expected = pack(x + 0.5 * torch.randn(16, 2), 2)
    assert view.shape == (8, 4) and torch.equal(view, expected)


def test_pack_1_is_no_packing_bit_for_bit(tmp_path):
    """pack=1, and a config without the key (``~pack``), train the run of before packing: the same
    checkpoint, bit for bit (instance noise and a gradient penalty included)."""
    over = POINTS + ["objective=wgan_gp", "dynamics.instance_noise=0.1"] + SHORT
    run_train(tmp_path / "plain", over)
    run_train(tmp_path / "pack1", over + ["pack=1"])
    run_train(tmp_path / "nokey", over + ["~pack"])
    def state(name):  # the config differs by the pack key, the wall time by the machine's load
        return {k: v for k, v in load_ckpt(tmp_path / name).items() if k not in ("config", "wall_time_s")}

    for other in ("pack1", "nokey"):
        assert_same_tensors(state(other), state("plain"), other)


def test_packed_run_logs_a_packed_gradient_probe_and_points_without_d_heatmap(tmp_path, monkeypatch):
    """B=42 packs of m=7 (294 samples): the log step's probe is 252 samples (256 rounded down to whole packs)
    packed as D sees them; the D heatmap over the plane has no meaning for packs: the density plot shows the
    points only."""
    from ganbench.run import board

    seen = []
    original = board.density_figure
    monkeypatch.setattr(board, "density_figure", lambda G, D, *a, **k: seen.append(D) or original(G, D, *a, **k))
    run = tmp_path / "run"
    record = run_train(run, POINTS + ["pack=7", "train.batch_size=42"] + SHORT)
    assert record["status"] == "completed"
    assert scalar_events(run)["grad/D_real_norm"] == [3, 6]
    assert "images/density" in all_tags(run)["images"] and seen and all(D is None for D in seen)
    assert load_ckpt(run)["D"]["net.0.weight"].shape == (8, 14)


CASES = {
    "feature_matching": ["objective=feature_matching"],
    "lsgan_qi": ["objective=lsgan_qi"],
    "wgan_clip": ["objective=wgan"],
    "roth": ["objective=vanilla", "penalty=roth"],
    "r1_simultaneous": ["objective=vanilla", "penalty=r1", "dynamics=simultaneous"],
    "unrolled": ["objective=vanilla", "dynamics=unrolled", "dynamics.k=2"],
    "minibatch_discrimination": ["objective=vanilla", "arch.minibatch_discrimination=4"],
    "pacgan_arch": ["objective=vanilla", "arch.g_norm=batch", "arch.d_maxout=3", "arch.d_depth=3", "arch.d_width=6"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_methods_run(tmp_path, case):
    record = run_train(tmp_path / "run", POINTS + ["pack=2"] + CASES[case] + ["train.iterations=3"])
    assert record["status"] == "completed" and record["step"] == 3
    state = load_ckpt(tmp_path / "run")
    assert all(v.float().isfinite().all() for v in state["D"].values())
    first = [v for k, v in state["D"].items() if k.endswith("weight") and v.dim() == 2][0]
    assert first.shape[1] == 4  # D's first layer takes 2 packed points


def test_packed_dcgan_stacks_channels(tmp_path, image_overrides):
    record = run_train(tmp_path / "run", image_overrides + ["objective=wgan_gp", "pack=2", "objective.n_dis=1",
                                                            "train.iterations=2"])
    assert record["status"] == "completed"
    assert load_ckpt(tmp_path / "run")["D"]["net.0.weight"].shape[1] == 6  # 2 × 3 channels


def test_packed_replicas_follow_their_separate_packed_runs(tmp_path):
    """(N, B, d) → (N, B/m, m·d) per run: each replica of a packed job equals its seed's packed run, with the
    PacGAN networks (BN in G: vmapped; maxout D: batched matrix products) and the DRAGAN penalty."""
    from test_replicas import max_rel_diff, replicas_and_separate_runs

    over = POINTS + ["objective=dragan", "pack=4", "arch.g_norm=batch", "arch.d_maxout=3",
                     "train.iterations=30", "train.ckpt_every=30", "train.log_every=10"]
    for seed, a, b in replicas_and_separate_runs(tmp_path, over, (0, 1)):
        assert max_rel_diff(a["G"], b["G"]) < 1e-5 and max_rel_diff(a["D"], b["D"]) < 1e-5, seed
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
        assert results(tmp_path / "rep" / f"seed={seed}")["status"] == "completed"


# ------------------------------------------------------------------ bad values: one line naming the key

@pytest.mark.parametrize("overrides, expect", [
    (["pack=0"], "pack: must be an integer >= 1"),
    (["pack=1.5"], "pack: must be an integer >= 1"),
    (["pack=true"], "pack: must be an integer >= 1"),
    (["pack=2", "objective=ebgan"], "pack: objective=ebgan (loss energy_based) does not work with packing"),
    (["pack=2", "objective=mdgan"], "pack: objective=mdgan (loss mode_regularized)"),
    (["pack=2", "objective=mixgan", "objective.k=2"], "pack: objective=mixgan (loss mixture)"),
    (["pack=2", "penalty=consensus"], "pack: penalty=consensus does not work with packing"),
    (["pack=2", "penalty=nk"], "pack: penalty=nk"),
    (["arch.g_norm=layer"], "arch.g_norm: unknown option 'layer'; allowed: none, batch"),
    (["arch.d_maxout=1"], "arch.d_maxout: must be 0 (off) or a number of pieces >= 2 (got 1)"),
    (["arch.d_maxout=-2"], "arch.d_maxout: must be 0 (off)"),
    (["arch.d_depth=0"], "arch.d_depth: must be null (the same as depth) or an integer >= 1"),
    (["arch.d_width=0"], "arch.d_width: must be null (the same as width)"),
])
def test_bad_values_are_one_line_config_errors(tmp_path, overrides, expect):
    from ganbench.config import validate

    cfg = compose(FAST + POINTS + overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)  # the arch node is validated there too
    message = str(info.value)
    assert expect in message and "\n" not in message, message


def test_mixgan_with_one_component_packs(tmp_path):
    """objective.k=1 is the plain base loss, which packs."""
    record = run_train(tmp_path / "run", POINTS + ["objective=mixgan", "objective.k=1", "pack=2", "train.iterations=2"])
    assert record["status"] == "completed"


def test_any_pack_fits_any_batch_size(tmp_path):
    """The batch counts packs: pack=3 with train.batch_size=16 is 16 packs of 3 (48 samples), no partial pack."""
    game = _prepare(POINTS + ["objective=vanilla", "pack=3"], tmp_path / "run").game
    count = Counter(game)
    game.step()
    assert count.g_rows == [48, 48] and count.d_rows == [32, 16]


def test_a_packed_run_counts_its_samples_and_probes_whole_packs(tmp_path):
    """train.batch_size=10, pack=3: 30 real samples per D step, so metrics.jsonl's images_seen is 3·30 = 90 at
    step 3 and 180 at step 6; the log step's gradient probe, min(30, 255) = 30 samples, is 10 whole packs."""
    import json

    run = tmp_path / "run"
    record = run_train(run, POINTS + ["objective=vanilla", "pack=3", "train.batch_size=10", "eval.every=3",
                                      "metrics.names=[modes]"] + SHORT)
    assert record["status"] == "completed"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["images_seen"]) for r in rows] == [(3, 90), (6, 180)]
    assert scalar_events(run)["grad/D_real_norm"] == [3, 6]


def test_cli_refuses_a_bad_pack_in_one_line(tmp_path):

    from conftest import ganbench_run

    proc = ganbench_run([*POINTS, *FAST, "pack=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "ganbench: error: pack: must be an integer >= 1 (1 = no packing; got 0)"
    assert not (tmp_path / "run").exists()
