"""train.compile: the compiled D and G steps (gradient penalties included) give eager's results."""
import logging

import pytest
import torch

from conftest import FAST, POINTS, compose, load_ckpt, run_train

from ganbench.errors import ConfigError


def _has_compiler() -> bool:
    import shutil

    return shutil.which("g++") is not None or shutil.which("c++") is not None


needs_compiler = pytest.mark.skipif(not _has_compiler(), reason="torch.compile on CPU needs a C++ compiler")


def test_input_gradient_by_vjp_equals_autograd():
    """The compiled path's torch.func.vjp gives autograd's input gradient and parameter gradients."""
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    x = torch.randn(32, 2)

    def by_vjp():
        xx = x.detach().requires_grad_(True)
        out, vjp = torch.func.vjp(lambda v: D(v).squeeze(-1), xx)
        return vjp(torch.ones_like(out))[0]

    xa = x.clone().requires_grad_(True)
    a = torch.autograd.grad(D(xa).squeeze(-1).sum(), xa, create_graph=True)[0]
    b = by_vjp()
    assert torch.allclose(a, b, atol=1e-7)
    params = list(D.parameters())[:-1]  # the output bias does not enter ∇ₓD
    ga = torch.autograd.grad(a.norm(dim=1).sum(), params)
    gb = torch.autograd.grad(b.norm(dim=1).sum(), params)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(ga, gb))


@needs_compiler
@pytest.mark.parametrize("objective", ["dragan", "wgan_gp"])
def test_compiled_objective_and_gradients_equal_eager(tmp_path, objective):
    """From one state, the compiled D step's losses and parameter gradients equal eager's (1e-6)."""
    from ganbench.run.start import prepare

    game = prepare(compose(FAST + POINTS + [f"objective={objective}"]), tmp_path / "run").game
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    results = []
    for compile_now in (False, True):
        if compile_now:
            game.compile_steps()
        torch.manual_seed(3)  # the penalty's noise: the same draws (inductor falls back to eager's RNG)
        d_loss, pen, _, _ = game.d_objective(real, fake, True)
        grads = torch.autograd.grad(d_loss + pen, list(game.D.parameters()), allow_unused=True)
        results.append((d_loss, pen, grads))
    (a, p, ga), (b, q, gb) = results
    assert pen.item() > 0 and torch.allclose(a, b, rtol=1e-6, atol=1e-7) and torch.allclose(p, q, rtol=1e-6)
    for x, y in zip(ga, gb):
        if x is not None:
            assert torch.allclose(x, y, rtol=1e-6, atol=1e-6 * x.abs().max().item())


# Adam divides each gradient element by its running RMS: an element whose gradient is rounding noise
# (measured: 1e-9 where the layer's others are 1e-2, a WGAN-GP critic's cancelling terms) moves by ~lr
# either way, so two correct programs whose sums round differently part by ~lr after the first such step.
# Over 20 steps compiled equals eager to 1e-6 for DRAGAN with its Adam recipe; for WGAN-GP (5 critic steps
# per generator step) the trajectory is compared under SGD, which does not amplify rounding noise.
TRAJECTORIES = {"dragan": ["objective=dragan"], "wgan_gp_sgd": ["objective=wgan_gp", "optimizer=sgd"]}


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(TRAJECTORIES))
def test_compiled_steps_equal_eager_over_20_steps(tmp_path, case, caplog):
    over = POINTS + TRAJECTORIES[case] + ["train.iterations=20", "train.ckpt_every=20", "train.log_every=10"]
    run_train(tmp_path / "eager", over)
    with caplog.at_level(logging.INFO, logger="ganbench"):
        run_train(tmp_path / "compiled", over + ["train.compile=true"])
    assert "train.compile: D step compiled in" in caplog.text and "G step compiled in" in caplog.text
    a, b = load_ckpt(tmp_path / "eager"), load_ckpt(tmp_path / "compiled")
    for side in ("G", "D"):
        scale = max(t.abs().max().item() for t in a[side].values())
        for key in a[side]:
            assert (a[side][key] - b[side][key]).abs().max().item() <= 1e-6 * scale, (side, key)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])  # the same random numbers were drawn


