"""A corpus of bad command lines given to the installed ``ganbench``: each must give exactly one stderr line
``ganbench: error: ...`` naming the key or path (and what is allowed), a non-zero exit, no traceback, and
leave a finished run directory byte-identical (no file changed, added or removed).

Each case that targets the finished run gets its own copy of that run (copied bytes, same config), so the
cases can run in parallel and a change is blamed on the case that made it.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from conftest import FAST, GANBENCH, POINTS, cli_env, ganbench_run

UNSAFE = re.compile(r"weights_only\W*(?:set to\W*|=\W*)?False", re.I)
# The finished run: the tiny 2-D run, 20 generator steps.
BASE = POINTS + FAST + ["train.iterations=20"]


@dataclass(frozen=True)
class Case:
    """``args`` after ``BASE`` (``where="run"``: in a copy of the finished run; ``"fresh"``: in a new
    directory), or alone (``"raw"``: the case sets everything itself, e.g. -m or --cfg). ``{run}``,
    ``{fresh}``, ``{tmp}``, ``{text}``, ``{pickle}``, ``{ckpt}``, ``{file}`` and ``{emptydir}`` are
    filled in by the fixture. ``expect``: substrings the error line must contain."""

    id: str
    args: Tuple[str, ...]
    expect: Tuple[str, ...]
    where: str = "run"


def case(id: str, args, *expect: str, where: str = "run") -> Case:
    return Case(id, tuple([args] if isinstance(args, str) else args), expect, where)


CASES: List[Case] = [
    # ---- unknown group options: Hydra composition, before the app ----
    case("group-dataset", "dataset=foo", "dataset", "'foo'", "ring8", "folder"),
    case("group-arch", "arch=foo", "arch", "'foo'", "dcgan", "mlp"),
    case("group-objective", "objective=foo", "objective", "'foo'", "dragan", "wgan_gp"),
    case("group-penalty", "penalty=foo", "penalty", "'foo'", "r1", "weight_clip"),
    case("group-optimizer", "optimizer=foo", "optimizer", "'foo'", "adam", "rmsprop", "sgd"),
    case("group-eval", "eval=foo", "eval", "'foo'", "default"),
    case("group-metrics", "metrics=foo", "metrics", "'foo'", "default"),
    case("group-experiment", "experiment=nonexistent", "experiment", "'nonexistent'", "quickstart", "gmm_heatmap"),
    case("group-typo", "dataset=fodler", "dataset", "'fodler'", "did you mean 'folder'"),
    case("group-launcher", "hydra/launcher=foo", "hydra/launcher", "'foo'", "slurm"),
    # ---- mistyped keys at every level: Hydra's "Could not override" ----
    case("key-train", "train.iteration=5", "train.iteration", "did you mean 'iterations'", "batch_size"),
    case("key-objective", "objective.lamda=1", "objective.lamda", "n_dis"),
    case("key-penalty", "penalty.lambda=1", "penalty.lambda", "did you mean 'lambda_'"),
    case("key-arch", "arch.widht=8", "arch.widht", "did you mean 'width'", "depth"),
    case("key-dataset", "dataset.pth=x", "dataset.pth", "radius", "std"),
    case("key-dataset-folder", ["dataset=folder", "dataset.pth=x"], "dataset.pth", "did you mean 'path'"),
    case("key-top", "sed=1", "sed", "did you mean 'seed'"),
    case("key-top-group", "objectve=wgan", "objectve", "did you mean 'objective'"),
    case("key-eval", "eval.evry=1", "eval.evry", "did you mean 'every'", "num_samples"),
    case("key-metrics", "metrics.name=[]", "metrics.name", "did you mean 'names'"),
    case("key-optimizer-g", "optimizer.g.lrr=0.1", "optimizer.g.lrr", "did you mean 'lr'", "betas"),
    case("key-gmm", ["experiment=gmm_heatmap", "gmm.lrr=0.1"], "gmm.lrr", "did you mean 'lr'"),
    case("key-gmm-init", ["experiment=gmm_trajectory", "gmm.init.m=[0,1]"], "gmm.init.m", "mu", "l", "r"),
    # ---- mistyped keys added with '+': ganbench's own schema validation ----
    case("plus-train", "+train.iteration=5", "train.iteration", "did you mean 'iterations'", "batch_size"),
    case("plus-objective", "+objective.lamda=1", "objective.lamda", "n_dis"),
    case("plus-penalty", "+penalty.lambda=1", "penalty.lambda", "did you mean 'lambda_'"),
    case("plus-arch", "+arch.widht=8", "arch.widht", "did you mean 'width'"),
    case("plus-optimizer", "+optimizer.g.lrr=0.1", "optimizer.g.lrr", "did you mean 'lr'"),
    case("plus-optimizer-top", "+optimizer.lr=0.1", "optimizer.lr", "name, g, d"),
    case("plus-gmm", ["experiment=gmm_heatmap", "+gmm.lrr=0.1"], "gmm.lrr", "did you mean 'lr'"),
    # ---- wrong types ----
    case("type-iterations", "train.iterations=abc", "train.iterations", "'abc'", "integer"),
    case("type-iterations-empty", "train.iterations=", "train.iterations", "integer"),
    case("type-batch-float", "train.batch_size=1.5", "train.batch_size", "1.5", "integer"),
    case("type-progress", "train.progress=maybe", "train.progress", "'maybe'", "true or false"),
    case("type-seed-neg", "seed=-1", "seed", "-1", "non-negative integer"),
    case("type-seed-str", "seed=abc", "seed", "'abc'", "non-negative integer"),
    case("type-n-dis", "objective.n_dis=1.5", "objective.n_dis", "1.5", "integer"),
    case("type-betas", "objective.betas=0.5", "objective.betas", "0.5"),
    case("type-arch-width", "arch.width=abc", "arch.width", "'abc'", "integer"),
    case("type-radius", "dataset.radius=abc", "dataset.radius", "'abc'", "number"),
    # ---- out-of-range values ----
    case("range-batch", "train.batch_size=0", "train.batch_size", ">= 1"),
    case("range-iterations", "train.iterations=0", "train.iterations", ">= 1"),
    case("range-ema-beta", "train.ema_beta=1", "train.ema_beta", "(0, 1)"),
    case("range-g-average", "train.g_average=swa", "train.g_average", "none, ema, uniform"),
    case("range-replicas", "train.replicas=0", "train.replicas", ">= 1"),
    case("range-hq-test", "metrics.hq_test=cosine", "metrics.hq_test", "euclidean", "mahalanobis"),
    case("range-mode-min-count", "metrics.mode_min_count=0", "metrics.mode_min_count", ">= 1"),
    case("range-rkl-empty", "metrics.reverse_kl_empty=zero", "metrics.reverse_kl_empty", "skip", "smooth"),
    case("range-pack", "pack=0", "pack", ">= 1"),
    case("unknown-arm", "arm=pacgan3", "arm", "pacgan2"),
    case("range-lr", "objective.lr=0", "objective.lr", "> 0"),
    case("range-betas", "objective.betas=[0.5,1.0]", "objective.betas", "[0, 1)"),
    case("range-betas-len", "objective.betas=[0.5]", "objective.betas", "two numbers"),
    case("range-n-dis", "objective.n_dis=0", "objective.n_dis", ">= 1"),
    case("range-loss", "objective.loss=foo", "objective.loss", "'foo'", "wasserstein"),
    case("range-opt-lr", "optimizer.g.lr=-1", "optimizer.g.lr", "> 0"),
    case("range-opt-wd", "optimizer.d.weight_decay=-1", "optimizer.d.weight_decay", ">= 0"),
    case("range-nesterov", ["optimizer=sgd", "optimizer.g.nesterov=true"], "optimizer.g.nesterov", "momentum"),
    case("range-penalty-every", "penalty.every=0", "penalty.every", ">= 1"),
    case("range-penalty-form", "penalty.form=foo", "penalty.form", "'foo'", "centered", "squared", "hinge"),
    case("range-penalty-noise", "penalty.noise=bar", "penalty.noise", "'bar'", "reference", "gaussian"),
    case("range-penalty-k", "penalty.k=-1", "penalty.k", ">= 0"),
    case("range-r1-on", ["penalty=r1", "penalty.on=both"], "penalty.on", "real", "fake"),
    case("range-clip", ["objective=wgan", "penalty.clip=0"], "penalty.clip", "> 0"),
    case("range-lsgan-a", ["objective=lsgan", "objective.a=abc"], "objective.a", "'abc'"),
    case("range-arch-depth", "arch.depth=0", "arch.depth", ">= 1"),
    case("range-arch-activation", "arch.activation=foo", "arch.activation", "'foo'", "relu", "tanh"),
    case("range-dataset-std", "dataset.std=0", "dataset.std", "> 0"),
    case("range-eval-samples", "eval.num_samples=0", "eval.num_samples", ">= 1"),
    case("range-eval-every", "eval.every=-1", "eval.every", ">= 0"),
    case("range-eval-reference", "eval.reference=val", "eval.reference", "'val'", "train", "test"),
    case("range-metrics-names", "metrics.names=[bogus]", "metrics.names", "'bogus'", "fid", "modes"),
    case("range-metrics-names-str", "metrics.names=bogus", "metrics.names", "'bogus'", "auto"),
    case("range-metrics-image-on-points", "metrics.names=[fid]", "metrics", "fid", "ring8"),
    case("range-mode-samples", "metrics.mode_samples=10", "metrics.mode_samples", "2500"),
    case("range-task", "task=foo", "task", "'foo'", "gan", "gmm"),
    # ---- device and threads (this machine has no CUDA and no MPS) ----
    case("device-tpu", "device=tpu", "device", "tpu", "auto", "cpu", "cuda"),
    case("device-cuda", "device=cuda", "device", "cuda", "not available", "cpu"),
    case("device-mps", "device=mps", "device", "mps", "not available", "cpu"),
    case("device-cuda-n", "device=cuda:x", "device", "cuda:x", "cuda:N"),
    case("threads-zero", "threads=0", "threads", ">= 1", "auto"),
    case("threads-str", "threads=many", "threads", "'many'", "auto"),
    # ---- Hydra syntax ----
    case("syntax-bracket", "objective=[a", "objective=[a", "quote"),
    case("syntax-double-eq", "a=b=c", "a=b=c", "quote"),
    case("syntax-sweep-without-m", "objective=dragan,wgan", "objective=dragan,wgan", "-m"),
    case("syntax-interpolation", "train.iterations=${nope}", "train.iterations", "nope"),
    case("syntax-no-equals", "train.iterations", "'train.iterations'", "key=value"),
    case("syntax-quote", "train.g_average='ema", "train.g_average='ema", "quote"),
    case("syntax-sweep-function", "seed=range(3)", "seed=range(3)", "-m"),
    case("syntax-unknown-flag", ["--bogus"], "--bogus", where="raw"),
    # ---- arch / dataset mismatches ----
    # (BASE sets arch.depth, which dcgan lacks: these cases give every argument themselves.)
    case("arch-dcgan-on-points", ["dataset=ring8", "arch=dcgan", *FAST, "train.iterations=20", "hydra.run.dir={run}"],
         "arch=dcgan", "image", "arch=mlp", where="raw"),
    case("arch-dcgan-resolution", ["dataset=folder", "dataset.path={emptydir}", "dataset.resolution=24", "arch=dcgan",
                                   *FAST, "train.iterations=20", "hydra.run.dir={run}"],
         "dataset.resolution", "24", "power of two", where="raw"),
    # G and D chosen separately (arch/g=..., arch/d=...): a side that does not fit names both sides.
    case("arch-side-mismatch", "arch/g=dcgan", "arch=mlp (G: dcgan, D: mlp)", "2-D points", "needs image data"),
    case("arch-side-unknown", "arch/d=foo", "arch/d", "'foo'", "resnet", "bogonet"),
    case("key-arch-side", "arch.g.widht=8", "arch.g.widht", "did you mean 'width'"),
    case("range-arch-side", "arch.d.depth=0", "arch.d.depth", ">= 1"),
    case("arch-resnet-resolution", ["dataset=folder", "dataset.path={emptydir}", "dataset.resolution=24", "arch=resnet",
                                    *FAST, "train.iterations=20", "hydra.run.dir={run}"],
         "arch=resnet (G: resnet, D: resnet)", "dataset.resolution", "24", "power of two", where="raw"),
    case("arch-bogonet-families", ["dataset=ring8", "arch=bogonet", "arch.g.families.mlp=-1", *FAST,
                                   "train.iterations=20", "hydra.run.dir={run}"],
         "arch.g.families", ">= 0", where="raw"),
    case("arch-bogonet-mlp-init", ["dataset=ring8", "arch=bogonet", "arch.d.mlp.init=xavier", *FAST,
                                   "train.iterations=20", "hydra.run.dir={run}"],
         "arch.d.mlp.init", "'xavier'", "he_normal", where="raw"),
    case("dataset-mnist-channels", ["dataset=mnist", "dataset.channels=2"], "dataset.channels", "1, 3"),
    case("dataset-mnist-split", ["dataset=mnist", "dataset.split=val"], "dataset.split", "train", "test"),
    case("dataset-on-device", ["dataset=mnist", "dataset.on_device=maybe"], "dataset.on_device", "auto"),
    case("dataset-decode-workers", ["dataset=folder", "dataset.path={emptydir}", "dataset.decode_workers=0"],
         "dataset.decode_workers", "> 0"),
    # ---- dataset=folder paths ----
    case("folder-no-path", "dataset=folder", "dataset.path"),
    case("folder-missing-path", ["dataset=folder", "dataset.path={tmp}/nowhere"], "dataset.path", "nowhere",
         "does not exist"),
    case("folder-text-file", ["dataset=folder", "dataset.path={text}", "dataset.root={tmp}/data_root"],
         "notes.txt", where="fresh"),
    case("folder-empty-dir", ["dataset=folder", "dataset.path={emptydir}", "dataset.root={tmp}/data_root"],
         "empty", where="fresh"),
    # ---- resume ----
    case("resume-missing-fresh", "resume={tmp}/nowhere.pt", "resume", "nowhere.pt", where="fresh"),
    case("resume-missing-finished", "resume={tmp}/nowhere.pt", "resume", "nowhere.pt"),
    case("resume-text", "resume={text}", "notes.txt", where="fresh"),
    case("resume-directory", "resume={emptydir}", "emptydir", where="fresh"),
    case("resume-pickle", "resume={pickle}", "pickled.pt", where="fresh"),
    case("resume-other-dataset", ["resume={ckpt}", "dataset=grid25"], "dataset.name", "ring8", "grid25", where="fresh"),
    case("resume-other-arch", ["resume={ckpt}", "arch.width=16"], "arch.width", "8", "16", where="fresh"),
    # ---- the run directory ----
    case("rundir-regular-file", ["hydra.run.dir={file}"], "hydra.run.dir", "afile", where="raw"),
    # As root, a read-only directory is still writable: a path under a regular file is one that can't be made.
    case("rundir-under-file", ["hydra.run.dir={file}/sub"], "hydra.run.dir", "afile", where="raw"),
    case("rundir-changed-config", "train.batch_size=32", "train.batch_size", "16", "32"),
    # ---- the GMM lab ----
    case("gmm-mode", ["experiment=gmm_heatmap", "gmm.mode=foo"], "gmm.mode", "'foo'", "heatmap", "trajectory"),
    case("gmm-methods", ["experiment=gmm_heatmap", "gmm.methods=[bogus]"], "gmm.methods", "'bogus'", "unrolled"),
    case("gmm-grid", ["experiment=gmm_heatmap", "gmm.grid=0"], "gmm.grid", ">= 1"),
    case("gmm-dtype", ["experiment=gmm_heatmap", "gmm.dtype=float16"], "gmm.dtype", "float32", "float64"),
    case("gmm-lr-type", ["experiment=gmm_heatmap", "gmm.lr=abc"], "gmm.lr", "'abc'"),
    case("gmm-init-mu", ["experiment=gmm_trajectory", "gmm.init.mu=[1]"], "gmm.init.mu", "two numbers"),
    case("gmm-init-order", ["experiment=gmm_trajectory", "gmm.init.l=[2,1]"], "gmm.init", "l1 <= r1"),
    case("gmm-device", ["experiment=gmm_trajectory", "gmm.device=tpu"], "device", "tpu"),
    # ---- sweeps (-m) and --cfg ----
    case("sweep-unknown-option", ["-m", *BASE, "objective=dragan,bogus", "hydra.sweep.dir={fresh}"],
         "objective", "'bogus'", "wgan_gp", where="raw"),
    case("sweep-bad-syntax", ["-m", *BASE, "seed=range(", "hydra.sweep.dir={fresh}"], "seed=range(", "quote",
         where="raw"),
    case("sweep-bad-key", ["-m", *BASE, "train.iteration=1,2", "hydra.sweep.dir={fresh}"], "train.iteration",
         "did you mean 'iterations'", where="raw"),
    case("cfg-bad-key", ["--cfg", "job", *BASE, "train.iteration=5"], "train.iteration", "did you mean", where="raw"),
    case("cfg-bad-option", ["--cfg", "job", *BASE, "objective=foo"], "objective", "'foo'", where="raw"),
    case("cfg-bad-syntax", ["--cfg", "job", *BASE, "objective=[a"], "objective=[a", "quote", where="raw"),
    case("cfg-preview-bad-option", ["-m", "--cfg", "job", *BASE, "objective=dragan,foo"], "objective", "'foo'",
         where="raw"),
]

# Cases that fail in Hydra's composition take ~1 s; those that reach ganbench's validation import torch
# (5-10 s on a loaded 2-core machine), and those that reach the run's start 15-30 s. The default run keeps
# every composition case and one or two validation cases of each kind (and one run start); the rest are slow.
SLOW = {
    "plus-objective", "plus-arch", "plus-optimizer", "plus-optimizer-top",
    "type-iterations-empty", "type-progress", "type-seed-str", "type-n-dis", "type-arch-width", "type-radius",
    "range-iterations", "range-g-average", "range-betas-len", "range-loss", "range-opt-lr", "range-opt-wd",
    "range-nesterov", "range-penalty-noise", "range-penalty-k", "range-r1-on", "range-clip", "range-lsgan-a",
    "range-arch-depth", "range-arch-activation", "range-dataset-std", "range-eval-samples", "range-eval-every",
    "range-eval-reference", "range-metrics-names-str", "range-metrics-image-on-points", "range-mode-samples",
    "device-cuda", "device-mps", "device-cuda-n", "threads-str",
    "arch-dcgan-resolution", "dataset-mnist-channels", "dataset-mnist-split", "dataset-on-device",
    "dataset-decode-workers", "folder-no-path", "folder-missing-path", "folder-text-file", "folder-empty-dir",
    "resume-missing-fresh", "resume-missing-finished", "resume-text", "resume-directory", "resume-pickle",
    "resume-other-dataset", "resume-other-arch",
    "gmm-methods", "gmm-grid", "gmm-dtype", "gmm-lr-type", "gmm-init-mu", "gmm-init-order", "gmm-device",
}

IDS = [c.id for c in CASES]
assert SLOW <= set(IDS), sorted(SLOW - set(IDS))
assert len(set(IDS)) == len(IDS), "case ids must be unique"
assert len({(c.args, c.where) for c in CASES}) == len(CASES), "cases must be distinct"


def snapshot(root: Path) -> Dict[str, bytes]:
    """relative path -> bytes of every file under ``root`` (directories show as their files)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fill(arg: str, paths: Dict[str, Path]) -> str:
    for name, path in paths.items():
        arg = arg.replace("{" + name + "}", str(path))
    return arg


