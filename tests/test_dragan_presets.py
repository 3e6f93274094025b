"""The DRAGAN paper's experiment presets (bogonet, hard_dcgan_variants, fgan_stability, mnist_one_hidden_layer,
stacked_mnist): each composes for every run of its sweep and passes validation, every run of a comparison
trains under one protocol (only what the comparison varies differs), the published settings key by key,
and the one override that selects a metric without the Inception weights."""
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import compose, ganbench_run

# preset -> (runs in its sweep, the keys its sweep varies, what the varied keys may change)
PRESETS = {
    "bogonet": (300, ("arch.seed", "arm"), ("arch", "arm", "objective", "penalty")),
    "hard_dcgan_variants": (24, ("arch", "arm", "seed"), ("arch", "arm", "objective", "penalty", "seed")),
    "fgan_stability": (30, ("objective", "penalty", "seed"), ("objective", "penalty", "seed")),
    # the CPU-scale presets of docs/reproductions.md (seeds as replicas: the sweep names seed 0 only)
    "bogonet_mnist_mlp": (60, ("arch.seed", "arm"), ("arch", "arm", "objective", "penalty")),
    "fgan_stability_mnist": (10, ("objective", "penalty", "seed"), ("objective", "penalty", "seed")),
    "mnist_one_hidden_layer": (6, ("arm", "seed"), ("arm", "objective", "penalty", "seed")),
    "stacked_mnist": (40, ("arm", "seed"), ("arm", "objective", "penalty", "dynamics", "seed")),
}


def sweep_runs(preset, *extra):
    """The runs ``ganbench -m experiment=<preset> --cfg job`` previews (``# run i/n: <overrides>  (seeds ...)``)."""
    out = ganbench_run(["-m", f"experiment={preset}", *extra, "--cfg", "job"], Path.cwd(), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = []
    for line in out.stdout.splitlines():
        # "(seeds 0,1,2)": one run per seed; "(seeds 0..2 in one process: train.replicas)": one replicated run
        m = re.match(r"# run \d+/\d+: (.*?)(?:  \(seeds ([\d,]+)\)|  \(seeds \d+\.\.\d+ in one process.*\))?$", line)
        if m:
            seeds = m.group(2).split(",") if m.group(2) else [None]
            runs += [(m.group(1).split(), s) for s in seeds]
    return runs


@pytest.mark.slow  # 15-50 s each on the shared 2-core machine (a Hydra composition per run of the sweep)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_run_of_the_sweep_composes_validates_and_shares_the_protocol(preset):
    from ganbench.config import validate

    n, varied, may_change = PRESETS[preset]
    bogonet = preset.startswith("bogonet")
    runs = sweep_runs(preset, "bogonet.instances=4") if bogonet else sweep_runs(preset)
    assert len(runs) == (4 * 3 if bogonet else n), runs
    protocols = {}
    # Runs that differ only by seed compose alike but for `seed`: one composition per set of overrides.
    for overrides in {tuple(ov): None for ov, _ in runs}:
        assert {o.split("=")[0] for o in overrides} - {"bogonet.instances"} <= set(varied), overrides
        cfg = compose([f"experiment={preset}", *overrides])
        validate(cfg)  # the whole config, and the arch against the dataset (no data read)
        tree = OmegaConf.to_container(cfg, resolve=True)
        protocols[" ".join(overrides)] = {k: v for k, v in tree.items() if k not in may_change}
    first = next(iter(protocols.values()))
    for name, protocol in protocols.items():
        assert protocol == first, (preset, name, [k for k in first if protocol.get(k) != first[k]])
    if bogonet:
        assert sorted({int(o.split("=")[1]) for ov, _ in runs for o in ov if o.startswith("arch.seed=")}) == [0, 1, 2, 3]


@pytest.mark.parametrize("preset, facts", [
    ("bogonet", {"arch.name": "bogonet", "bogonet.instances": 100, "train.iterations": 100000,
                 "optimizer.g.lr": 1e-4, "optimizer.d.betas": [0.5, 0.9], "dataset.name": "cifar10"}),
    ("hard_dcgan_variants", {"train.iterations": 100000, "optimizer.g.betas": [0.5, 0.9], "arch.d_norm": "none",
                             "dataset.name": "cifar10", "eval.num_samples_final": 10000}),
    ("fgan_stability", {"arch.name": "dcgan_nobn_const", "arch.d_norm": "none", "optimizer.d.lr": 1e-4}),
    # the DRAGAN authors' notebook: 784 inputs, z 100, 128 ReLU units, Adam 1e-4 (0.5, 0.9), batch 128, 200k steps
    ("mnist_one_hidden_layer", {"arch.name": "mlp1", "arch.g.depth": 1, "arch.g.width": 128, "arch.d.width": 128,
                                "arch.g.z_dim": 100, "dataset.resolution": 28, "dataset.channels": 1,
                                "train.batch_size": 128, "train.iterations": 200000, "optimizer.g.lr": 1e-4,
                                "optimizer.g.betas": [0.5, 0.9], "metrics.names": ["mnist_is"]}),
    # PacGAN's Stacked-MNIST protocol: Adam 2e-4 β₁ 0.5, batch 64, z 100, 50 epochs × 128k, 26k samples
    ("stacked_mnist", {"dataset.name": "stacked_mnist", "optimizer.g.lr": 2e-4, "optimizer.d.betas": [0.5, 0.999],
                       "train.batch_size": 64, "train.iterations": 100000, "arch.z_dim": 100, "arch.width": 64,
                       "metrics.names": ["stacked"], "metrics.stacked_samples": 26000}),
])
def test_presets_hold_their_settings(preset, facts):
    cfg = compose([f"experiment={preset}"])
    for key, value in facts.items():
        got = OmegaConf.select(cfg, key)
        got = list(got) if not isinstance(got, (int, float, str)) else got
        assert got == value, (preset, key, got)


@pytest.mark.parametrize("preset", ["bogonet", "hard_dcgan_variants", "fgan_stability"])
def test_one_override_selects_a_metric_without_inception_weights(preset):
    assert compose([f"experiment={preset}"]).metrics.names == "auto"  # CIFAR-10: IS/FID/KID
    for dataset, names in (("mnist", ["mnist_is"]), ("stacked_mnist", ["stacked"])):
        cfg = compose([f"experiment={preset}", f"dataset={dataset}"])
        assert list(cfg.metrics.names) == names
        from ganbench.config import validate

        validate(cfg)
    if preset == "bogonet":  # toy data: BogoNet draws MLPs only, and the toy mode metrics score them
        from ganbench.archs import describe

        cfg = compose(["experiment=bogonet", "dataset=ring8"])
        assert list(cfg.metrics.names) == ["modes"]
        assert [describe(cfg.arch, (2,), False)[s]["name"] for s in "gd"] == ["mlp", "mlp"]


def test_stacked_mnist_arms_are_the_compared_methods():
    arms = {arm: compose(["experiment=stacked_mnist", f"arm={arm}"]) for arm in ("vanilla", "dragan", "wgan_gp", "unrolled")}
    assert (arms["dragan"].penalty.name, arms["wgan_gp"].penalty.name, arms["wgan_gp"].objective.n_dis) == \
        ("dragan", "wgan_gp", 5)
    assert arms["unrolled"].dynamics.name == "unrolled" and arms["unrolled"].dynamics.k == 5
    assert all(c.train.iterations == 100000 for c in arms.values())  # equal generator iterations
