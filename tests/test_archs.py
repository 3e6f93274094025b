"""Separate G/D selection, the DRAGAN paper's architectures (§5.2.3 hard variants, §5.2.1 mlp1), the WGAN-GP
CIFAR-10 ResNet and the BogoNet sampler (§5.3): layer types and activations asserted from the built modules,
the pair/side key wiring, fits and misfits, BogoNet's determinism, and short runs that log the architecture."""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import logging
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import FAST, compose, ganbench_run, run_train, shared_file
from ganbench.archs import FAMILIES, arch_config, bogonet, build, dcgan, describe, mlp, resnet
from ganbench.archs.layers import VirtualBatchNorm
from ganbench.errors import ConfigError

IMG = (3, 32, 32)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, VirtualBatchNorm)
ACTS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.ELU)


def arch_of(*overrides):
    return compose(list(overrides)).arch


def kinds(module, types):
    return [type(m) for m in module.modules() if isinstance(m, types)]


def linears(module):
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


# ------------------------------------------------------------------ composing G and D separately

def test_cfg_job_shows_an_mlp_g_and_a_dcgan_d(tmp_path):
    out = ganbench_run(["--cfg", "job", "--resolve", "arch=dcgan_mlp_g"], tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    import yaml

    arch = yaml.safe_load(out.stdout)["arch"]
    assert arch["g"] == {"name": "mlp", "depth": 4, "width": 512, "widths": None, "activation": "relu",
                         "z_dim": 100, "norm": "none", "init": "he_normal", "spectral_norm": False}
    assert arch["d"]["name"] == "dcgan" and arch["d"]["width"] == 64 and arch["d"]["activation"] == "leaky_relu"


def test_side_keys_and_shared_keys():
    """arch.<key> of a pair reaches its own family's sides; arch.g.<key> one side; arch/g=<family> swaps a side,
    which then has its family's defaults (never the other family's width or latent size)."""
    a = arch_config(arch_of("arch=dcgan", "arch.width=16"))
    assert (a.g.width, a.d.width) == (16, 16)
    a = arch_config(arch_of("arch=dcgan", "arch.width=16", "arch.g.width=8"))
    assert (a.g.width, a.d.width) == (8, 16)
    a = arch_config(arch_of("arch=mlp", "arch/g=dcgan"))
    assert a.g == dcgan.GConfig() and a.d.name == "mlp" and a.d.width == 128
    a = arch_config(arch_of("arch=dcgan", "arch/g=mlp", "arch/d=resnet"))
    assert a.g == mlp.GConfig() and a.d == resnet.DConfig()
    a = arch_config(arch_of("arch=mlp", "arch.d_depth=1", "arch.d_width=7"))
    assert (a.g.depth, a.g.width, a.d.depth, a.d.width) == (3, 128, 1, 7)


SHARED_CASES = {
    "dcgan": {"width": 8, "z_dim": 7, "d_norm": "layer", "g_norm": "virtual_batch", "vbn_ref_size": 3,
              "g_activation": "elu", "d_activation": "tanh", "g_constant_width": True, "kernel": 5,
              "minibatch_discrimination": 2, "mbd_dim": 4},
    "mlp": {"depth": 2, "width": 9, "d_depth": 4, "d_width": 5, "activation": "tanh", "z_dim": 3, "g_norm": "batch",
            "d_maxout": 3, "minibatch_discrimination": 2, "mbd_dim": 4, "init": "he_normal"},
    "resnet": {"dim": 16, "z_dim": 12},
    "bogonet": {"seed": 9},
}


@pytest.mark.parametrize("family", sorted(SHARED_CASES))
def test_the_side_files_read_the_pair_keys_as_the_pair_schema_maps_them(family):
    """conf/arch/{g,d}/<family>.yaml (${gb.shared:...}) and <family>.PairConfig.sides() agree, at the defaults
    and with every shared key changed (so a key the YAML forgets, or wires to the wrong side, fails)."""
    module = FAMILIES[family]
    for values in ({}, SHARED_CASES[family]):
        a = arch_config(arch_of(f"arch={family}", *[f"arch.{k}={v}" for k, v in values.items()]))
        g, d = module.PairConfig(name=family, **values).sides()
        assert (a.g, a.d) == (g, d), values
    # The side files' own defaults are the schemas' (a side outside its family's pairs reads no shared key).
    other = "mlp" if family != "mlp" else "dcgan"
    a = arch_config(arch_of(f"arch={other}", f"arch/g={family}", f"arch/d={family}"))
    assert (a.g, a.d) == (module.GConfig(), module.DConfig())


def test_flat_pair_node_is_read_as_its_family():
    """A node without g/d (the form before sides existed) builds the same networks as the composed pair."""
    from omegaconf import OmegaConf

    flat = OmegaConf.create({"name": "mlp", "depth": 2, "width": 8, "z_dim": 3, "activation": "tanh"})
    torch.manual_seed(0)
    G1, D1 = build(flat, (2,), False)
    torch.manual_seed(0)
    G2, D2 = build(arch_of("arch=mlp", "arch.depth=2", "arch.width=8", "arch.z_dim=3", "arch.activation=tanh"), (2,), False)
    for a, b in ((G1, G2), (D1, D2)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def small(side: str, family: str):
    """Overrides that make a side tiny, per family."""
    k = f"arch.{side}"
    return {"dcgan": [f"{k}.width=4"], "mlp": [f"{k}.width=8", f"{k}.depth=1"], "resnet": [f"{k}.dim=8"],
            "bogonet": [f"{k}.dcgan.widths=[4]", f"{k}.resnet.dims=[8]", f"{k}.mlp.widths=[8]", f"{k}.mlp.depths=[1]"]
            }[family] + ([f"{k}.z_dim=6"] if side == "g" and family != "bogonet" else [])


FAMILY_NAMES = ("dcgan", "mlp", "resnet", "bogonet")


@pytest.mark.parametrize("g,d", list(itertools.product(FAMILY_NAMES, FAMILY_NAMES)))
def test_every_pair_composes_on_images_and_the_point_capable_ones_on_points(g, d):
    cfg = arch_of("arch=dcgan", f"arch/g={g}", f"arch/d={d}", *small("g", g), *small("d", d))
    for shape in (IMG, (1, 16, 16)):
        G, D = build(cfg, shape, gradient_penalty=True)
        x = G(torch.randn(5, G.z_dim))
        assert x.shape == (5, *shape) and x.abs().max() <= 1
        assert D(x).shape == (5,)
    points_ok = g in ("mlp", "bogonet") and d in ("mlp", "bogonet")
    if points_ok:
        G, D = build(cfg, (2,), gradient_penalty=True)
        assert D(G(torch.randn(5, G.z_dim))).shape == (5,)
        assert all(describe(cfg, (2,), True)[s]["name"] == "mlp" for s in "gd")  # BogoNet redraws to MLPs
    else:
        with pytest.raises(ConfigError) as info:
            build(cfg, (2,), gradient_penalty=True)
        msg = str(info.value)
        assert "\n" not in msg and f"(G: {g}, D: {d})" in msg and "needs image data" in msg and "arch=mlp" in msg


def test_packed_d_input_for_every_family():
    """pack=m: D of every family takes the packed (m·C, H, W) input; G keeps the data's shape."""
    for d in FAMILY_NAMES:
        cfg = arch_of("arch=dcgan", "arch/d=" + d, *small("g", "dcgan"), *small("d", d))
        G, D = build(cfg, IMG, False, (6, 32, 32))
        assert G(torch.randn(4, G.z_dim)).shape == (4, *IMG)
        assert D(torch.randn(4, 6, 32, 32)).shape == (4,)


def test_mismatched_pair_is_one_line_naming_both_sides(tmp_path):
    run_dir = tmp_path / "run"
    out = ganbench_run(["dataset=ring8", "arch=mlp", "arch/g=resnet", *FAST, "train.iterations=2",
                        f"hydra.run.dir={run_dir}"], tmp_path, timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert lines[0].startswith("ganbench: error: arch=mlp (G: resnet, D: mlp) does not fit dataset=ring8 (2-D points)")
    assert "G: resnet needs image data" in lines[0] and "D: fits" in lines[0]
    assert not (run_dir / ".hydra").exists() and not (run_dir / "checkpoints").exists()


# ------------------------------------------------------------------ the hard variants (§5.2.3)

def base_d(gradient_penalty: bool):
    return build(arch_of("arch=dcgan"), IMG, gradient_penalty)[1]


def same_layers(a: nn.Module, b: nn.Module) -> bool:
    return [(type(m), tuple(p.shape for p in m.parameters(recurse=False))) for m in a.modules()] == \
        [(type(m), tuple(p.shape for p in m.parameters(recurse=False))) for m in b.modules()]


@pytest.mark.parametrize("gp", [False, True])
def test_dcgan_nobn_const(gp):
    """No batch norm and a constant number of filters in G; the base DCGAN's D."""
    G, D = build(arch_of("arch=dcgan_nobn_const"), IMG, gp)
    base_G = build(arch_of("arch=dcgan"), IMG, gp)[0]
    assert not kinds(G, NORMS) and kinds(base_G, NORMS)
    deconvs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in deconvs] == [256, 256, 256, 3]  # 4w everywhere for w = 64, then the image
    assert kinds(G, ACTS) == [nn.ReLU] * 3 + [nn.Tanh]
    assert all(m.bias is not None for m in deconvs)  # no norm follows: every layer keeps its bias
    assert same_layers(D, base_d(gp))


def test_dcgan_mlp_g():
    """A 4-layer 512-unit ReLU MLP G (4 hidden layers, linear output, tanh) and the base DCGAN's D."""
    G, D = build(arch_of("arch=dcgan_mlp_g"), IMG, False)
    assert linears(G) == [(100, 512), (512, 512), (512, 512), (512, 512), (512, 3072)]
    assert kinds(G, ACTS) == [nn.ReLU] * 4 + [nn.Tanh] and not kinds(G, (nn.Conv2d, nn.ConvTranspose2d) + NORMS)
    assert same_layers(D, base_d(False))
    # WGAN-GP's FC layers' He variance, not DCGAN's N(0, 0.02) (262,144 draws: the std's SE is ~0.15 %)
    assert G.net[2].weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.01)


def test_dcgan_tanh():
    """tanh everywhere: every hidden nonlinearity of G and D is tanh; batch norm stays (only the nonlinearity changes)."""
    G, D = build(arch_of("arch=dcgan_tanh"), IMG, False)
    assert kinds(G, ACTS) == [nn.Tanh] * 4  # 3 hidden + the output
    assert kinds(D, ACTS) == [nn.Tanh] * 3
    assert len(kinds(G, nn.BatchNorm2d)) == 3 and len(kinds(D, nn.BatchNorm2d)) == 2


def test_dcgan_tanh_mlp_d():
    """A tanh G (the base DCGAN G with tanh) and a 4-layer 512-unit LeakyReLU MLP D."""
    G, D = build(arch_of("arch=dcgan_tanh_mlp_d"), IMG, True)
    assert kinds(G, ACTS) == [nn.Tanh] * 4 and len(kinds(G, nn.BatchNorm2d)) == 3
    assert linears(D) == [(3072, 512), (512, 512), (512, 512), (512, 512), (512, 1)]
    leaky = kinds(D, ACTS)
    assert leaky == [nn.LeakyReLU] * 4
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, nn.LeakyReLU))
    assert D.net[0].weight.std().item() == pytest.approx(math.sqrt(2 / 3072), rel=0.01)  # He, as WGAN-GP's FC D


