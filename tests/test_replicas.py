"""train.replicas=N: N seeds trained as one batched program, each equal to its separate run.

The equivalence tests compare each replica with the separate run of its seed: bit-identical initial weights,
the same random streams, parameters equal to float rounding (1e-5 relative) after 100 steps, exact resume,
per-replica divergence; and the files each replica writes are those its separate run writes.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import (FAST, GANBENCH, POINTS, assert_same_tensors, cli_env, compose, ganbench_popen, ganbench_run,
                      kill_after_checkpoint, load_ckpt, results, run_train)
from toy_game import crash_at

from ganbench.errors import CheckpointError, ConfigError
from ganbench.replicas import Layout, Replicated, join_states, replica_dirs, replica_overrides, split_state


def max_rel_diff(a, b) -> float:
    """max |a - b| / max |b| over all float tensors of a network's state dict: the difference relative to the
    network's parameter scale. (Per tensor it would be ill-posed for a near-zero tensor such as a final
    bias of 4e-4 whose gradient vanishes analytically: Adam turns its rounding noise into lr-sized steps.)"""
    diff = scale = 0.0
    for key in a:
        x, y = a[key].double(), b[key].double()
        if x.is_floating_point():
            diff, scale = max(diff, (x - y).abs().max().item()), max(scale, y.abs().max().item())
    return diff / max(scale, 1e-12)


def replicas_and_separate_runs(tmp_path, over, seeds):
    """Train ``over`` as replicas of ``seeds`` in one job and each seed as its own run: yields (seed, the
    replica's checkpoint, the separate run's checkpoint)."""
    run_train(tmp_path / "rep" / f"seed={seeds[0]}", over + [f"seed={seeds[0]}", f"train.replicas={len(seeds)}"])
    for seed in seeds:
        run_train(tmp_path / "sep" / f"seed={seed}", over + [f"seed={seed}"])
        yield seed, load_ckpt(tmp_path / "rep" / f"seed={seed}"), load_ckpt(tmp_path / "sep" / f"seed={seed}")


# ------------------------------------------------------------------ the pieces

def test_layout_draws_each_replica_from_its_own_generator():
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    layout = Layout({"cpu": gens})
    x = torch.zeros(2, 5, 3)
    u = layout.per_sample_uniform(x)
    assert u.shape == (2, 5, 1)
    for s, row in zip((3, 4), u):
        torch.manual_seed(s)  # the separate run draws the same numbers from its global RNG
        assert torch.equal(row, torch.rand(5, 1))
    n = layout.randn_like(x)
    for g, row in zip((3, 4), n):
        ref = torch.Generator().manual_seed(g)
        torch.rand(5, 1, generator=ref)
        assert torch.equal(row, torch.randn(5, 3, generator=ref))
    # fork: diagnostics leave every stream where it was
    before = [g.get_state() for g in gens]
    with layout.fork(torch.device("cpu")):
        layout.rand_like(x)
    assert all(torch.equal(b, g.get_state()) for b, g in zip(before, gens))


def test_layout_reduces_per_replica():
    layout = Layout({"cpu": [torch.Generator(), torch.Generator()]})
    x = torch.stack([torch.arange(6.0).view(3, 2), 10 * torch.arange(6.0).view(3, 2)])
    std = layout.std(x)
    assert std.shape == (2, 1, 1)
    assert torch.allclose(std.flatten(), torch.stack([x[0].std(correction=0), x[1].std(correction=0)]))
    assert layout.flat_samples(torch.zeros(2, 3, 4, 5)).shape == (2, 3, 20)
    assert layout.total(torch.tensor([1.0, 2.0])).item() == 3.0
    single = Layout()
    assert single.total(torch.tensor(5.0)).item() == 5.0 and single.cat_dim == 0 and layout.cat_dim == 1


def _nets(seeds, batchnorm=False):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        layers = [nn.Linear(3, 4)] + ([nn.BatchNorm1d(4)] if batchnorm else []) + [nn.ReLU(), nn.Linear(4, 1)]
        out.append(nn.Sequential(*layers))
    return out


def test_replicated_applies_each_replicas_weights_and_batchnorm_statistics():
    nets = _nets((0, 1, 2), batchnorm=True)
    rep = Replicated([n for n in _nets((0, 1, 2), batchnorm=True)], "D")
    x = torch.randn(3, 8, 3)
    y = rep(x)
    for i, net in enumerate(nets):
        assert torch.allclose(y[i], net(x[i]), atol=1e-6)
        # per-replica running statistics, updated in the stacked buffer
        assert torch.allclose(rep.module[1].running_mean[i], net[1].running_mean, atol=1e-7)
        assert torch.equal(rep.replica(i)[0].weight, net[0].weight)
    assert rep.state_dict()["0.weight"].shape == (3, 4, 3)


def test_replicated_refuses_networks_that_differ():
    a, b = _nets((0,))[0], nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    with pytest.raises(ConfigError, match="train.replicas: the replicas' D networks differ"):
        Replicated([a, b], "D")


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.5, 0.9), weight_decay=1e-3),
    lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5),
    lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3),
], ids=["adam", "rmsprop", "sgd"])
def test_one_optimizer_over_stacked_parameters_is_independent_optimizers(make):
    """Elementwise optimizers: stacked parameters with stacked gradients step exactly as N separate ones."""
    torch.manual_seed(0)
    ps = [nn.Parameter(torch.randn(4, 3)) for _ in range(3)]
    stacked = nn.Parameter(torch.stack([p.detach().clone() for p in ps]))
    opts, opt = [make([p]) for p in ps], make([stacked])
    for _ in range(5):
        grads = [torch.randn(4, 3) for _ in ps]
        for p, g, o in zip(ps, grads, opts):
            p.grad = g.clone()
            o.step()
        stacked.grad = torch.stack(grads)
        opt.step()
    for i, p in enumerate(ps):
        assert torch.allclose(stacked[i], p, rtol=1e-6, atol=1e-7)


def test_split_and_join_are_inverse():
    nets = _nets((0, 1), batchnorm=True)
    rep = Replicated(nets, "D")
    opt = torch.optim.Adam(rep.parameters(), lr=1e-3)
    rep(torch.randn(2, 4, 3)).sum().backward()
    opt.step()
    state = {"G": rep.state_dict(), "D": rep.state_dict(), "opt_G": opt.state_dict(), "opt_D": opt.state_dict(),
             "G_avg": None, "d_step": 1}
    parts = [split_state(state, i) for i in range(2)]
    assert parts[1]["D"]["0.weight"].shape == (4, 3)
    assert parts[0]["opt_D"]["state"][0]["exp_avg"].shape == (4, 3)
    assert_same_tensors(join_states(parts)["D"], state["D"])
    assert_same_tensors(join_states(parts)["opt_D"]["state"], state["opt_D"]["state"])


def test_replica_directories_and_overrides():
    assert replica_dirs(Path("out/x/seed=3"), 3, 2) == [Path("out/x/seed=3"), Path("out/x/seed=4")]
    assert replica_dirs(Path("custom"), 0, 2) == [Path("custom/seed=0"), Path("custom/seed=1")]
    assert replica_overrides(["a=1", "seed=3", "train.replicas=4"], 5, 3) == ["a=1", "seed=5"]
    assert replica_overrides(["a=1", "train.replicas=4"], 0, 0) == ["a=1"]
    assert replica_overrides(["a=1", "train.replicas=4"], 1, 0) == ["a=1", "seed=1"]


# ------------------------------------------------------------------ equivalence with separate runs

def _prepare(overrides, run_dir):
    from ganbench.run.start import prepare

    return prepare(compose(FAST + list(overrides)), run_dir)


@pytest.mark.parametrize("images", [False, True], ids=["mlp", "dcgan"])
def test_initial_weights_are_bit_identical_to_each_separate_run(tmp_path, images, request):
    base = request.getfixturevalue("image_overrides") if images else POINTS
    rep = _prepare(base + ["objective=dragan", "seed=7", "train.replicas=3"], tmp_path / "seed=7")
    assert [m.run_dir.name for m in rep.members] == ["seed=7", "seed=8", "seed=9"]
    for k, seed in enumerate((7, 8, 9)):
        single = _prepare(base + ["objective=dragan", f"seed={seed}"], tmp_path / f"single{seed}")
        assert_same_tensors(rep.game.G.replica(k).state_dict(), single.game.G.state_dict(), "G")
        assert_same_tensors(rep.game.D.replica(k).state_dict(), single.game.D.state_dict(), "D")


CASES = {
    "dragan": ["objective=dragan"],
    "wgan_gp": ["objective=wgan_gp"],  # n_dis=5, interpolates real and fake
    "vanilla_ema": ["objective=vanilla", "train.g_average=ema"],
    "wgan_clip": ["objective=wgan"],  # RMSprop and weight clipping
    "simultaneous_r1": ["objective=vanilla", "penalty=r1", "dynamics=simultaneous"],
    "fgan_kl_noise": ["objective=fgan_kl", "dynamics.instance_noise=0.1"],
    # the generator differentiates through K Adam steps of a functional copy of the stacked D
    "unrolled": ["objective=vanilla", "dynamics=unrolled", "dynamics.k=3"],
    "unrolled_sgd_wgan_gp": ["objective=wgan_gp", "dynamics=unrolled", "dynamics.k=2", "dynamics.inner=sgd"],
    # spectral normalisation on both sides: each replica's own power-iteration vectors (the vmap path)
    "vanilla_sn_both": ["objective=vanilla", "arch.g.spectral_norm=true", "arch.d.spectral_norm=true"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_replicas_follow_their_separate_runs_for_100_steps(tmp_path, case):
    over = POINTS + CASES[case] + ["train.iterations=100", "train.ckpt_every=100", "train.log_every=25"]
    for seed, a, b in replicas_and_separate_runs(tmp_path, over, (3, 4, 5)):
        # SN: a replica's power iteration is a batched matrix-vector product, which rounds unlike the run's mv,
        # and σ̃ divides every weight (1.3e-5 measured after 100 SNGAN steps)
        tol = 1e-4 if "sn" in case else 1e-5
        for side in ("G", "D") + (("G_avg",) if "ema" in case else ()):
            assert max_rel_diff(a[side], b[side]) < tol, (seed, side)
        # the same random numbers were drawn: the streams end in the same state
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
        assert a["step"] == b["step"] == 100 and a["config"] == b["config"]
        assert results(tmp_path / "rep" / f"seed={seed}")["status"] == "completed"


def test_dcgan_replicas_follow_their_separate_runs(tmp_path, image_overrides):
    """Batch norm in G (per-replica statistics), grouped convolutions in D, the DRAGAN penalty."""
    over = image_overrides + ["objective=dragan", "train.iterations=30", "train.ckpt_every=30", "train.log_every=10"]
    for seed, a, b in replicas_and_separate_runs(tmp_path, over, (0, 1)):
        assert max_rel_diff(a["G"], b["G"]) < 1e-5 and max_rel_diff(a["D"], b["D"]) < 1e-5, seed
        assert torch.equal(a["G"]["net.1.num_batches_tracked"], b["G"]["net.1.num_batches_tracked"])


def test_spectral_norm_replicas_keep_their_own_vectors(tmp_path, image_overrides):
    """SN on the DCGAN D (grouped convolutions under vmap): each replica's ũ, ṽ are its separate run's, and
    differ between replicas; the checkpoint of each holds its own."""
    over = image_overrides + ["objective=sngan", "train.iterations=6", "train.ckpt_every=6", "train.log_every=3"]
    us = []
    for seed, a, b in replicas_and_separate_runs(tmp_path, over, (0, 1)):
        keys = [k for k in a["D"] if k.endswith(("._u", "._v"))]
        assert len(keys) == 6, keys  # 3 convolutions (16×16 images) × (ũ, ṽ)
        for k in keys:
            torch.testing.assert_close(a["D"][k], b["D"][k], rtol=1e-5, atol=1e-6)
        assert max_rel_diff(a["D"], b["D"]) < 1e-4, seed
        us.append(a["D"][keys[0]])
    assert not torch.equal(us[0], us[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (each replica's generator lives on the device)")
def test_replicas_on_cuda_follow_their_separate_runs(tmp_path):
    over = [o for o in POINTS] + ["objective=dragan", "device=cuda", "train.iterations=20", "train.ckpt_every=20"]
    fast = [o for o in FAST if not o.startswith("device=")]
    run_train(tmp_path / "rep" / "seed=0", fast + over + ["train.replicas=2"], fast=False)
    run_train(tmp_path / "sep" / "seed=1", fast + over + ["seed=1"], fast=False)
    a, b = load_ckpt(tmp_path / "rep" / "seed=1"), load_ckpt(tmp_path / "sep" / "seed=1")
    assert max_rel_diff(a["G"], b["G"]) < 1e-4 and max_rel_diff(a["D"], b["D"]) < 1e-4
    assert torch.equal(a["rng"]["cuda"][0], b["rng"]["cuda"][0])  # the same draws on the device


def test_replicas_1_is_the_single_run(tmp_path):
    over = POINTS + ["objective=dragan", "train.iterations=20", "train.ckpt_every=20"]
    run_train(tmp_path / "a", over)
    run_train(tmp_path / "b", over + ["train.replicas=1"])
    a, b = load_ckpt(tmp_path / "a"), load_ckpt(tmp_path / "b")
    for key in ("G", "D", "opt_G", "opt_D", "rng"):
        assert_same_tensors(a[key], b[key], key)


def test_replicas_resume_exactly_after_a_crash(tmp_path, monkeypatch):
    over = POINTS + ["objective=wgan_gp", "train.iterations=12", "train.ckpt_every=4", "train.replicas=2"]
    run_train(tmp_path / "straight" / "seed=0", over)
    with monkeypatch.context() as m:
        crash_at(m, 6)
        with pytest.raises(RuntimeError, match="killed"):
            run_train(tmp_path / "split" / "seed=0", over)
    assert load_ckpt(tmp_path / "split" / "seed=1")["step"] == 4
    run_train(tmp_path / "split" / "seed=0", over)
    for seed in (0, 1):
        a, b = load_ckpt(tmp_path / "straight" / f"seed={seed}"), load_ckpt(tmp_path / "split" / f"seed={seed}")
        for key in ("G", "D", "opt_G", "opt_D", "rng", "step", "d_step"):
            assert_same_tensors(a[key], b[key], key)
    # a replica's checkpoint is a run's: the separate run continues it
    over1 = [o for o in over if not o.startswith("train.replicas")] + ["seed=1", "train.iterations=14"]
    record = run_train(tmp_path / "split" / "seed=1", over1)
    assert record["status"] == "completed" and record["step"] == 14


@pytest.mark.parametrize("links", [True, False, "gap"], ids=["hard-link", "no-hard-links", "between-renames"])
def test_a_kill_between_two_replicas_checkpoint_writes_resumes_all_at_the_common_step(tmp_path, monkeypatch, links, caplog):
    """The job dies after seed=0's checkpoint at step 8 is written and before seed=1's and seed=2's: seed=0
    is one checkpoint ahead. The rerun takes seed=0's previous checkpoint (prev.pt, step 4) and continues all
    three from step 4, exactly as the uninterrupted job; seed=0's metrics after step 4 are dropped."""
    import os

    from ganbench.run import checkpoint

    over = POINTS + ["objective=wgan_gp", "train.iterations=12", "train.ckpt_every=4", "train.replicas=3",
                     "eval.every=4"]
    run_train(tmp_path / "straight" / "seed=0", over)
    original, writes = checkpoint.save, []

    def save(state, path, keep_previous=False):
        if state["step"] == 8 and writes:
            raise RuntimeError("killed")  # the process dies right after the first replica's write at step 8
        if state["step"] == 8:
            writes.append(path)
        return original(state, path, keep_previous)

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "save", save)
        if not links:
            def no_link(*_):
                raise OSError("hard links not supported")
            m.setattr(os, "link", no_link)
        with pytest.raises(RuntimeError, match="killed"):
            run_train(tmp_path / "split" / "seed=0", over)
    steps = [load_ckpt(tmp_path / "split" / f"seed={s}")["step"] for s in (0, 1, 2)]
    assert steps == [8, 4, 4]
    assert torch.load(tmp_path / "split" / "seed=0" / "checkpoints" / "prev.pt", weights_only=True)["step"] == 4
    if links == "gap":  # killed after last.pt became prev.pt and before the new last.pt was renamed in
        (tmp_path / "split" / "seed=0" / "checkpoints" / "last.pt").unlink()
    with caplog.at_level("INFO", logger="ganbench"):
        run_train(tmp_path / "split" / "seed=0", over)
    for seed in (0, 1, 2):
        a, b = load_ckpt(tmp_path / "straight" / f"seed={seed}"), load_ckpt(tmp_path / "split" / f"seed={seed}")
        for key in ("G", "D", "opt_G", "opt_D", "rng", "step", "d_step"):
            assert_same_tensors(a[key], b[key], key)
        rows = [json.loads(x)["step"] for x in (tmp_path / "split" / f"seed={seed}" / "metrics.jsonl").read_text().splitlines()]
        assert rows == sorted(set(rows)), rows  # no step twice: the lost continuation's rows are gone
        assert results(tmp_path / "split" / f"seed={seed}")["status"] == "completed"
    if links != "gap":  # in the gap seed=0's own checkpoint is prev.pt, already at the common step
        assert "seed=0: its checkpoint at step 8 was written after" in caplog.text
        assert "continuing from its previous one, at step 4" in caplog.text