def command(c: Case, tmp: Path, run_dir: Path) -> List[str]:
    fresh = tmp / "fresh" / c.id
    paths = {"run": run_dir, "fresh": fresh, "tmp": tmp, "text": tmp / "notes.txt", "pickle": tmp / "pickled.pt",
             "ckpt": tmp / "finished" / "checkpoints" / "last.pt", "file": tmp / "afile",
             "emptydir": tmp / "emptydir"}
    args = [fill(a, paths) for a in c.args]
    if c.where == "raw":
        return args
    target = run_dir if c.where == "run" else fresh
    return BASE + args + [f"hydra.run.dir={target}"]


def run_case(c: Case, tmp: Path, finished: Dict[str, bytes]) -> Dict:
    """Run one case in its own copy of the finished run; what it printed and what it left there."""
    run_dir = tmp / "runs" / c.id
    shutil.copytree(tmp / "finished", run_dir)
    cmd = [str(GANBENCH)] + command(c, tmp, run_dir)
    start = time.perf_counter()
    proc = ganbench_run(cmd[1:], tmp, timeout=300)
    return {"cmd": cmd, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "seconds": time.perf_counter() - start, "after": snapshot(run_dir)}


@pytest.fixture(scope="module")
def corpus(request, tmp_path_factory):
    """Make the finished run and its inputs, then run every selected case (two at a time)."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    done = subprocess.run([str(GANBENCH)] + BASE + [f"hydra.run.dir={tmp / 'finished'}"], cwd=tmp, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (tmp / "notes.txt").write_text("these are notes, not a checkpoint or an archive\n")
    # A pickle that weights-only loading refuses (a Fraction is not a tensor or plain container).
    (tmp / "pickled.pt").write_bytes(pickle.dumps({"step": Fraction(1, 3), "G": {}}))
    (tmp / "afile").write_text("a regular file where a directory is expected\n")
    (tmp / "emptydir").mkdir()
    finished = snapshot(tmp / "finished")
    assert "results.json" in finished and "checkpoints/last.pt" in finished, sorted(finished)

    selected = {item.callspec.params["c"].id for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "c" in item.callspec.params}
    todo = [c for c in CASES if c.id in selected]
    workers = int(os.environ.get("GANBENCH_TEST_WORKERS", "2"))
    start = time.perf_counter()
    # Each case is a fork of a process that has imported ganbench once (conftest.ganbench_run): a real process
    # with its own directory, environment and exit status, without 3-8 CPU-s of imports per case. The finished
    # run above, and tests/test_cli.py, go through the installed console script itself.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = dict(zip([c.id for c in todo], pool.map(lambda c: run_case(c, tmp, finished), todo)))
    wall = time.perf_counter() - start
    slowest = sorted(outcomes.items(), key=lambda kv: -kv[1]["seconds"])[:5]
    print(f"\n{len(todo)} bad-input cases in {wall:.1f} s wall ({workers} at a time); slowest: "
          + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in slowest))
    return {"finished": finished, "outcomes": outcomes}


def _params():
    return [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.id in SLOW else []) for c in CASES]


def check(c: Case, out: Dict, finished: Dict[str, bytes]) -> None:
    """Assert what a bad input must give: one error line naming ``c.expect``, and the finished run intact."""
    shown = f"{' '.join(out['cmd'][1:])}\nrc={out['rc']}\nstderr:\n{out['stderr'][-3000:]}"
    assert out["rc"] != 0, shown
    assert "Traceback" not in out["stderr"] + out["stdout"], shown
    lines = [line for line in out["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1, shown
    line = lines[0]
    assert line.startswith("ganbench: error: "), shown
    # torch's advice to retry with weights_only=False must never be passed on (it runs arbitrary code).
    assert not UNSAFE.search(line), shown
    for word in c.expect:
        assert word in line, f"{word!r} not in {line!r}\n{shown}"
    after = out["after"]
    assert sorted(after) == sorted(finished), (
        f"files added: {sorted(set(after) - set(finished))}, removed: {sorted(set(finished) - set(after))}\n{shown}")
    changed = [name for name in finished if after[name] != finished[name]]
    assert not changed, f"files of the finished run changed: {changed}\n{shown}"


def test_corpus_size():
    """At least 60 distinct bad inputs, most of them in the default (not slow) run."""
    assert len(CASES) >= 60
    assert sum(c.id not in SLOW for c in CASES) >= 60


@pytest.mark.parametrize("c", _params())
def test_bad_input(corpus, c: Case):
    check(c, corpus["outcomes"][c.id], corpus["finished"])


def test_weights_only_refusal_names_the_global_without_unsafe_advice(tmp_path):
    """torch's refusal spans lines and advises weights_only=False: the line keeps what was refused, not that."""
    import torch

    from ganbench.errors import CheckpointError, one_line_error

    path = tmp_path / "object.pt"
    torch.save({"step": Fraction(1, 3)}, path)
    with pytest.raises(Exception) as info:
        torch.load(path, weights_only=True)
    assert UNSAFE.search(str(info.value)), "torch's message changed: update the test"
    line = one_line_error(info.value)
    assert "\n" not in line and not UNSAFE.search(line) and "trusted source" not in line, line
    assert "weights-only load refused" in line and "fractions.Fraction" in line, line
    # The checkpoint loader keeps torch's first line in its own message: that is cleaned too.
    first = str(info.value).strip().splitlines()[0]
    wrapped = one_line_error(CheckpointError(f"cannot read checkpoint {path} ({first}); it was left in place"))
    assert not UNSAFE.search(wrapped) and str(path) in wrapped and "weights-only load refused" in wrapped, wrapped


@pytest.mark.parametrize("word, choices, expected", [
    ("iteration", ["iterations", "batch_size"], "iterations"),
    ("widht", ["depth", "width", "z_dim"], "width"),
    ("lamda", ["every", "lambda_", "k"], "lambda_"),
    ("SEED", ["seed", "device"], "seed"),
    ("xyz", ["seed", "device"], None),
])
def test_did_you_mean(word, choices, expected):
    from ganbench.errors import did_you_mean

    assert did_you_mean(word, choices) == expected


def test_unknown_key_message_lists_the_level_and_suggests_across_nodes():
    from ganbench.errors import unknown_key_message

    line = unknown_key_message("objective.lamda", ["name", "loss", "n_dis"], ["penalty.lambda_", "objective.loss"])
    assert line == ("objective.lamda: unknown key; did you mean 'penalty.lambda_'? "
                    "allowed keys at 'objective': name, loss, n_dis")
    assert unknown_key_message("sed", ["seed", "device"]).startswith("sed: unknown key; did you mean 'seed'? "
                                                                       "allowed keys at the top level: seed, device")