def test_mlp1_is_the_authors_one_hidden_layer_networks():
    """One hidden layer of 128 ReLU units in G (z ∈ ℝ¹⁰⁰) and D on 28×28 MNIST; weights N(0, 2/fan_in), biases 0."""
    torch.manual_seed(0)
    G, D = build(arch_of("arch=mlp1"), (1, 28, 28), True)
    assert linears(G) == [(100, 128), (128, 784)] and linears(D) == [(784, 128), (128, 1)]
    assert kinds(G, ACTS) == [nn.ReLU, nn.Tanh] and kinds(D, ACTS) == [nn.ReLU]
    big = D.net[0].weight  # 100,352 draws: the std's standard error is ~0.2 %
    assert big.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.01)
    assert all(not m.bias.any() for m in itertools.chain(G.modules(), D.modules()) if isinstance(m, nn.Linear))


def test_mlp_per_layer_widths():
    cfg = arch_of("arch=mlp", "arch.g.widths=[16,4]", "arch.d.widths=[3]")
    G, D = build(cfg, (2,), False)
    assert linears(G) == [(2, 16), (16, 4), (4, 2)] and linears(D) == [(2, 3), (3, 1)]


def test_dcgan_kernel5_doubles_and_halves_and_its_autoencoder_mirror_fits():
    from ganbench.archs.autoencoder import AutoencoderD

    G, D = build(arch_of("arch=dcgan", "arch.width=4", "arch.kernel=5"), IMG, False)
    assert {m.kernel_size for m in G.modules() if isinstance(m, nn.ConvTranspose2d)} == {(4, 4), (5, 5)}
    x = G(torch.randn(3, 100))
    assert x.shape == (3, *IMG) and D(x).shape == (3,)
    ae = AutoencoderD.from_discriminator(D, 8, image=True)
    assert ae.reconstruct(x).shape == x.shape