def test_replicas_whose_checkpoints_cannot_be_brought_to_one_step_are_refused(tmp_path):
    """Seeds two checkpoints apart (one continued separately): no common step; one line names each seed's."""
    over = POINTS + ["objective=dragan", "train.iterations=8", "train.ckpt_every=4", "train.replicas=2"]
    run_train(tmp_path / "seed=0", over)
    single = [o for o in over if not o.startswith("train.replicas")]
    run_train(tmp_path / "seed=1", single + ["seed=1", "train.iterations=16"])
    with pytest.raises(CheckpointError, match=r"different steps \(seed=0 at 8, seed=1 at 16\)"):
        run_train(tmp_path / "seed=0", [o for o in over if o != "train.iterations=8"] + ["train.iterations=20"])


def test_completed_seeds_are_left_alone_and_the_others_train(tmp_path):
    """A second job over seeds 0..2 finds seeds 0 and 1 completed (byte-identical afterwards) and trains
    seed 2 alone; its record says which were finished."""
    over = POINTS + ["objective=dragan", "train.iterations=10", "train.ckpt_every=10"]
    run_train(tmp_path / "seed=0", over + ["train.replicas=2"])
    before = {s: (tmp_path / f"seed={s}" / "results.json").read_bytes() for s in (0, 1)}
    out = run_train(tmp_path / "seed=0", over + ["train.replicas=3"])
    assert sorted((Path(r["run_dir"]).name, r["status"]) for r in out["replicas"]) == [
        ("seed=0", "completed"), ("seed=1", "completed"), ("seed=2", "completed")]
    assert all((tmp_path / f"seed={s}" / "results.json").read_bytes() == before[s] for s in (0, 1))
    run_train(tmp_path / "sep" / "seed=2", over + ["seed=2"])
    a, b = load_ckpt(tmp_path / "seed=2"), load_ckpt(tmp_path / "sep" / "seed=2")
    assert max_rel_diff(a["D"], b["D"]) < 1e-5 and torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_one_diverging_replica_ends_alone(tmp_path):
    from ganbench.run.start import prepare
    from ganbench.run.loop import run

    over = FAST + POINTS + ["objective=vanilla", "train.iterations=30", "train.log_every=5", "train.ckpt_every=10",
                            "train.replicas=3"]
    start = prepare(compose(over), tmp_path / "seed=0")
    with torch.no_grad():  # replica 1's D is broken from the start: its losses are NaN at once
        start.game.D.module.net[0].weight[1].fill_(float("nan"))
    out = run(start, tmp_path / "seed=0", over)
    statuses = {Path(r["run_dir"]).name: r["status"] for r in out["replicas"]}
    assert statuses == {"seed=0": "completed", "seed=1": "diverged", "seed=2": "completed"}
    assert out["status"] == "diverged"
    diverged = results(tmp_path / "seed=1")
    assert diverged["status"] == "diverged" and diverged["diverged_step"] == 1 and diverged["step"] == 5
    for seed in (0, 2):
        assert results(tmp_path / f"seed={seed}")["step"] == 30
        assert torch.isfinite(load_ckpt(tmp_path / f"seed={seed}")["D"]["net.0.weight"]).all()


