"""The training loop, in-process and tiny: every option of every config group runs; resume is exact (also
after SIGKILL); NaN losses end the run as "diverged"; bad checkpoints are refused and left in place; the
TensorBoard tags are there; a completed run is not run again."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (FAST, GANBENCH, POINTS, all_tags, assert_same_tensors, cli_env, compose, load_ckpt, results,
                      run_train, scalar_events, shared_file)
from ganbench.errors import CheckpointError

CKPT_KEYS = {"G", "D", "opt_G", "opt_D", "G_avg", "step", "d_step", "rng", "config", "wall_time_s"}
QUIET = ["train.log_every=1000", "train.sample_every=1000", "train.ckpt_every=1000"]


@pytest.fixture
def no_density(monkeypatch):
    """The 2-D density figure (matplotlib) dominates a 2-step run; it has its own test below."""
    import ganbench.run.board as board

    monkeypatch.setattr(board, "log_density", lambda *args, **kwargs: None)


def check_completed(run_dir: Path, iterations: int = None):
    """results.json says completed at ``iterations``; last.pt has every key, loads with weights_only=True."""
    res = results(run_dir)
    iterations = iterations or res["config"]["train"]["iterations"]
    n_dis = res["config"]["objective"]["n_dis"]
    assert res["status"] == "completed", res.get("error")
    assert res["step"] == iterations and res["iterations"] == iterations and res["diverged_step"] is None
    assert res["error"] is None and res["wall_time_s"] > 0
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert CKPT_KEYS <= set(state), set(state)
    assert state["step"] == iterations and state["d_step"] == iterations * n_dis
    for net in ("G", "D"):
        for name, value in state[net].items():
            assert torch.isfinite(value.float()).all(), f"{net}.{name}"
    assert state["config"] == res["config"]
    return res, state


def run_and_check(tmp_path, overrides):
    run_dir = tmp_path / "run"
    record = run_train(run_dir, overrides + QUIET)
    res, state = check_completed(run_dir)
    assert record["status"] == "completed" and record["step"] == res["step"]
    return res, state


# ------------------------------------------------------------------ every option of every group runs

@pytest.mark.parametrize("objective", ["vanilla", "minimax", "dragan", "wgan", "wgan_gp", "lsgan", "hinge"])
def test_objectives_run(tmp_path, no_density, objective):
    res, state = run_and_check(tmp_path, POINTS + [f"objective={objective}", "train.iterations=2"])
    n_dis = 5 if objective.startswith("wgan") else 1
    assert state["d_step"] == 2 * n_dis
    if objective == "wgan":
        # Weight clipping after every critic step: every D parameter within ±0.01.
        for name, p in state["D"].items():
            assert p.abs().max().item() <= 0.01 + 1e-9, name
        assert state["opt_D"]["param_groups"][0]["lr"] == 5e-5 and "alpha" in state["opt_D"]["param_groups"][0]


PENALTY_CASES = [
    ["penalty=none"],
    *[[f"penalty.form={form}", f"penalty.noise={noise}"] for form in ("centered", "squared", "hinge")
      for noise in ("reference", "gaussian")],
    ["penalty=wgan_gp"],
    ["penalty=r1", "penalty.on=real"],
    ["penalty=r1", "penalty.on=fake"],
    ["penalty=weight_clip", "penalty.clip=0.05"],
    ["penalty=dragan", "penalty.every=2"],
]


@pytest.mark.parametrize("penalty", PENALTY_CASES, ids=lambda p: "-".join(o.split("=")[1] for o in p))
def test_penalties_run(tmp_path, no_density, penalty):
    _, state = run_and_check(tmp_path, POINTS + ["objective=dragan", "train.iterations=2"] + penalty)
    if "penalty=weight_clip" in penalty:
        for name, p in state["D"].items():
            assert p.abs().max().item() <= 0.05 + 1e-9, name


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_optimizers_run(tmp_path, no_density, optimizer):
    _, state = run_and_check(tmp_path, POINTS + ["objective=vanilla", f"optimizer={optimizer}", "optimizer.d.lr=1e-3",
                                                 "train.iterations=2"])
    g, d = state["opt_G"]["param_groups"][0], state["opt_D"]["param_groups"][0]
    assert g["lr"] == 2e-4 and d["lr"] == 1e-3
    specific = {"adam": "betas", "rmsprop": "alpha", "sgd": "nesterov"}[optimizer]
    assert specific in g and specific in d
    if optimizer == "adam":
        assert tuple(g["betas"]) == (0.5, 0.999)
        assert all(s["step"].item() == 2 for s in state["opt_G"]["state"].values())


@pytest.mark.parametrize("dataset", ["ring8", "grid25", "swissroll"])
def test_point_datasets_run(tmp_path, no_density, dataset):
    run_and_check(tmp_path, POINTS + [f"dataset={dataset}", "objective=dragan", "train.iterations=2"])


@pytest.mark.parametrize("d_norm,objective,expect", [
    ("auto", "vanilla", "batch"), ("auto", "dragan", "none"), ("batch", "vanilla", "batch"),
    ("layer", "wgan_gp", "layer"), ("none", "vanilla", "none"),
])
def test_dcgan_on_image_folder(tmp_path, image_overrides, d_norm, objective, expect):
    overrides = image_overrides + [f"objective={objective}", f"arch.d_norm={d_norm}", "train.iterations=2",
                                   "objective.n_dis=1"]
    _, state = run_and_check(tmp_path, overrides)
    keys = state["D"].keys()
    has_running = any(k.endswith("running_mean") for k in keys)
    assert has_running == (expect == "batch"), list(keys)
    # The D built from the config has this checkpoint's layout, and the right norm layers.
    from ganbench.archs import build

    cfg = compose(FAST + overrides)
    gp = objective in ("dragan", "wgan_gp")
    G, D = build(cfg.arch, (3, 16, 16), gp)
    assert set(D.state_dict()) == set(keys) and set(G.state_dict()) == set(state["G"])
    kinds = {type(m).__name__ for m in D.modules()}
    assert ("BatchNorm2d" in kinds) == (expect == "batch") and ("GroupNorm" in kinds) == (expect == "layer")
    assert G(torch.zeros(2, 8)).shape == (2, 3, 16, 16)


def test_mlp_on_image_folder(tmp_path, image_overrides):
    run_and_check(tmp_path, image_overrides + ["arch=mlp", "arch.width=8", "arch.z_dim=4", "objective=vanilla",
                                               "train.iterations=2"])


@pytest.mark.parametrize("kind", ["ema", "uniform"])
def test_generator_average(tmp_path, no_density, kind):
    """After steps 1 and 2 (θ₁, θ₂): uniform θ̄ = (θ₁+θ₂)/2; EMA θ̄ = βθ₁ + (1-β)θ₂ (the first update copies)."""
    beta = 0.75
    overrides = POINTS + ["objective=vanilla", f"train.g_average={kind}", f"train.ema_beta={beta}",
                          "train.ckpt_every=1"]
    run_dir = tmp_path / "run"
    run_train(run_dir, overrides + ["train.iterations=1"])
    s1 = load_ckpt(run_dir)
    assert_same_tensors({k: v for k, v in s1["G_avg"].items() if k.startswith("module.")},
                        {f"module.{k}": v for k, v in s1["G"].items()})
    run_train(run_dir, overrides + ["train.iterations=2"])
    s2 = load_ckpt(run_dir)
    assert s2["G_avg"]["n_averaged"].item() == 2
    for name, t1 in s1["G"].items():
        t2 = s2["G"][name]
        expected = (t1 + t2) / 2 if kind == "uniform" else beta * t1 + (1 - beta) * t2
        torch.testing.assert_close(s2["G_avg"][f"module.{name}"], expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(t1, t2)
    assert results(run_dir)["status"] == "completed"


def test_dcgan_ema_averages_batchnorm_buffers(tmp_path, image_overrides):
    _, state = run_and_check(tmp_path, image_overrides + ["objective=vanilla", "train.iterations=2",
                                                          "train.g_average=ema"])
    avg = state["G_avg"]
    assert avg["n_averaged"].item() == 2
    assert {f"module.{k}" for k in state["G"]} <= set(avg)
    assert any(k.endswith("running_mean") for k in avg)


def test_averaged_generator_is_evaluated_too(tmp_path):
    """With train.g_average on, the final evaluation scores G and the averaged G (metrics prefixed ema_/avg_)."""
    for kind, prefix in (("ema", "ema_"), ("uniform", "avg_")):
        res, _ = run_and_check(tmp_path / kind, POINTS + ["objective=vanilla", "train.iterations=3",
                                                           f"train.g_average={kind}", "metrics.names=[modes]"])
        metrics = res["metrics"]
        assert {"modes", f"{prefix}modes", f"{prefix}hq_pct"} <= set(metrics)
        assert metrics[f"{prefix}reverse_kl"]["higher_is_better"] is False


# ------------------------------------------------------------------ exact resume

def _params_and_optim(state):
    return {k: state[k] for k in ("G", "D", "opt_G", "opt_D", "G_avg", "step", "d_step", "rng")}


@pytest.mark.parametrize("case", ["dragan_points", "vanilla_dcgan"])
def test_exact_resume(tmp_path, request, case):
    """2N steps straight == N steps, then a new call (same run dir, iterations=2N): bit-identical parameters,
    optimizer states and RNG state, with different log/sample/eval cadences in the two runs."""
    if case == "dragan_points":
        base = POINTS + ["objective=dragan", "train.g_average=ema", "metrics.names=[modes]"]
        n = 4
    else:
        base = request.getfixturevalue("image_overrides") + ["objective=vanilla", "arch.d_norm=batch"]
        n = 3
    straight = tmp_path / "straight"
    run_train(straight, base + QUIET + [f"train.iterations={2 * n}"])
    split = tmp_path / "split"
    chatty = ["train.log_every=1", "train.sample_every=2", "train.ckpt_every=1", "eval.every=2"]
    first = run_train(split, base + chatty + [f"train.iterations={n}"])
    assert first["status"] == "completed" and load_ckpt(split)["step"] == n
    run_train(split, base + chatty + [f"train.iterations={2 * n}"])
    a, b = load_ckpt(straight), load_ckpt(split)
    assert b["step"] == 2 * n
    if case == "vanilla_dcgan":
        assert any(k.endswith("running_mean") for k in a["D"])  # batch-norm buffers are compared too
    assert_same_tensors(_params_and_optim(a), _params_and_optim(b))
    check_completed(split, 2 * n)
    # TensorBoard sees each logged step once.
    for tag, steps in scalar_events(split).items():
        assert steps == sorted(set(steps)), (tag, steps)
    assert scalar_events(split)["loss/D"] == list(range(1, 2 * n + 1))


def test_resume_from_another_directory(tmp_path, no_density):
    """resume=<path>: continues from another run's checkpoint; equals the straight run of the same length."""
    base = POINTS + ["objective=dragan"] + QUIET
    run_train(tmp_path / "a", base + ["train.iterations=2"])
    run_train(tmp_path / "straight", base + ["train.iterations=4"])
    source = tmp_path / "a" / "checkpoints" / "last.pt"
    before = source.read_bytes()
    record = run_train(tmp_path / "b", base + ["train.iterations=4", f"resume={source}"])
    assert record["status"] == "completed" and record["step"] == 4
    assert_same_tensors(_params_and_optim(load_ckpt(tmp_path / "straight")), _params_and_optim(load_ckpt(tmp_path / "b")))
    assert source.read_bytes() == before
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run_train(tmp_path / "c", base + ["train.iterations=4", f"resume={tmp_path}/nothing.pt"])


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    """Kill -9 mid-run, rerun the same command: same final parameters as an uninterrupted run; TensorBoard
    (purge_step) shows every logged step once."""
    args = ["dataset=ring8", "arch=mlp", "arch.width=16", "objective=dragan", "train.iterations=300",
            "train.batch_size=32", "train.log_every=10", "train.ckpt_every=20", "train.sample_every=1000",
            "train.progress=false", "threads=1", "eval.every=0", "metrics.names=[]", "device=cpu"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    env = cli_env()
    full = subprocess.Popen([str(GANBENCH)] + args + [f"hydra.run.dir={straight}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = subprocess.Popen([str(GANBENCH)] + args + [f"hydra.run.dir={killed}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            step = torch.load(ckpt, map_location="cpu", weights_only=True)["step"]
            if step >= 60:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed (make it longer)"
    assert step >= 60
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, map_location="cpu", weights_only=True)["step"]
    assert killed_at < 300 and results(killed)["status"] == "running"
    rerun = subprocess.run([str(GANBENCH)] + args + [f"hydra.run.dir={killed}"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert full.wait(timeout=300) == 0, full.stderr.read()
    assert_same_tensors(_params_and_optim(load_ckpt(straight)), _params_and_optim(load_ckpt(killed)))
    check_completed(killed, 300)
    assert len(list(killed.glob("events.out.tfevents.*"))) == 2
    for tag, steps in scalar_events(killed).items():
        assert steps == list(range(10, 301, 10)), (tag, steps)
    assert "resumed from" in (killed / "train.log").read_text()


# ------------------------------------------------------------------ divergence

def _nan_from(monkeypatch, first_bad_call: int):
    """Make the non-saturating D loss NaN from its ``first_bad_call``-th call on (still differentiable)."""
    from ganbench.objectives.nonsaturating import NonSaturating

    original = NonSaturating.d_loss
    calls = []

    def d_loss(self, real_out, fake_out):
        calls.append(1)
        value = original(self, real_out, fake_out)
        return value * float("nan") if len(calls) >= first_bad_call else value

    monkeypatch.setattr(NonSaturating, "d_loss", d_loss)


def test_nan_gives_diverged(tmp_path, monkeypatch, no_density):
    _nan_from(monkeypatch, 7)  # D step 7 belongs to generator step 7
    run_dir = tmp_path / "run"
    record = run_train(run_dir, POINTS + ["objective=vanilla", "train.iterations=20", "train.log_every=5",
                                          "train.ckpt_every=5", "train.sample_every=1000"])
    res = results(run_dir)
    assert record["status"] == res["status"] == "diverged"
    assert res["diverged_step"] == 7
    assert 7 <= res["step"] < 20 and res["error"] is None
    state = load_ckpt(run_dir)
    assert state["step"] == 5  # the last checkpoint before the NaN, never overwritten by NaN weights
    for net in ("G", "D"):
        assert all(torch.isfinite(v.float()).all() for v in state[net].values()), net


def test_nan_via_cli_exits_zero(tmp_path):
    code = (
        "import sys, torch\n"
        "from ganbench.objectives.wasserstein import Wasserstein\n"
        "Wasserstein.d_loss = lambda self, r, f: (f.mean() - r.mean()) * float('nan')\n"
        "from ganbench.cli import main\n"
        "sys.argv = ['ganbench'] + sys.argv[1:]\n"
        "main()\n"
    )
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", code, "dataset=ring8", "arch=mlp", "arch.width=8", "objective=wgan",
                           "train.iterations=4", "train.log_every=2", "train.progress=false", "threads=1",
                           "metrics.names=[]", "eval.every=0", f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = results(run_dir)
    assert res["status"] == "diverged" and res["diverged_step"] == 1
    assert not (run_dir / "checkpoints" / "last.pt").exists() or torch.isfinite(
        torch.cat([v.flatten().float() for v in load_ckpt(run_dir)["G"].values()])).all()


# ------------------------------------------------------------------ bad checkpoints

def test_corrupt_checkpoint_is_refused_and_kept(tmp_path):
    from ganbench.cli import one_line_error

    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    garbage = bytes(range(256)) * 40
    ckpt.write_bytes(garbage)
    with pytest.raises(CheckpointError) as info:
        run_train(run_dir, POINTS + ["objective=dragan", "train.iterations=2"])
    line = one_line_error(info.value)
    assert "\n" not in line and str(ckpt) in line and "left in place" in line
    assert ckpt.read_bytes() == garbage


def test_mismatched_checkpoint_names_the_key(tmp_path, no_density):
    run_dir = tmp_path / "run"
    base = POINTS + ["objective=dragan", "train.iterations=2"] + QUIET
    run_train(run_dir, base)
    ckpt = run_dir / "checkpoints" / "last.pt"
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match=r"arch\.width"):
        run_train(run_dir, base + ["arch.width=12"])
    with pytest.raises(CheckpointError, match=r"penalty\.lambda_"):
        run_train(run_dir, base + ["penalty.lambda_=3"])
    assert ckpt.read_bytes() == before
    # Cadences and the length may change: this resumes.
    assert run_train(run_dir, base + ["train.iterations=3", "train.log_every=7"])["step"] == 3


def test_completed_run_is_not_run_again(tmp_path, no_density):
    run_dir = tmp_path / "run"
    overrides = POINTS + ["objective=dragan", "train.iterations=2"] + QUIET
    first = run_train(run_dir, overrides)
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    second = run_train(run_dir, overrides)
    assert second == first
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


def test_rerun_after_kill_in_final_evaluation(tmp_path, no_density):
    """Killed after the last checkpoint, before results.json said completed: the rerun trains nothing,
    evaluates once more, and metrics.jsonl keeps one row per evaluated step."""
    run_dir = tmp_path / "run"
    overrides = POINTS + ["objective=dragan", "train.iterations=4", "metrics.names=[modes]", "eval.every=2"] + QUIET
    run_train(run_dir, overrides)
    res = results(run_dir)
    res["status"] = "running"  # what a kill during the final evaluation leaves
    (run_dir / "results.json").write_text(json.dumps(res))
    ckpt = (run_dir / "checkpoints" / "last.pt").read_bytes()
    record = run_train(run_dir, overrides)
    assert record["status"] == "completed" and record["step"] == 4
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == ckpt
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    assert record["metrics"]["modes"]["final_step"] == 4


# ------------------------------------------------------------------ TensorBoard

POINT_TAGS = {"loss/D", "loss/G", "loss/penalty", "D/real", "D/fake", "grad/D_real_norm", "perf/it_per_s"}


def test_tensorboard_tags_points(tmp_path):
    run_dir = tmp_path / "run"
    run_train(run_dir, POINTS + ["objective=dragan", "train.iterations=4", "train.log_every=2", "train.sample_every=4",
                                 "metrics.names=[modes]"])
    tags = all_tags(run_dir)
    assert POINT_TAGS <= set(tags["scalars"]), tags["scalars"]
    assert "metrics/modes" in tags["scalars"]
    assert "images/density" in tags["images"]
    assert any(t.startswith("config") for t in tags["tensors"]), tags["tensors"]
    assert scalar_events(run_dir)["loss/D"] == [2, 4]


def test_tensorboard_tags_images(tmp_path, image_overrides):
    run_dir = tmp_path / "run"
    run_train(run_dir, image_overrides + ["objective=dragan", "train.iterations=2", "train.log_every=1"])
    tags = all_tags(run_dir)
    assert POINT_TAGS <= set(tags["scalars"]), tags["scalars"]
    assert "images/samples" in tags["images"] and "images/density" not in tags["images"]


@pytest.mark.slow
def test_cifar10_archive_tags(tmp_path, data_cache):
    archive = shared_file("cifar10-jpeg.tar.gz")
    run_dir = tmp_path / "run"
    run_train(run_dir, ["dataset=folder", f"dataset.path={archive}", "dataset.split=test", f"dataset.root={data_cache}",
                        "arch=dcgan", "objective=dragan", "train.iterations=3", "train.batch_size=16", "arch.width=8",
                        "train.log_every=1", "train.sample_grid=16"])
    check_completed(run_dir, 3)
    tags = all_tags(run_dir)
    assert POINT_TAGS <= set(tags["scalars"]), tags["scalars"]
    assert "images/samples" in tags["images"]
    assert any(t.startswith("config") for t in tags["tensors"])
