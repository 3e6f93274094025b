"""Bad starts that the config alone decides, through the ``ganbench`` entry point run in-process (torch is
imported once, so the corpus is fast): each gives exactly one stderr line ``ganbench: error: ...`` naming the
key and what is allowed, a non-zero exit, no traceback, and writes nothing: no run directory, no ``outputs/``
anywhere under the working directory (a temporary folder; Hydra's default run directory lies below it).

These are the checks made while the game is put together (dynamics, the players bound to the loss, the
penalty and the optimizers, ``train.compile``): before they ran ahead of Hydra's directory, each of them left
``outputs/runs/.../results.json`` with ``status: failed`` behind. Also here: numbers that are not finite,
``penalty.every`` where no penalty term can be skipped, the messages for BogoNet's ``families`` and for a
scalar given to a list, and Hydra's ``--experimental-rerun`` (it unpickles a file: refused before Hydra).
"""
from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from conftest import FAST, ganbench_run

# Small toy defaults; a case's own group choices (arch=..., objective=...) come after and win.
BASE = ["dataset=ring8", "arch=mlp", "train.batch_size=16", "train.iterations=1", "train.ckpt_every=1", *FAST]

# (id, overrides after BASE, substrings the error line must contain)
CASES: List[Tuple[str, List[str], Tuple[str, ...]]] = [
    # ---- checks made when the game is put together: they used to run inside the new run directory ----
    ("simultaneous-n-dis", ["dynamics=simultaneous", "objective.n_dis=2"],
     ("objective.n_dis", "dynamics=simultaneous", "objective.n_dis=1", "(got 2)")),
    ("consensus-alternating", ["penalty=consensus"], ("dynamics.name", "penalty=consensus", "simultaneous")),
    ("consensus-unrolled", ["penalty=consensus", "dynamics=unrolled"], ("dynamics.name", "(got unrolled)")),
    ("mixgan-unrolled", ["objective=mixgan", "dynamics=unrolled"], ("objective.k", "dynamics=unrolled", "alternating")),
    ("mixgan-penalty", ["objective=mixgan", "penalty=dragan"], ("objective.k", "penalty=dragan")),
    ("mixgan-k-batch", ["objective=mixgan", "objective.k=17"], ("objective.k", "train.batch_size (16)")),
    ("feature-matching-layer", ["objective=feature_matching", "objective.layer=foo"],
     ("objective.layer", "'foo'", "last", "hidden1")),
    ("dynamics-name", ["dynamics.name=foo"], ("dynamics.name", "'foo'", "alternating", "simultaneous", "unrolled")),
    ("dynamics-key", ["+dynamics.foo=1"], ("dynamics.foo", "unknown key", "instance_noise")),
    ("dynamics-noise-negative", ["dynamics.instance_noise=-1"], ("dynamics.instance_noise", ">= 0")),
    ("dynamics-anneal-type", ["dynamics.noise_anneal=maybe"], ("dynamics.noise_anneal", "true or false")),
    ("unrolled-k", ["dynamics=unrolled", "dynamics.k=-1"], ("dynamics.k", ">= 0")),
    ("unrolled-inner", ["dynamics=unrolled", "dynamics.inner=foo"], ("dynamics.inner", "'foo'", "adam", "sgd")),
    ("unrolled-inner-lr", ["dynamics=unrolled", "dynamics.inner_lr=0"], ("dynamics.inner_lr", "> 0")),
    ("unrolled-adam-rmsprop", ["dynamics=unrolled", "optimizer=rmsprop"],
     ("dynamics.inner", "RMSprop", "dynamics.inner=sgd", "optimizer=adam")),
    ("compile-simultaneous", ["dynamics=simultaneous", "train.compile=true"],
     ("train.compile", "dynamics=simultaneous", "train.compile=false")),
    ("ebgan-minibatch-discrimination", ["objective=ebgan", "arch.minibatch_discrimination=4"],
     ("arch.minibatch_discrimination",)),
    ("device-cuda", ["device=cuda"], ("device", "cuda", "not available")),
    ("gmm-device-cuda", ["experiment=gmm_trajectory", "gmm.device=cuda"], ("device", "cuda", "not available")),
    ("replicas-resume", ["train.replicas=2", "resume=/nowhere/last.pt"], ("resume", "train.replicas")),
    # ---- numbers that are not finite: one check over the whole config ----
    ("margin-inf", ["objective=ebgan", "objective.margin=inf"], ("objective.margin", "finite", "inf")),
    ("margin-nan", ["objective=ebgan", "objective.margin=nan"], ("objective.margin", "finite", "nan")),
    ("instance-noise-inf", ["dynamics.instance_noise=inf"], ("dynamics.instance_noise", "finite", "inf")),
    ("lr-inf", ["objective.lr=inf"], ("objective.lr", "finite")),
    ("betas-nan", ["objective.betas=[nan,0.9]"], ("objective.betas[0]", "finite", "nan")),
    ("penalty-lambda-inf", ["objective=dragan", "penalty.lambda_=inf"], ("penalty.lambda_", "finite")),
    ("radius-inf", ["dataset.radius=inf"], ("dataset.radius", "finite")),
    ("gmm-lr-inf", ["experiment=gmm_heatmap", "gmm.lr=inf"], ("gmm.lr", "finite")),
    ("gmm-init-inf", ["experiment=gmm_trajectory", "gmm.init.mu=[-inf,1]"], ("gmm.init.mu[0]", "finite", "-inf")),
    # ---- penalty.every where there is no term to skip (it was silently ignored) ----
    ("every-weight-clip", ["objective=wgan", "penalty.every=5"], ("penalty.every", "penalty=weight_clip", "must be 1",
                                                                   "(got 5)")),
    ("every-none", ["penalty=none", "penalty.every=2"], ("penalty.every", "penalty=none", "must be 1", "(got 2)")),
    # ---- plain messages ----
    ("families-unknown", ["arch=bogonet", "arch.g.families={foo:1}"],
     ("arch.g.families.foo", "'foo' is not a family", "allowed families: dcgan, resnet, mlp")),
    ("families-unknown-key", ["arch=bogonet", "arch.g.families.foo=1"],
     ("arch.g.families.foo", "'foo' is not a family", "dcgan, resnet, mlp")),
    ("families-unknown-added", ["arch=bogonet", "+arch.g.families.foo=1"],
     ("arch.g.families.foo", "'foo' is not a family", "dcgan, resnet, mlp")),
    ("families-typo", ["arch=bogonet", "arch.d.families={mpl:1}"], ("arch.d.families.mpl", "did you mean 'mlp'")),
    ("families-scalar", ["arch=bogonet", "arch.g.families=abc"], ("arch.g.families", "must be a mapping", "'abc'")),
    ("depths-scalar", ["arch=bogonet", "arch.g.mlp.depths=abc"],
     ("arch.g.mlp.depths", "must be a list of integers", "'abc'")),
    ("norms-scalar", ["arch=bogonet", "arch.d.dcgan.norms=batch"], ("arch.d.dcgan.norms", "must be a list of names")),
    ("range-scalar", ["arch=bogonet", "arch.g.mlp=abc"], ("arch.g.mlp", "must be a mapping of depths, widths")),
]