# ------------------------------------------------------------------ the WGAN-GP ResNet

def test_resnet_is_gan_cifar_resnet_for_32x32():
    G, D = build(arch_of("arch=resnet"), IMG, True)
    assert G.z_dim == 128 and (G.input.in_features, G.input.out_features) == (128, 4 * 4 * 128)
    ups = [b for b in G.blocks if isinstance(b, resnet.ResidualBlock)]
    assert [b.resample for b in ups] == ["up"] * 3
    assert [type(m) for m in G.out] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.Tanh] and G.out[2].kernel_size == (3, 3)
    # Pre-activation blocks: norm, ReLU, (upsample), conv3×3, norm, ReLU, conv3×3.
    assert [type(m) for m in ups[0].residual] == [nn.BatchNorm2d, nn.ReLU, nn.Upsample, nn.Conv2d, nn.BatchNorm2d,
                                                  nn.ReLU, nn.Conv2d]
    blocks = list(D.blocks)
    assert isinstance(blocks[0], resnet.OptimizedBlock)
    assert [b.resample for b in blocks[1:]] == ["down", None, None]
    assert isinstance(blocks[2].shortcut, nn.Identity) and not kinds(D, NORMS)  # NORMALIZATION_D = False
    assert [type(m) for m in blocks[1].residual] == [nn.Identity, nn.ReLU, nn.Conv2d, nn.Identity, nn.ReLU, nn.Conv2d,
                                                     nn.AvgPool2d]
    assert (D.output.in_features, D.output.out_features) == (128, 1)
    assert all(m.out_channels in (128, 3) for m in G.modules() if isinstance(m, nn.Conv2d))
    # Spatial sizes through D: 32 → 16 (optimized block) → 8 (down) → 8 → 8.
    h, sides = torch.randn(2, *IMG), []
    for b in blocks:
        h = b(h)
        sides.append(h.shape[-1])
    assert sides == [16, 8, 8, 8]
    # He-uniform residual convolutions (std √(4/(fan_in+fan_out))), Glorot shortcuts (√(2/(fan_in+fan_out))).
    conv = blocks[2].residual[2]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(4 / (128 * 9 * 2)), rel=0.02)
    short = blocks[1].shortcut[0]
    assert short.weight.std().item() == pytest.approx(math.sqrt(2 / (128 + 128)), rel=0.05)