@pytest.mark.parametrize("extra", [["objective=mixgan", "objective.k=2"], ["penalty=consensus", "dynamics=simultaneous"]],
                         ids=["mixgan", "consensus"])
def test_methods_that_are_not_batched_train_their_seeds_in_turn(tmp_path, extra, caplog):
    """Extra players, penalties on both players: the seeds of the job train one after
    another, each bit-identical to its separate run."""
    import logging

    over = POINTS + extra + ["train.iterations=6", "train.ckpt_every=6"]
    with caplog.at_level(logging.INFO, logger="ganbench"):
        out = run_train(tmp_path / "rep" / "seed=2", over + ["seed=2", "train.replicas=2"])
    assert "cannot be batched; its 2 seeds train one after another" in caplog.text
    assert [Path(r["run_dir"]).name for r in out["replicas"]] == ["seed=2", "seed=3"]
    for seed in (2, 3):
        run_train(tmp_path / "sep" / f"seed={seed}", over + [f"seed={seed}"])
        a, b = load_ckpt(tmp_path / "rep" / f"seed={seed}"), load_ckpt(tmp_path / "sep" / f"seed={seed}")
        assert a["config"] == b["config"]
        for key in set(a) - {"wall_time_s", "config"}:
            assert_same_tensors(a[key], b[key], key)


