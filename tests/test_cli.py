"""The ``ganbench`` console script: one-line errors before anything is written, the composed configs of every
objective, and an installed (non-editable) wheel that finds its configs from any directory."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest
from omegaconf import OmegaConf

from conftest import GANBENCH, REPO, cli_env, compose, ganbench_run

# (overrides, key the message must name, words it must also contain: the allowed values where applicable)
BAD_INPUTS = {
    "objective": (["objective=foo"], "objective", ["foo", "dragan", "hinge", "lsgan", "minimax", "vanilla", "wgan", "wgan_gp"]),
    "arch": (["arch=foo"], "arch", ["foo", "dcgan", "mlp"]),
    "penalty": (["penalty=foo"], "penalty", ["foo", "dragan", "none", "r1", "weight_clip", "wgan_gp"]),
    "dataset": (["dataset=foo"], "dataset", ["foo", "ring8", "cifar10", "folder"]),
    "unknown_key": (["train.foo=1"], "train.foo", []),
    "type": (["train.batch_size=abc"], "train.batch_size", ["abc"]),
    "batch_size": (["train.batch_size=0"], "train.batch_size", [">= 1"]),
    "n_dis": (["objective.n_dis=0"], "objective.n_dis", [">= 1"]),
    "lr_g": (["optimizer.g.lr=0"], "optimizer.g.lr", ["> 0"]),
    "lr_d": (["optimizer.d.lr=-1"], "optimizer.d.lr", ["> 0"]),
    "k": (["objective=dragan", "penalty.k=-1"], "penalty.k", [">= 0"]),
    "form": (["objective=dragan", "penalty.form=foo"], "penalty.form", ["centered", "squared", "hinge"]),
    "noise": (["objective=dragan", "penalty.noise=bar"], "penalty.noise", ["reference", "gaussian"]),
    "device": (["device=tpu"], "device", ["tpu", "auto", "cpu", "cuda"]),
    "seed": (["seed=-1"], "seed", ["-1"]),
    "folder_path": (["dataset=folder"], "dataset.path", []),
    "g_average": (["train.g_average=swa"], "train.g_average", ["none", "ema", "uniform"]),
}


def run_cli(args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None,
            exe: Optional[List[str]] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = (exe or [str(GANBENCH)]) + list(args)
    return subprocess.run(cmd, cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout)


# Run by default: the composition errors (no torch import, fast) and two of the validation errors. The other
# validation errors are checked in-process below (same message), and as forks of the CLI in the slow set.
QUICK = ("objective", "arch", "penalty", "dataset", "unknown_key", "type", "k")


def _run_bad(names, base, run=None):
    """Each bad input once, in parallel: name -> (run dir it must not create, completed process). ``run``:
    how a command line runs (default: the installed console script)."""

    def one(name):
        run_dir = base / name / "run"
        given = BAD_INPUTS[name][0]
        # Small toy defaults, unless the case sets that group itself (a repeated group override is not an
        # error in Hydra: the last one wins).
        extra = [o for o in ("dataset=ring8", "arch=mlp") if not any(g.startswith(o.split("=")[0] + "=") for g in given)]
        return name, (run_dir, (run or run_cli)(given + extra + [f"hydra.run.dir={run_dir}"], cwd=base))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, names))


@pytest.fixture(scope="module")
def bad_runs_quick(tmp_path_factory):
    return _run_bad(QUICK, tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def bad_runs_slow(tmp_path_factory):
    """The other validation errors, each a fork of a process that imported ganbench once (conftest.ganbench_run:
    the same ``main``, exit status and streams, without ~4 CPU-s of imports each); QUICK runs the console script."""
    return _run_bad([n for n in BAD_INPUTS if n not in QUICK], tmp_path_factory.mktemp("bad_slow"), ganbench_run)


def check_one_line(name, run_dir, proc):
    _, key, words = BAD_INPUTS[name]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("ganbench: error: "), line
    assert key in line, line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"
    # Validation runs before Hydra creates the run directory.
    assert not run_dir.exists() and not run_dir.parent.exists()


@pytest.mark.parametrize("name", QUICK)
def test_bad_input_is_one_line(bad_runs_quick, name):
    check_one_line(name, *bad_runs_quick[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in BAD_INPUTS if n not in QUICK])
def test_bad_input_is_one_line_all(bad_runs_slow, name):
    check_one_line(name, *bad_runs_slow[name])


@pytest.mark.parametrize("name", [n for n in BAD_INPUTS if n not in ("objective", "arch", "penalty", "dataset",
                                                                      "unknown_key")])
def test_bad_value_message_in_process(name):
    """The validation the CLI runs before creating the run directory, and the line it prints."""
    from ganbench.cli import one_line_error, validate_task
    from ganbench.errors import GanbenchError

    given, key, words = BAD_INPUTS[name]
    extra = [o for o in ("dataset=ring8", "arch=mlp") if not any(g.startswith(o.split("=")[0] + "=") for g in given)]
    with pytest.raises(Exception) as info:
        validate_task(compose(given + extra))
    line = one_line_error(info.value)
    assert isinstance(info.value, GanbenchError) or name == "type", repr(info.value)
    assert "\n" not in line and key in line, line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"


def test_full_error_shows_traceback(tmp_path):
    env = cli_env({"HYDRA_FULL_ERROR": "1"})
    procs = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for args in (["objective=foo"], ["train.batch_size=0", "dataset=ring8", "arch=mlp"]):
            procs[args[0]] = pool.submit(run_cli, args + [f"hydra.run.dir={tmp_path}/run"], tmp_path, env)
    for name, future in procs.items():
        proc = future.result()
        assert proc.returncode != 0, name
        assert "Traceback" in proc.stderr, name
    assert "ConfigError" in procs["train.batch_size=0"].result().stderr
    assert not (tmp_path / "run").exists()


def test_cfg_job_from_another_directory(tmp_path):
    proc = run_cli(["--cfg", "job", "objective=dragan"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.objective.n_dis == 1 and cfg.objective.name == "dragan" and cfg.objective.loss == "nonsaturating"
    assert cfg.penalty.name == "dragan" and cfg.penalty.lambda_ == 10.0 and cfg.penalty.k == 1.0
    assert cfg.optimizer.name == "adam"
    assert cfg.optimizer.g.lr == 1e-4 and cfg.optimizer.d.lr == 1e-4
    assert list(cfg.optimizer.g.betas) == [0.5, 0.9] and list(cfg.optimizer.d.betas) == [0.5, 0.9]
    assert not any(tmp_path.iterdir())  # --cfg writes nothing


# objective -> (loss, penalty, n_dis, optimizer, lr, betas or None, penalty checks)
OBJECTIVES = {
    "vanilla": ("nonsaturating", "none", 1, "adam", 2e-4, [0.5, 0.999], {}),
    "minimax": ("minimax", "none", 1, "adam", 2e-4, [0.5, 0.999], {}),
    "dragan": ("nonsaturating", "dragan", 1, "adam", 1e-4, [0.5, 0.9],
               {"lambda_": 10.0, "k": 1.0, "form": "centered", "noise": "reference", "scale": 0.5, "c": 10.0}),
    "wgan": ("wasserstein", "weight_clip", 5, "rmsprop", 5e-5, None, {"clip": 0.01}),
    "wgan_gp": ("wasserstein", "wgan_gp", 5, "adam", 1e-4, [0.5, 0.9], {"lambda_": 10.0, "k": 1.0}),
    "lsgan": ("least_squares", "none", 1, "adam", 2e-4, [0.5, 0.999], {}),
    "hinge": ("hinge", "none", 1, "adam", 2e-4, [0.5, 0.999], {}),
}


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_objective_defaults(objective):
    loss, penalty, n_dis, opt, lr, betas, pen_values = OBJECTIVES[objective]
    cfg = OmegaConf.to_container(compose([f"objective={objective}"]), resolve=True)
    assert cfg["objective"]["name"] == objective and cfg["objective"]["loss"] == loss
    assert cfg["objective"]["n_dis"] == n_dis
    assert cfg["penalty"]["name"] == penalty
    for key, value in pen_values.items():
        assert cfg["penalty"][key] == value, key
    assert cfg["optimizer"]["name"] == opt
    for player in ("g", "d"):
        assert cfg["optimizer"][player]["lr"] == lr
        if betas is not None:
            assert cfg["optimizer"][player]["betas"] == betas
    if objective == "lsgan":
        assert (cfg["objective"]["a"], cfg["objective"]["b"], cfg["objective"]["c"]) == (0.0, 1.0, 1.0)
    # ... and the composed config validates into the right objects.
    from ganbench.config import validate
    from ganbench.objectives import LOSSES
    from ganbench.penalties import PENALTIES

    spec = validate(compose([f"objective={objective}"]))
    assert type(spec.loss) is LOSSES[loss] and type(spec.penalty) is PENALTIES[penalty] and spec.n_dis == n_dis


def test_overrides_compose():
    cfg = compose(["objective=dragan", "penalty=none"])
    assert cfg.penalty.name == "none" and cfg.objective.name == "dragan"
    cfg = compose(["objective=lsgan", "penalty=dragan"])
    assert cfg.penalty.name == "dragan" and cfg.objective.loss == "least_squares"
    cfg = compose(["objective=wgan", "optimizer=adam"])
    assert cfg.optimizer.name == "adam" and cfg.optimizer.g.lr == 5e-5 and cfg.penalty.name == "weight_clip"
    cfg = compose(["objective=vanilla", "optimizer.g.lr=3e-4"])
    assert cfg.optimizer.g.lr == 3e-4 and cfg.optimizer.d.lr == 2e-4
    assert list(cfg.optimizer.g.betas) == [0.5, 0.999]
    cfg = compose(["objective=dragan", "objective.lr=3e-4"])
    assert cfg.optimizer.g.lr == 3e-4 and cfg.optimizer.d.lr == 3e-4
    cfg = compose(["objective=lsgan", "objective.a=-1", "objective.c=0"])
    from ganbench.config import validate

    loss = validate(cfg).loss
    assert (loss.a, loss.b, loss.c) == (-1.0, 1.0, 0.0)


def _source_copy(dest: Path) -> Path:
    """The repository's files as git sees them (tracked + untracked, not ignored), without build leftovers:
    building here keeps build/ and *.egg-info out of the shared working tree."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        src = REPO / rel
        if src.is_file() and not rel.startswith("tests/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.slow
def test_installed_wheel(tmp_path):
    src = _source_copy(tmp_path / "src")
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
                   check=True, capture_output=True, cwd=tmp_path, timeout=300)
    (wheel,) = wheels.glob("ganbench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # Every config file of conf/ is inside the wheel, as ganbench/conf/...
    missing = [str(p.relative_to(src / "conf")) for p in sorted((src / "conf").rglob("*.yaml"))
               if f"ganbench/conf/{p.relative_to(src / 'conf').as_posix()}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    assert "ganbench/conf/config.yaml" in names
    site = tmp_path / "site"
    subprocess.run(pip + ["install", "--no-deps", "-q", "--target", str(site), str(wheel)], check=True,
                   capture_output=True, cwd=tmp_path, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env({"PYTHONPATH": str(site)})
    where = subprocess.run([sys.executable, "-c", "import ganbench, ganbench.cli as c; print(ganbench.__file__); "
                            "print(c.config_dir())"], cwd=elsewhere, env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert Path(where[0]).resolve().is_relative_to(site.resolve()), where
    assert Path(where[1]).resolve() == (site / "ganbench" / "conf").resolve()
    # The venv's console script, with the installed copy first on the path.
    proc = run_cli(["--cfg", "job", "objective=wgan_gp"], elsewhere, env)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.objective.name == "wgan_gp" and cfg.penalty.name == "wgan_gp" and cfg.objective.n_dis == 5
    proc = run_cli(["objective=foo", f"hydra.run.dir={tmp_path}/run"], elsewhere, env,
                   exe=[sys.executable, "-m", "ganbench.cli"])
    assert proc.returncode != 0 and proc.stderr.startswith("ganbench: error: objective: unknown option 'foo'")


def test_run_dirname_is_safe_readable_and_unique():
    from ganbench.run.names import run_dirname

    assert run_dirname("") == "default"
    a = run_dirname("dataset.path=../shared/data/cifar10-jpeg.tar.gz,dataset=folder,objective=dragan")
    b = run_dirname("dataset.path=/elsewhere/cifar10-jpeg.tar.gz,dataset=folder,objective=dragan")
    for name in (a, b):
        assert "/" not in name and ".." not in name
        assert name.startswith("dataset.path=cifar10-jpeg.tar.gz@") and name.endswith(",dataset=folder,objective=dragan")
    assert a != b  # same file name, different paths: different runs
    long = run_dirname(",".join(f"train.key{i}=value{i}" for i in range(40)))
    assert len(long) <= 200 and long != run_dirname(",".join(f"train.key{i}=value{i}" for i in range(41)))
    # Cut at a key boundary (never inside key=value), with how many items were left out and a hash.
    from ganbench.run.names import MAX_NAME

    assert len(long) <= MAX_NAME and long.startswith("train.key0=value0,train.key1=value1,")
    kept, tail = long.rsplit(",+", 1)
    assert all(item.split("=")[1] == f"value{i}" for i, item in enumerate(kept.split(",")))
    assert tail.split("__")[0] == str(40 - len(kept.split(",")))
    short = "arm=vanilla,compare.eval_every=2500,dataset.root=data,dataset.split=test"
    assert run_dirname(short) == short  # names up to MAX_NAME are unchanged