def test_compile_is_refused_where_no_compiled_step_exists(tmp_path):
    from ganbench.run.start import prepare

    for dyn in ("unrolled", "simultaneous"):
        with pytest.raises(ConfigError, match=f"train.compile: dynamics={dyn} has no compiled step"):
            prepare(compose(FAST + POINTS + [f"dynamics={dyn}", "train.compile=true"]), tmp_path / dyn)
    with pytest.raises(ConfigError, match="train.compile: with train.replicas, the compiled replicated step"):
        prepare(compose(FAST + POINTS + ["train.compile=true", "train.replicas=2", "arch.d.spectral_norm=true"]),
                tmp_path / "r")


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("objective", ["dragan", "vanilla"])
def test_compiled_replicas_equal_eager_replicas(tmp_path, objective):
    """train.compile with train.replicas=10 (the toy comparison's layout): 20 steps from one seed give G and D
    within 1e-6 of the eager replicated step (measured: 3e-8)."""
    from ganbench.run.start import prepare

    def params(extra):
        torch.manual_seed(0)
        start = prepare(compose(FAST + POINTS + [f"objective={objective}", "train.replicas=10"] + extra),
                        tmp_path / ("c" if extra else "e") / "seed=0")
        for _ in range(20):
            start.game.step()
        return torch.cat([p.detach().flatten() for p in list(start.game.G.parameters())
                          + list(start.game.D.parameters())])

    assert (params([]) - params(["train.compile=true"])).abs().max() < 1e-6


# ---------------------------------------------------------------- Inductor's caches in a private folder
# torch unpickles its FX-graph and AOTAutograd caches and loads compiled kernels from its cache folder, by default
# /tmp/torchinductor_<user>, which anyone can create first. These tests compile nothing: they check where the
# caches go and that the folder is the user's alone.

@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("GANBENCH_CACHE", str(tmp_path / "gb"))
    # What importing torch._dynamo leaves in the environment: torch's /tmp default, not a choice of the user.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    return tmp_path / "gb" / "inductor"


def test_compiled_steps_keep_inductor_caches_in_a_private_folder(private_cache):
    import os
    import stat

    import torch._inductor.config as inductor
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from ganbench.compiled import OPTIONS, compiled

    compiled(lambda x: x + 1, "test")   # wrapping compiles nothing yet
    st = os.lstat(private_cache)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(private_cache) == cache_dir()
    # The options go to these functions only: nothing process-wide changes.
    assert inductor.fallback_random is False and inductor.cpp_cache_precompile_headers is True
    assert OPTIONS == {"fallback_random": True, "cpp_cache_precompile_headers": False}


def test_inductor_folder_writable_by_others_is_emptied(private_cache):
    import os

    from ganbench.compiled import compiled

    private_cache.mkdir(parents=True)
    private_cache.chmod(0o777)
    (private_cache / "fxgraph").mkdir()
    (private_cache / "fxgraph" / "planted").write_bytes(b"a pickle someone else wrote")
    compiled(lambda x: x + 1, "test")
    assert os.stat(private_cache).st_mode & 0o777 == 0o700 and list(private_cache.iterdir()) == []
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(private_cache)


def test_a_torchinductor_cache_dir_others_can_write_is_refused(tmp_path, private_cache, monkeypatch):
    from ganbench.errors import GanbenchError
    from ganbench.run.start import prepare

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(shared))
    with pytest.raises(GanbenchError) as info:
        prepare(compose(FAST + POINTS + ["train.compile=true"]), tmp_path / "run")
    assert str(info.value).startswith(f"train.compile: TORCHINDUCTOR_CACHE_DIR={shared} is writable by others")
    assert "\n" not in str(info.value)
    # A folder of the user's own choosing that only the user can write is used as it is.
    shared.chmod(0o700)
    from ganbench.compiled import inductor_cache

    assert inductor_cache() == str(shared) and not private_cache.exists()


@pytest.mark.parametrize("value,graphs", [("true", False), ("reduce-overhead", True)])
def test_reduce_overhead_adds_cuda_graphs_to_the_compiled_steps(tmp_path, monkeypatch, value, graphs):
    """train.compile=reduce-overhead compiles as true does, with Inductor's CUDA graphs (torch's mode of that
    name; ganbench passes options, and torch takes a mode or options, not both). torch.compile is observed, not
    run: what it is asked for is the point."""
    import ganbench.compiled as compiled_mod
    from ganbench.run.start import prepare

    asked = []

    def spy(fn, **kwargs):
        asked.append(kwargs)
        return fn

    monkeypatch.setattr(compiled_mod.torch, "compile", spy)
    start = prepare(compose(FAST + POINTS + [f"train.compile={value}"]), tmp_path / "run")
    start.game.step()
    assert len(asked) == 2  # the D and the G objective
    for kwargs in asked:
        assert "mode" not in kwargs and kwargs["options"]["fallback_random"] is True
        assert kwargs["options"].get("triton.cudagraphs", False) is graphs


def test_compile_takes_three_values(tmp_path):
    from ganbench.run.start import prepare

    with pytest.raises(ConfigError, match="train.compile: must be false, true or reduce-overhead"):
        prepare(compose(FAST + POINTS + ["train.compile=fast"]), tmp_path / "run")