def test_replicas_refuse_resume_and_compile(tmp_path):
    from ganbench.run.start import prepare

    with pytest.raises(Exception, match="resume: train.replicas"):
        prepare(compose(FAST + POINTS + ["train.replicas=2", f"resume={tmp_path}/x.pt"]), tmp_path / "seed=0")
    # compile: replicas that run through vmap (here: spectral normalization's parametrized layers in D)
    with pytest.raises(ConfigError, match="train.compile: with train.replicas, the compiled replicated step"):
        prepare(compose(FAST + POINTS + ["train.replicas=2", "train.compile=true", "arch.d.spectral_norm=true"]),
                tmp_path / "seed=0")


# ------------------------------------------------------------------ the command line

ARGS = POINTS + ["objective=dragan", "train.iterations=40", "train.log_every=10", "train.ckpt_every=20",
                 "train.sample_every=40", "eval.every=20", "train.progress=false", "threads=1", "device=cpu"]


def _cli(args, cwd):
    return ganbench_run(args, cwd, timeout=300)


def test_cli_replicas_write_the_directories_of_their_separate_runs(tmp_path):
    done = _cli(ARGS + ["seed=3", "train.replicas=2"], tmp_path)
    assert done.returncode == 0, done.stderr
    runs = sorted(p.parent.name for p in tmp_path.glob("outputs/runs/*/seed=*/results.json"))
    assert runs == ["seed=3", "seed=4"], runs  # train.replicas names no directory
    rep4 = next(tmp_path.glob("outputs/runs/*/seed=4"))
    files = {p.relative_to(rep4).as_posix() for p in rep4.rglob("*") if p.is_file() and "tfevents" not in p.name}
    assert files >= {".hydra/config.yaml", ".hydra/overrides.yaml", "checkpoints/last.pt", "metrics.jsonl",
                     "results.json", "train.log"}
    assert list(rep4.glob("events.out.tfevents.*"))
    log4 = (rep4 / "train.log").read_text()
    assert "seed=4: step 40/40" in log4 and "seed=3: step" not in log4
    assert "seed=4" in (rep4 / ".hydra/overrides.yaml").read_text()
    assert "replicas: 1" in (rep4 / ".hydra/config.yaml").read_text()
    record = results(rep4)
    assert record["status"] == "completed" and record["config"]["seed"] == 4
    # The separate run of seed 4 finds its run completed: nothing to do, nothing changed.
    before = (rep4 / "results.json").read_bytes()
    again = _cli(ARGS + ["seed=4"], tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stderr + again.stdout
    assert (rep4 / "results.json").read_bytes() == before


def test_cli_restart_moves_every_replica_aside(tmp_path):
    args = ARGS + ["train.replicas=2", 'hydra.run.dir="out/seed=0"']
    assert _cli(args, tmp_path).returncode == 0
    again = _cli(args + ["restart=true", "train.iterations=20"], tmp_path)
    assert again.returncode == 0, again.stderr
    out = tmp_path / "out"
    assert sorted(p.name.split(".old-")[0] for p in out.glob("seed=*.old-*")) == ["seed=0", "seed=1"]
    for seed in (0, 1):
        assert results(out / f"seed={seed}")["step"] == 20  # started over
        old = next(out.glob(f"seed={seed}.old-*"))
        assert results(old)["step"] == 40  # the previous run, untouched


def test_cli_sweep_counts_each_replica(tmp_path):
    done = _cli(["-m"] + ARGS + ["objective=vanilla,dragan", "train.replicas=2", "hydra.sweep.dir=sweep"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sweep of 4 runs" in done.stdout and "4 completed" in done.stdout
    assert len(list((tmp_path / "sweep").glob("*/seed=*/results.json"))) == 4


@pytest.mark.slow
def test_cli_replicas_with_the_joblib_launcher(tmp_path):
    # The installed script itself: joblib's loky workers do not start from a fork of the test's CLI server.
    done = subprocess.run([str(GANBENCH), "-m", *ARGS, "objective=vanilla,dragan", "train.replicas=2",
                           "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep"], cwd=tmp_path,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sweep of 4 runs" in done.stdout and "4 completed" in done.stdout
    for run in (tmp_path / "sweep").glob("*/seed=*"):
        assert results(run)["config"]["seed"] == int(run.name[5:]) and results(run)["status"] == "completed"


def test_cli_refusal_is_one_line_and_writes_nothing(tmp_path):
    done = _cli(ARGS + ["train.compile=true", "train.replicas=2", "arch.d.spectral_norm=true",
                        'hydra.run.dir="out/seed=0"'], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "train.compile: with train.replicas" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # refused before any directory was made


@pytest.mark.slow
def test_replicas_resume_after_sigkill(tmp_path):
    args = ARGS[:-5] + ["train.iterations=400", "train.ckpt_every=20", "train.progress=false", "threads=1",
                        "device=cpu", "eval.every=0", "metrics.names=[]", "train.replicas=3"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    full = ganbench_run([*args, f'hydra.run.dir="{straight}/seed=0"'], tmp_path)
    assert full.returncode == 0, full.stderr
    proc = ganbench_popen([*args, f'hydra.run.dir="{killed}/seed=0"'], tmp_path)
    kill_after_checkpoint(proc, killed / "seed=2" / "checkpoints" / "last.pt", 60)
    assert results(killed / "seed=1")["status"] == "running"
    rerun = ganbench_run([*args, f'hydra.run.dir="{killed}/seed=0"'], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    for seed in (0, 1, 2):
        a, b = load_ckpt(straight / f"seed={seed}"), load_ckpt(killed / f"seed={seed}")
        for key in ("G", "D", "opt_G", "opt_D", "rng", "step"):
            assert_same_tensors(a[key], b[key], key)
        assert results(killed / f"seed={seed}")["status"] == "completed"
        assert "resumed 3 replicas" in (killed / f"seed={seed}" / "train.log").read_text()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
