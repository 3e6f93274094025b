"""Shared fixtures of the core-runner tests: composing the real config, tiny in-process runs, a tiny image
folder, and the shared data directory (tests that need it skip with a reason when it is absent)."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The shared read-only data lives next to the repository: ../shared/data.
SHARED_DATA = REPO.parent / "shared" / "data"
VENV_BIN = Path(sys.executable).parent
GANBENCH = VENV_BIN / "ganbench"

# Overrides that make a run tiny and quiet: one thread, no progress bar, no metrics, no evaluation in the loop.
FAST = ["train.progress=false", "threads=1", "eval.every=0", "metrics.names=[]", "device=cpu"]
# A tiny 2-D run: ring8, a small MLP.
POINTS = ["dataset=ring8", "arch=mlp", "arch.width=8", "arch.depth=2", "train.batch_size=16"]


@pytest.fixture(autouse=True)
def _root_log_handlers_restored():
    """A test that runs the CLI in this process leaves Hydra's log handlers on the root logger, bound to the
    test's captured streams; once pytest closes those, every later log line prints '--- Logging error ---' and
    a traceback into another test's stderr. Each test gets the root handlers it started with (pytest's own
    capture handlers are left to pytest)."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in before and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
            handler.close()
    for handler in before:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test with a reason naming the missing path."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data file {path} is absent (expected at ../shared/data relative to the repository)")
    return path


def compose(overrides: Sequence[str] = ()) :
    """The composed config for ``overrides`` (as the CLI composes it, without the hydra node)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    import ganbench.cli as cli  # registers the gb.dirname resolver

    with initialize_config_dir(cli.config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=False)


def run_train(run_dir: Path, overrides: Sequence[str], fast: bool = True) -> Dict:
    """Compose ``overrides`` (after FAST) and train in-process in ``run_dir``; returns the results record."""
    from ganbench.run.loop import train

    overrides = (FAST if fast else []) + list(overrides)
    cfg = compose(overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    return train(cfg, run_dir, list(overrides))


def results(run_dir: Path) -> Dict:
    return json.loads((run_dir / "results.json").read_text())


def load_ckpt(run_dir: Path) -> Dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


def assert_same_tensors(a, b, path: str = "") -> None:
    """Bit-identical nested state (dicts/lists of tensors and numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs (max abs diff {(a.double() - b.double()).abs().max().item()})"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def scalar_events(run_dir: Path) -> Dict[str, List[int]]:
    """tag -> list of steps of the scalar events, as TensorBoard reads them (purge_step applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def all_tags(run_dir: Path) -> Dict[str, List[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc.Tags()


def write_image_folder(root: Path, n: int = 32, side: int = 16) -> Path:
    """``n`` random RGB PNGs of ``side``×``side`` in ``root`` (two sub-folders, as users' folders nest)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """32 random 16×16 PNGs (session-wide; read-only for the tests)."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "imgs")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """A dataset.root of the tests' own, so that decode caches never land in the user's ~/.cache."""
    return tmp_path_factory.mktemp("data_root")


@pytest.fixture
def image_overrides(image_folder, data_cache) -> List[str]:
    """A tiny DCGAN on the tiny image folder (16×16, width 4, z_dim 8)."""
    return ["dataset=folder", f"dataset.path={image_folder}", "dataset.resolution=16", f"dataset.root={data_cache}",
            "dataset.decode_workers=1", "arch=dcgan", "arch.width=4", "arch.z_dim=8", "train.batch_size=8",
            "train.sample_grid=4"]


def cli_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for CLI subprocesses: one thread, no inherited HYDRA_FULL_ERROR."""
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


_SERVERS = None


def ganbench_servers():
    """This test process's servers of ``ganbench`` command lines, forks of a process that imported ganbench once
    (tests/cli_server.py); started on first use, closed at exit. Each child is a real process (pid, cwd, env,
    exit status, SIGKILL) without the 3-8 CPU-s of imports; one more server starts while all are busy. For tests
    of what a run does; tests of the console script's own start (tests/test_cli.py's quick cases, test_train's
    SIGKILL resume) run the installed script."""
    global _SERVERS
    if _SERVERS is None:
        import atexit

        from cli_server import CLIServers

        _SERVERS = CLIServers(1, cli_env(), str(GANBENCH))
        atexit.register(_SERVERS.close)
    return _SERVERS


def ganbench_run(args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None, timeout: float = 600):
    """``ganbench *args`` to its end, as ``subprocess.run(..., capture_output=True, text=True)``."""
    return ganbench_servers().run(list(args), cwd, env or cli_env(), timeout)


def ganbench_popen(args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None):
    """``ganbench *args`` started: ``.pid``, ``.poll()``, ``.wait()``, as a Popen (its output once it ended)."""
    return ganbench_servers().popen(list(args), cwd, env or cli_env())


def kill_after_checkpoint(proc, ckpt: Path, min_step: int, timeout: float = 300) -> int:
    """SIGKILL the training process ``proc`` once its checkpoint ``ckpt`` holds step >= ``min_step``;
    returns that step. Fails when the run ends first (make it longer)."""
    import signal
    import time

    deadline, step = time.time() + timeout, 0
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                step = torch.load(ckpt, map_location="cpu", weights_only=True)["step"]
            except Exception:  # noqa: BLE001 - read while being replaced: try again
                step = 0
            if step >= min_step:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed (make it longer)"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return step


# The modules that take longest, in the order of their time in a full run of `bash .ci/run` (2026-12-07, 2 cores,
# worker-seconds: the quickstart's seed-0 run ~350; compile ~400 with torch's compile cache empty, as on a fresh
# machine; SLURM ~280, search ~225, replicas ~220, sweeps ~170, metrics ~140, archs ~120, cli ~110, the bad-input
# corpus ~105, train ~95; measured at de0b6cd, before a149d8e and fb1bcf5 shortened the SLURM, search, sweeps, cli
# and metrics modules and moved the digit classifier's training to test_mnist_is). pyproject's
# --no-loadscope-reorder makes xdist hand modules out in this order, one at a time to whichever worker is free, so
# that the workers end together instead of one starting a 5-minute module when the rest is done.
FIRST = ("test_quickstart.py", "test_compile.py", "test_slurm.py", "test_search.py", "test_replicas.py",
         "test_sweeps.py", "test_metrics.py", "test_sn.py", "test_mnist_is.py", "test_archs.py", "test_cli.py",
         "test_bad_inputs.py", "test_train.py", "test_gmm.py", "test_bad_starts.py", "test_dragan_presets.py",
         "test_rundir.py", "test_device_placement.py", "test_gpu_path.py", "test_catalogue_resume.py")


def pytest_addoption(parser):
    parser.addoption("--quickstart-seeds", default="0",
                     help="seeds of tests/test_quickstart.py's full quickstart runs, e.g. 0-4 (default 0: the "
                          "README's command; each is ~290 s of a CPU core)")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: the rest keeps its order