def written(root: Path) -> List[str]:
    """Everything under ``root`` (files and folders), relative."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_inprocess(args: List[str], cwd: Path, monkeypatch, capsys) -> Tuple[int, str, str]:
    """``ganbench ARGS`` in this process, in ``cwd``: (exit code, stdout, stderr)."""
    from hydra.core.global_hydra import GlobalHydra

    from ganbench import cli

    monkeypatch.chdir(cwd)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["ganbench", *args])
    GlobalHydra.instance().clear()
    capsys.readouterr()
    try:
        cli.main()
        code = 0
    except SystemExit as ex:
        code = ex.code if isinstance(ex.code, int) else 1
    finally:
        GlobalHydra.instance().clear()
    out = capsys.readouterr()
    return code, out.out, out.err


def check(code: int, out: str, err: str, expect, cwd: Path) -> None:
    shown = f"rc={code}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}"
    assert code != 0, shown
    assert "Traceback" not in out + err, shown
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ganbench: error: "), shown
    for word in expect:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert written(cwd) == [], f"a failed start wrote {written(cwd)}\n{shown}"


@pytest.mark.parametrize("overrides, expect", [pytest.param(o, e, id=i) for i, o, e in CASES])
def test_bad_start_writes_nothing(tmp_path, monkeypatch, capsys, overrides, expect):
    if any(o.endswith("device=cuda") for o in overrides):
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    code, out, err = run_inprocess(BASE + overrides, tmp_path, monkeypatch, capsys)
    check(code, out, err, expect, tmp_path)


def test_a_good_start_writes_its_run_directory(tmp_path, monkeypatch, capsys):
    """The control of the corpus: the same entry point, cwd and BASE with a valid method trains and writes
    outputs/runs/... (consensus with simultaneous dynamics and a lazy penalty.every, as checked on the meta device
    before the start, then built for real)."""
    code, _, err = run_inprocess(BASE + ["dynamics=simultaneous", "penalty=consensus", "penalty.every=2"], tmp_path,
                                 monkeypatch, capsys)
    assert code == 0, err[-3000:]
    records = list((tmp_path / "outputs").rglob("results.json"))
    assert len(records) == 1 and '"completed"' in records[0].read_text(), written(tmp_path)


@pytest.mark.slow  # 60 configs composed and built twice: ~2.5 min on a loaded 2-core machine
def test_the_early_check_refuses_exactly_what_the_real_build_refuses():
    """The early check builds the game on the meta device; it must refuse exactly what the real build on the CPU
    refuses (no valid config refused, no invalid one let through), with the same message. Both, over every
    dynamics × a penalty of each kind × objectives with their own players or checks."""
    from itertools import product

    from conftest import compose

    from ganbench.archs import data_shape
    from ganbench.config import validate
    from ganbench.run.start import _Shape, check_game
    from ganbench.dynamics import build_dynamics
    from ganbench.errors import ConfigError
    from ganbench.run.start import bind_game, build_players

    def meta(cfg):
        check_game(cfg, validate(cfg))

    def cpu(cfg):
        spec, shape = validate(cfg), data_shape(cfg.dataset)
        G, D = build_players(spec, cfg.arch, shape)
        bind_game(spec, build_dynamics(cfg.get("dynamics")), G, D, _Shape(shape))

    def verdict(f, cfg):
        try:
            f(cfg)
            return "ok"
        except ConfigError as ex:
            return str(ex)

    refused = 0
    for dynamics, penalty, objective in product(("alternating", "simultaneous", "unrolled"),
                                                ("none", "dragan", "consensus", "historical"),
                                                ("vanilla", "mixgan", "mdgan", "ebgan", "feature_matching")):
        cfg = compose(BASE + [f"objective={objective}", f"penalty={penalty}", f"dynamics={dynamics}"])
        expected = verdict(cpu, cfg)
        assert verdict(meta, cfg) == expected, (dynamics, penalty, objective)
        refused += expected != "ok"
    assert 0 < refused < 60  # both kinds occur


def test_experimental_rerun_is_refused_before_hydra_unpickles_the_file(tmp_path):
    """Hydra's ``--experimental-rerun FILE`` unpickles FILE: a planted payload must not run, however the flag is
    spelled (argparse accepts abbreviations), and a missing file gives the same one line."""
    marker = tmp_path / "payload-ran"
    payload = tmp_path / "config.pickle"
    payload.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    assert pickle.loads(payload.read_bytes()) == 0 and marker.exists(), "the payload itself must work"
    marker.unlink()
    for args in (["--experimental-rerun", str(payload)], [f"--experimental-rerun={payload}"],
                 ["--experimental-re", str(payload)], ["--experimental-rerun", str(tmp_path / "nowhere.pickle")],
                 ["--experimental-rerun"], ["-m", "seed=0,1", "--experimental-rerun", str(payload)]):
        proc = ganbench_run([*args], tmp_path, timeout=120)
        shown = f"{args}\nrc={proc.returncode}\n{proc.stderr[-2000:]}"
        assert not marker.exists(), f"the pickle payload ran: {shown}"
        assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout, shown
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("ganbench: error: --experimental-rerun"), shown
        assert "unpickles" in lines[0], shown
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.pickle"], shown


def test_a_key_of_another_node_is_suggested_only_when_it_is_a_typo_of_it():
    """``arch.g.families`` given to an MLP side: no 'did you mean metrics.names' (similarity 0.62); a typo of
    another node's key is still suggested (lamda -> penalty.lambda_, 0.83)."""
    from ganbench.errors import unknown_key_message

    line = unknown_key_message("arch.g.families", ["name", "depth", "width"], ["metrics.names", "arch.d.depth"])
    assert line == "arch.g.families: unknown key; allowed keys at 'arch.g': name, depth, width", line
    line = unknown_key_message("objective.lamda", ["name", "loss"], ["penalty.lambda_", "metrics.names"])
    assert "did you mean 'penalty.lambda_'?" in line, line