def test_resnet_adapts_to_powers_of_two_and_refuses_other_sizes():
    for side, n_up, n_down in ((16, 2, 0), (64, 4, 2)):
        cfg = arch_of("arch=resnet", "arch.dim=8")
        G, D = build(cfg, (1, side, side), False)
        assert sum(b.resample == "up" for b in G.blocks) == n_up
        assert sum(getattr(b, "resample", None) == "down" for b in D.blocks) == n_down
        assert D(G(torch.randn(2, 128))).shape == (2,)
    with pytest.raises(ConfigError, match=r"G: resnet needs dataset.resolution to be a power of two >= 8 .*got 28.*"
                                          r"D: resnet needs"):
        build(arch_of("arch=resnet"), (1, 28, 28), False)


@pytest.mark.parametrize("family", ["dcgan", "mlp", "resnet"])
def test_d_without_norm_is_per_sample(family):
    """What a gradient penalty needs: D(x)_i depends on x_i alone (no batch norm under a penalty)."""
    cfg = arch_of("arch=dcgan", f"arch/d={family}", *small("d", family))
    _, D = build(cfg, IMG, gradient_penalty=True)
    x = torch.randn(4, *IMG)
    y = x.clone()
    y[1:] = torch.randn(3, *IMG)
    assert torch.allclose(D(x)[0], D(y)[0], atol=1e-6)


