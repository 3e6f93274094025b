"""The GPU path's pieces that can be checked on the CPU: the averaged generator's device-side update."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ganbench.dynamics.base import Average, make_average


def _generator() -> nn.Module:
    torch.manual_seed(0)
    # Batch norm: float running statistics and an integer counter, both averaged (use_buffers=True).
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _train_a_little(G: nn.Module) -> None:
    G.train()
    G(torch.randn(16, 4)).pow(2).mean().backward()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)


@pytest.mark.parametrize("kind", ["ema", "uniform"])
def test_average_equals_torchs_averaged_model(kind):
    """The host-side count changes nothing in the values: bit-identical to torch.optim.swa_utils on the CPU."""
    G = _generator()
    theirs = AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(0.9) if kind == "ema" else None, use_buffers=True)
    ours = make_average(G, kind, 0.9)
    assert isinstance(ours, Average)
    for _ in range(20):
        _train_a_little(G)
        theirs.update_parameters(G)
        ours.update_parameters(G)
    a, b = theirs.state_dict(), ours.state_dict()
    assert a.keys() == b.keys()  # checkpoints written before keep loading
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert int(b["n_averaged"]) == 20 and ours.count == 20


@pytest.mark.parametrize("kind", ["ema", "uniform"])
def test_a_loaded_average_continues_as_the_uninterrupted_one(kind):
    """Resume: loading a state sets the host count from the checkpoint's n_averaged (else the next update
    would copy θ instead of averaging)."""
    G = _generator()
    straight = make_average(G, kind, 0.9)
    for _ in range(3):
        _train_a_little(G)
        straight.update_parameters(G)
    resumed = make_average(G, kind, 0.9)
    resumed.load_state_dict(straight.state_dict())
    assert resumed.count == 3
    for _ in range(2):
        _train_a_little(G)
        straight.update_parameters(G)
        resumed.update_parameters(G)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_average_update_reads_nothing_on_the_host(monkeypatch):
    """torch's update branches on bool(n_averaged == 0) at every call; ours never reads a tensor's value."""
    G = _generator()
    avg = make_average(G, "uniform", 0.9)
    reads = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def read(self, *args, __original=original, __name=name, **kwargs):
            reads.append(__name)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    for _ in range(3):
        avg.update_parameters(G)
    monkeypatch.undo()
    assert reads == []
    # Its count lives with the averaged weights, on G's device (CUDA: no copy to the device per update).
    assert avg.n_averaged.device == next(G.parameters()).device


# ---- replicas' random streams on accelerators ----
class _FakeGenerator:
    def __init__(self):
        self.state = "seeded"

    def set_state(self, state):
        self.state = state
        return self


def test_replica_resume_on_cuda_from_a_checkpoint_written_without_cuda():
    """A checkpoint written where CUDA was unavailable holds rng['cuda'] == []: resuming its replicas on a GPU
    keeps each CUDA generator as its seed set it (as a single run does) instead of raising IndexError."""
    from ganbench.run.start import restore_replica_rng

    generators = {"cpu": [_FakeGenerator(), _FakeGenerator()], "cuda": [_FakeGenerator(), _FakeGenerator()]}
    restore_replica_rng(generators, 1, {"torch": "cpu-state", "cuda": []}, torch.device("cuda", 0))
    assert generators["cpu"][1].state == "cpu-state" and generators["cuda"][1].state == "seeded"
    restore_replica_rng(generators, 0, {"torch": "cpu-0", "cuda": ["gpu0", "gpu1"]}, torch.device("cuda", 1))
    assert generators["cuda"][0].state == "gpu1"


def test_replica_generators_follow_the_device_type(monkeypatch):
    """MPS (or any accelerator): the replicas' draws look up generators by the run device's type, and the
    stand-in for a separate run's global RNG is that device's default generator state."""
    from ganbench.replicas import Layout
    from ganbench.run.start import device_rng_state

    monkeypatch.setattr(torch.mps, "get_rng_state", lambda *a, **k: torch.tensor([7], dtype=torch.uint8))
    assert torch.equal(device_rng_state(torch.device("mps")), torch.tensor([7], dtype=torch.uint8))
    layout = Layout({"cpu": ["c0", "c1"], "mps": ["m0", "m1"]})
    drawn = []
    layout.draw(lambda g: drawn.append(g) or torch.zeros(1), torch.device("mps"))
    assert drawn == ["m0", "m1"]


# ---- explicit CUDA numerics: train.tf32, train.deterministic ----
@pytest.fixture
def fake_cuda(monkeypatch):
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "a CUDA stand-in")
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
     torch.backends.cudnn.deterministic) = flags


@pytest.mark.parametrize("tf32,deterministic", [(True, False), (False, True)])
def test_cuda_numerics_follow_their_keys(fake_cuda, caplog, tf32, deterministic):
    import logging

    from conftest import compose
    from ganbench.run.start import setup_device

    caplog.set_level(logging.INFO, logger="ganbench")
    cfg = compose(["device=cuda", f"train.tf32={str(tf32).lower()}", f"train.deterministic={str(deterministic).lower()}"])
    assert setup_device(cfg).type == "cuda"
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    assert torch.backends.cudnn.benchmark is (not deterministic)
    assert torch.backends.cudnn.deterministic is deterministic
    assert f"train.tf32={tf32}" in caplog.text and f"train.deterministic={str(deterministic).lower()}" in caplog.text


# ---- train.channels_last, optimizer kernels ----
def test_channels_last_networks_train_as_the_default_layout(tmp_path, image_overrides):
    from conftest import FAST, compose, load_ckpt, run_train
    from ganbench.run.start import prepare

    start = prepare(compose(FAST + image_overrides + ["train.channels_last=true"]), tmp_path / "probe")
    convs = [m.weight for m in start.game.D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    over = image_overrides + ["objective=dragan", "train.iterations=3"]
    run_train(tmp_path / "nchw", over)
    run_train(tmp_path / "nhwc", over + ["train.channels_last=true"])
    a, b = load_ckpt(tmp_path / "nchw"), load_ckpt(tmp_path / "nhwc")
    for side in ("G", "D"):
        for key, value in a[side].items():
            assert torch.allclose(value.float(), b[side][key].float(), rtol=1e-4, atol=1e-5), (side, key)


@pytest.mark.parametrize("kernel", ["fused", "foreach"])
def test_optimizer_kernels_are_passed_and_change_nothing_but_the_kernel(tmp_path, kernel):
    from conftest import FAST, POINTS, compose, load_ckpt, run_train
    from ganbench.run.start import prepare

    keys = [f"optimizer.g.{kernel}=true", f"optimizer.d.{kernel}=true"]
    start = prepare(compose(FAST + POINTS + keys), tmp_path / "probe")
    assert start.game.players.opt_G.defaults[kernel] is True and start.game.players.opt_D.defaults[kernel] is True
    over = POINTS + ["objective=dragan", "train.iterations=20"]
    run_train(tmp_path / "default", over + [f"optimizer.g.{kernel}=false", f"optimizer.d.{kernel}=false"])
    run_train(tmp_path / "kernel", over + keys)
    a, b = load_ckpt(tmp_path / "default"), load_ckpt(tmp_path / "kernel")
    for side in ("G", "D"):
        for key, value in a[side].items():
            assert torch.allclose(value, b[side][key], rtol=1e-5, atol=1e-6), (side, key)


# ---- threads=auto: the cores divided among the jobs side by side ----
def _hydra(mode: str, target: str = "", n_jobs=None):
    from omegaconf import OmegaConf

    launcher = {"_target_": target} if target else {}
    if n_jobs is not None:
        launcher["n_jobs"] = n_jobs
    return OmegaConf.create({"mode": mode, "launcher": launcher})


JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


@pytest.mark.parametrize("node,cores,jobs", [
    (None, 8, 1),                                                    # outside Hydra (tests, the API)
    (_hydra("RunMode.RUN"), 8, 1),                                   # one run
    (_hydra("RunMode.MULTIRUN", "hydra._internal.core_plugins.basic_launcher.BasicLauncher"), 8, 1),  # in turn
    (_hydra("RunMode.MULTIRUN", JOBLIB, -1), 8, 8),                  # joblib: -1 = every core
    (_hydra("RunMode.MULTIRUN", JOBLIB, -2), 8, 7),                  # all but one
    (_hydra("RunMode.MULTIRUN", JOBLIB, 2), 8, 2),
    (_hydra("RunMode.MULTIRUN", JOBLIB, 16), 8, 8),                  # more workers than cores: cores
])
def test_parallel_jobs_reads_the_launcher(node, cores, jobs):
    from ganbench.run.start import parallel_jobs

    assert parallel_jobs(node, cores) == jobs


def test_auto_threads_divides_the_cores_among_the_jobs():
    from ganbench.run.start import auto_threads

    assert auto_threads("image", 2, 2)[0] == 1      # the case: a 2-worker sweep on 2 cores
    assert auto_threads("image", 8, 3)[0] == 2
    assert auto_threads("image", 8, 1)[0] == 8
    assert auto_threads("image", 1, 4)[0] == 1
    assert auto_threads("points", 16, 1)[0] == 1


def test_set_threads_respects_the_affinity_mask(monkeypatch, caplog):
    import logging
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    import ganbench.run.start as train

    caplog.set_level(logging.INFO, logger="ganbench")
    before = torch.get_num_threads()
    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(train.HydraConfig, "get", staticmethod(lambda: _hydra("RunMode.MULTIRUN", JOBLIB, -1)))
    try:
        train.set_threads(OmegaConf.create({"threads": "auto"}), SimpleNamespace(kind="image"))
        assert torch.get_num_threads() == 1 and "3 usable cores / 3 jobs side by side" in caplog.text
        monkeypatch.setattr(train.HydraConfig, "get", staticmethod(lambda: _hydra("RunMode.RUN")))
        train.set_threads(OmegaConf.create({"threads": "auto"}), SimpleNamespace(kind="image"))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


# ---- train.precision ----
def _steps(tmp_path, precision: str, extra, n: int, hook=None):
    from conftest import FAST, POINTS, compose
    from ganbench.run.start import prepare

    torch.manual_seed(0)
    start = prepare(compose(FAST + POINTS + [f"train.precision={precision}"] + list(extra)), tmp_path / precision)
    if hook is not None:
        for module in start.game.D.modules():
            if isinstance(module, torch.nn.Linear):
                module.register_forward_hook(hook)
    return torch.stack([start.game.step() for _ in range(n)]), start


@pytest.mark.parametrize("objective", ["vanilla", "dragan", "wgan_gp", "hinge"])
def test_bf16_losses_track_fp32_over_50_steps(tmp_path, objective):
    """The step's statistics (L_D, L_G, penalty, mean D(x), mean D(G(z))) under bf16 stay within 2 % of fp32's
    magnitude (floor 1) at every one of 50 steps; measured on this CPU: at most 0.6 % (the DRAGAN penalty,
    0.047 of 9.3) and 0.5 % of L_D."""
    dtypes = set()
    exact, _ = _steps(tmp_path, "fp32", [f"objective={objective}"], 50)
    low, _ = _steps(tmp_path, "bf16", [f"objective={objective}"], 50, hook=lambda m, i, o: dtypes.add(o.dtype))
    assert torch.bfloat16 in dtypes  # D's products ran in bf16: the run did not silently stay in fp32
    scale = exact.abs().max(0).values.clamp(min=1)
    worst = ((exact - low).abs().max(0).values / scale).max()
    assert 0 < worst < 0.02, worst


def test_fp16_scales_the_losses_and_runs_the_penalty_in_fp32(tmp_path):
    dtypes = []
    stats, start = _steps(tmp_path, "fp16", ["objective=dragan"], 5, hook=lambda m, i, o: dtypes.append(o.dtype))
    assert torch.isfinite(stats).all()
    assert torch.float16 in dtypes and torch.float32 in dtypes  # the losses' D in fp16, the penalty's in fp32
    state = start.game.state_dict()
    assert set(state["scalers"]) == {"D", "G"} and state["scalers"]["D"]["scale"] > 0


def test_fp16_resumes_exactly_with_its_loss_scalers(tmp_path):
    from conftest import POINTS, assert_same_tensors, load_ckpt, run_train

    over = POINTS + ["objective=dragan", "train.precision=fp16", "train.ckpt_every=4"]
    run_train(tmp_path / "straight", over + ["train.iterations=8"])
    run_train(tmp_path / "resumed", over + ["train.iterations=4"])
    run_train(tmp_path / "resumed", over + ["train.iterations=8"])
    a, b = load_ckpt(tmp_path / "straight"), load_ckpt(tmp_path / "resumed")
    for key in ("G", "D", "opt_G", "opt_D", "scalers", "rng"):
        assert_same_tensors(a[key], b[key], key)


@pytest.mark.parametrize("option", [f"objective={o}" for o in sorted(
    p.stem for p in (__import__("pathlib").Path(__file__).resolve().parents[1] / "conf" / "objective").glob("*.yaml"))]
    + [f"penalty={p}" for p in sorted(
        p.stem for p in (__import__("pathlib").Path(__file__).resolve().parents[1] / "conf" / "penalty").glob("*.yaml"))])
def test_bf16_runs_every_objective_and_penalty(tmp_path, option):
    from conftest import POINTS, run_train

    extra = {"penalty=consensus": ["dynamics=simultaneous"], "penalty=weight_clip": ["objective=wgan"]}.get(option, [])
    record = run_train(tmp_path / "run", POINTS + [option, "train.precision=bf16", "train.iterations=3"] + extra)
    assert record["status"] == "completed", record.get("error")


@pytest.mark.parametrize("extra,words", [
    (["dynamics=unrolled"], "dynamics=unrolled does not have"),
    (["dynamics=simultaneous"], "dynamics=simultaneous does not have"),
    (["train.replicas=2"], "N replicas would share"),
])
def test_fp16_refusals(tmp_path, extra, words):
    from conftest import FAST, POINTS, compose
    from ganbench.errors import ConfigError
    from ganbench.run.start import prepare

    with pytest.raises(ConfigError, match=words):
        prepare(compose(FAST + POINTS + ["train.precision=fp16"] + extra), tmp_path / "run")


# ---- evaluation: one copy to the host per evaluation, the reference features uploaded once ----
def test_an_evaluation_reads_the_host_once_whatever_its_batch_count(tmp_path, monkeypatch):
    from test_metrics import ImageData, ImageG, TinyExtractor, make_cfg

    from ganbench.metrics import build_evaluator

    counts = []
    for batch_size in (7, 100):
        cfg = make_cfg(tmp_path / str(batch_size), eval_over={"batch_size": batch_size},
                       metrics_over={"names": ["is", "fid", "kid", "prc", "dc"]})
        ev = build_evaluator(cfg, ImageData(), "cpu", tmp_path / str(batch_size), extractor=TinyExtractor())
        ev.evaluate(ImageG(), step=1, final=False, z_dim=8)  # builds the reference once
        calls = []
        original = torch.Tensor.cpu

        def cpu(self, *args, **kwargs):
            calls.append(1)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "cpu", cpu)
        pool = ev._ref["pool_device"]
        ev.evaluate(ImageG(), step=2, final=False, z_dim=8)
        monkeypatch.undo()
        assert ev._ref["pool_device"] is pool  # the reference features stay on the device between evaluations
        counts.append(len(calls))
    assert counts[0] == counts[1], counts  # 29 batches or 2: the same host reads


# ---- images kept on the host for a GPU run: gathered into pinned memory, copied without waiting ----
def test_host_images_are_gathered_into_pinned_memory_for_cuda(monkeypatch):
    from ganbench.data.images import gather_to

    seen = {}
    empty = torch.empty

    def spy_empty(*args, pin_memory=False, **kwargs):
        seen["pinned"] = pin_memory  # no CUDA here to pin with: record the request, allocate plainly
        return empty(*args, **kwargs)

    tensor_to = torch.Tensor.to

    def spy_to(self, *args, **kwargs):
        target = kwargs.get("device", args[0] if args else None)
        if isinstance(target, torch.device) and target.type == "cuda":
            seen["non_blocking"] = kwargs.get("non_blocking", False)
            seen["copied"] = self
            return self
        return tensor_to(self, *args, **kwargs)

    monkeypatch.setattr(torch, "empty", spy_empty)
    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    data = torch.arange(5 * 2 * 3, dtype=torch.uint8).view(5, 2, 3)
    idx = torch.tensor([[4, 0, 4], [1, 1, 2]])  # Stacked MNIST's (B, 3) digit indices
    out = gather_to(data, idx, torch.device("cuda"))
    monkeypatch.undo()
    assert seen == {"pinned": True, "non_blocking": True, "copied": out}
    assert torch.equal(out, data[idx])
    assert torch.equal(gather_to(data, idx[0], torch.device("cpu")), data[idx[0]])  # on the data's device: a view