# ------------------------------------------------------------------ BogoNet

def test_bogonet_is_deterministic_per_arch_seed_and_independent_of_the_training_seed():
    descs = [describe(arch_of("arch=bogonet", f"arch.seed={s}"), IMG, False) for s in range(8)]
    again = [describe(arch_of("arch=bogonet", f"arch.seed={s}", f"seed={s + 100}"), IMG, False) for s in range(8)]
    assert descs == again
    assert len({json.dumps(d, sort_keys=True) for d in descs}) == 8  # 8 instances, 8 different pairs
    # The networks built from one arch.seed have the same layers whatever the torch seed.
    cfg = arch_of("arch=bogonet", "arch.seed=3")
    torch.manual_seed(0)
    a = build(cfg, IMG, False)
    torch.manual_seed(1)
    b = build(cfg, IMG, False)
    assert all(same_layers(x, y) for x, y in zip(a, b))


def test_bogonet_sides_are_drawn_independently():
    """G's draw does not depend on D's ranges (and vice versa): each side has its own stream."""
    plain = describe(arch_of("arch=bogonet", "arch.seed=4"), IMG, False)
    changed = describe(arch_of("arch=bogonet", "arch.seed=4", "arch.d.families.dcgan=0"), IMG, False)
    assert changed["g"] == plain["g"] and changed["d"]["name"] != "dcgan"
    only_g = describe(arch_of("arch=dcgan", "arch/g=bogonet", "arch.g.seed=4"), IMG, False)
    assert only_g["g"] == plain["g"] and only_g["d"]["name"] == "dcgan"


def test_bogonet_family_frequencies_and_ranges():
    """Over 600 draws per side the families come out near 0.6 / 0.2 / 0.2 (within 4.5 binomial standard
    deviations) and every drawn value lies in its range."""
    g_cfg, d_cfg = bogonet.BogoNetConfig().sides()
    n = 600
    for side, cfg in (("g", g_cfg), ("d", d_cfg)):
        draws = [bogonet.draw(dataclasses.replace(cfg, seed=s), side, IMG)[0] for s in range(n)]
        counts = Counter(d.name for d in draws)
        for family, p in (("dcgan", 0.6), ("resnet", 0.2), ("mlp", 0.2)):
            assert abs(counts[family] - n * p) < 4.5 * math.sqrt(n * p * (1 - p)), counts
        for d in draws:
            if d.name == "dcgan":
                assert d.width in (32, 64, 128) and d.kernel in (4, 5) and d.norm in ("batch", "none")
                assert d.activation in ("leaky_relu", "tanh")
            elif d.name == "resnet":
                assert d.plain_blocks in ((0, 1, 2) if side == "g" else (0, 1, 2, 3, 4))
            else:
                assert 1 <= len(d.widths) <= 4 and set(d.widths) <= {128, 256, 512, 1024}
                assert d.activation == ("relu" if side == "g" else "leaky_relu")
            if side == "g":
                assert d.z_dim in (32, 64, 100, 128)
        # Per-layer MLP widths: some drawn MLP has two different widths.
        assert any(d.name == "mlp" and len(set(d.widths)) > 1 for d in draws)


def test_bogonet_mlps_start_with_he_init_and_a_generator_that_depends_on_z():
    """Every drawn MLP takes arch.{g,d}.mlp.init (He, N(0, 2/fan_in), by default): its weights have that
    variance, and a drawn 3-layer G's output varies over z (per-pixel std > 0.1). With DCGAN's N(0, 0.02)
    instead, the same G starts as one constant image (std < 0.01): the collapsed start the default avoids."""
    torch.manual_seed(0)
    g_cfg, d_cfg = bogonet.BogoNetConfig().sides()
    mlp_only = {"dcgan": 0.0, "resnet": 0.0, "mlp": 1.0}
    shape = (1, 28, 28)
    for side, cfg in (("g", g_cfg), ("d", d_cfg)):
        drawn = bogonet.draw(dataclasses.replace(cfg, seed=1, families=mlp_only), side, shape)[0]
        assert drawn.init == "he_normal"
        net = (mlp.Generator if side == "g" else mlp.Discriminator)(drawn, shape)
        for lin in (m for m in net.modules() if isinstance(m, nn.Linear)):
            assert lin.weight.std().item() == pytest.approx(math.sqrt(2.0 / lin.in_features), rel=0.15)
    ranged = dataclasses.replace(g_cfg, families=mlp_only, mlp=bogonet.MLPRange(depths=[3], widths=[64, 128, 256]))
    drawn = bogonet.draw(dataclasses.replace(ranged, seed=0), "g", shape)[0]
    spread = {}
    for init in ("he_normal", "dcgan"):
        G = mlp.Generator(dataclasses.replace(drawn, init=init), shape)
        with torch.no_grad():
            spread[init] = G(torch.randn(256, drawn.z_dim)).std(0).mean().item()
    assert spread["he_normal"] > 0.1 and spread["dcgan"] < 0.01, spread
    with pytest.raises(ConfigError, match=r"mlp\.init: unknown option 'xavier'; allowed: auto, dcgan, torch, he_normal"):
        bogonet.MLPRange(init="xavier").check("mlp.", "g")


def test_bogonet_redraws_what_does_not_fit_deterministically():
    cfg = bogonet.BogoNetConfig(seed=0).sides()[0]
    attempts = set()
    for s in range(40):
        drawn, attempt = bogonet.draw(dataclasses.replace(cfg, seed=s), "g", (2,))
        assert drawn.name == "mlp"
        assert bogonet.draw(dataclasses.replace(cfg, seed=s), "g", (2,)) == (drawn, attempt)
        assert bogonet.draw_once(dataclasses.replace(cfg, seed=s), "g", attempt) == drawn
        attempts.add(attempt)
    assert max(attempts) > 0  # some seeds needed a redraw (80 % of first draws are convolutional)
    with pytest.raises(ConfigError, match=r"arch.g.families: no BogoNet draw .* fits"):
        bogonet.draw(dataclasses.replace(cfg, families={"dcgan": 1.0, "resnet": 0.0, "mlp": 0.0}), "g", (2,))


def test_bogonet_run_records_its_architecture_and_replicas_share_it(tmp_path):
    """results.json → architecture, the TensorBoard text entry and train.log name the drawn networks; the
    replicas of one arch.seed stack (they are one architecture)."""
    from conftest import all_tags

    overrides = ["dataset=ring8", "arch=bogonet", "arch.seed=2", "arch.g.mlp.widths=[8,16]",
                 "arch.d.mlp.widths=[8]", "objective=dragan", "train.iterations=3", "train.batch_size=16"]
    run_dir = tmp_path / "run"
    record = run_train(run_dir, overrides)
    arch = record["architecture"]
    expect = describe(compose(FAST + overrides).arch, (2,), True)
    assert arch == json.loads(json.dumps(expect)) and arch["g"]["drawn"]["seed"] == 2
    assert record["config"]["arch"]["seed"] == 2
    assert any(t.startswith("architecture") for t in all_tags(run_dir)["tensors"])
    rows = run_train(tmp_path / "rep" / "seed=0", overrides + ["train.replicas=2"])["replicas"]
    assert len(rows) == 2
    for r in rows:
        got = json.loads((Path(r["run_dir"]) / "results.json").read_text())
        assert r["status"] == "completed" and got["architecture"] == arch


def test_train_log_names_the_architecture(tmp_path):
    run_dir = tmp_path / "run"
    out = ganbench_run(["dataset=ring8", "arch=mlp", "arch.width=8", *FAST, "train.iterations=2",
                        f"hydra.run.dir={run_dir}"], tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    log = (run_dir / "train.log").read_text()
    assert "arch=mlp: G: mlp(depth=3, width=8," in log and "; D: mlp(depth=3, width=8," in log


# ------------------------------------------------------------------ 3 steps on the shared data

CIFAR_ARCHS = [["arch=dcgan_nobn_const"], ["arch=dcgan_mlp_g"], ["arch=dcgan_tanh"], ["arch=dcgan_tanh_mlp_d"],
               ["arch=resnet"]] + [["arch=bogonet", f"arch.seed={s}"] for s in range(5)]


@pytest.mark.slow
@pytest.mark.parametrize("arch", CIFAR_ARCHS, ids=lambda a: ",".join(a))
def test_three_steps_on_the_cifar10_archive(tmp_path, data_cache, arch, caplog):
    archive = shared_file("cifar10-jpeg.tar.gz")
    caplog.set_level(logging.INFO, logger="ganbench")
    run_dir = tmp_path / "run"
    record = run_train(run_dir, ["dataset=folder", f"dataset.path={archive}", "dataset.split=test",
                                 f"dataset.root={data_cache}", *arch, "objective=dragan", "train.iterations=3",
                                 "train.batch_size=8", "train.log_every=1", "train.sample_grid=4"])
    assert record["status"] == "completed" and record["step"] == 3
    assert record["architecture"]["name"] == arch[0].split("=")[1]
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{arch[0]}: G: ")]
    assert len(logged) == 1, caplog.text
    if arch[0] == "arch=bogonet":
        assert f"[drawn by bogonet, {arch[1]}, attempt" in logged[0]


@pytest.mark.slow
def test_three_steps_of_mlp1_on_mnist(tmp_path):
    raw = shared_file("mnist/raw/t10k-images-idx3-ubyte.gz").parent
    root = tmp_path / "data"
    (root / "MNIST").mkdir(parents=True)
    (root / "MNIST" / "raw").symlink_to(raw)
    record = run_train(tmp_path / "run", ["experiment=mnist_one_hidden_layer", "arm=dragan", "dataset.split=test",
                                          f"dataset.root={root}", "compare.iterations=3", "compare.eval_every=0",
                                          "train.log_every=1", "train.sample_grid=4"])
    assert record["status"] == "completed" and record["architecture"]["g"]["depth"] == 1
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0


def test_a_checkpoint_written_before_the_sides_existed_still_resumes(tmp_path):
    """Its config's arch is the flat pair (no g, d, base, init): the pair keys it has still match, so the run
    continues; a changed pair key is still named as itself."""
    run_dir = tmp_path / "run"
    base = ["dataset=ring8", "arch=mlp", "arch.width=8", "train.batch_size=16", "train.ckpt_every=1"]
    run_train(run_dir, base + ["train.iterations=2"])
    ckpt = run_dir / "checkpoints" / "last.pt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["config"]["arch"] = {k: v for k, v in state["config"]["arch"].items() if k not in ("g", "d", "base", "init")}
    torch.save(state, ckpt)
    record = run_train(run_dir, base + ["train.iterations=4"])
    assert record["status"] == "completed" and record["step"] == 4
    from ganbench.run.checkpoint import check_matches
    from ganbench.errors import CheckpointError

    new = compose(FAST + base[:2] + ["arch.width=16"])
    from omegaconf import OmegaConf

    with pytest.raises(CheckpointError, match=r"arch\.width: 8 in the checkpoint, 16 now"):
        check_matches(state["config"], OmegaConf.to_container(new, resolve=True), ckpt, ("arch",))


def test_sngan_sides_need_square_images_whose_side_is_a_multiple_of_8():
    """The SNGAN standard CNN (M_g = M/8): 24×24 fits (Miyato et al.'s STL-10 48×48 too), 20×20 and points do not,
    each refused in one line naming both sides."""
    from ganbench.archs import check_fits

    node = compose(FAST + ["arch=sngan"]).arch
    for resolution in (24, 32, 48):
        check_fits(node, {"name": "folder", "kind": "image", "resolution": resolution, "channels": 3}, 1, False)
    with pytest.raises(ConfigError, match=r"arch=sngan \(G: sngan, D: sngan\) does not fit dataset=folder .*"
                                          r"G: sngan needs square images whose side is a multiple of 8"):
        check_fits(node, {"name": "folder", "kind": "image", "resolution": 20, "channels": 3}, 1, False)
    with pytest.raises(ConfigError, match="sngan needs image data"):
        check_fits(node, {"name": "ring8", "kind": "points"}, 1, False)
    G, D = build(node, (3, 24, 24), False)
    assert G(torch.randn(2, 128)).shape == (2, 3, 24, 24) and D(torch.randn(2, 3, 24, 24)).shape == (2,)
