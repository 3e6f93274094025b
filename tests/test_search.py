"""Hyperparameter search (hydra/sweeper=optuna, ganbench/sweep/search.py, ganbench/sweep/optuna_search.py):
the objective's direction, a trial's value over its seeds, failed trials, resuming a killed search without
training a run twice, the storage checks, the presets and the report. Tiny runs: ring8, a 1x16 MLP, tens
of steps."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose as hydra_compose, initialize_config_dir

from conftest import GANBENCH, compose, ganbench_run
from ganbench.cli import config_dir

optuna = pytest.importorskip("optuna")

TINY = ["dataset=ring8", "arch=mlp", "arch.width=16", "arch.depth=1", "train.batch_size=64", "train.log_every=10",
        "train.ckpt_every=10", "train.sample_every=100000", "eval.every=0", "train.progress=false", "threads=1",
        "device=cpu"]
LR = "objective.lr=tag(log, interval(1e-4, 1e-2))"


def search(sweep: Path, *args: str, iterations: int = 40, metric: str = "hq_pct", timeout: int = 600,
           cwd: Path = None) -> subprocess.CompletedProcess:
    cmd = ["-m", "hydra/sweeper=optuna", f"hydra.sweep.dir={sweep}", *TINY, f"train.iterations={iterations}",
           f"search.metric={metric}", *args]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return ganbench_run(cmd, cwd or sweep.parent, env=env, timeout=timeout)


def study(sweep: Path, name: str = None):
    url = f"sqlite:///{sweep / 'optuna.db'}"
    return optuna.load_study(study_name=name or sweep.name, storage=url)


def finished(st):
    return [t for t in st.trials if t.state.is_finished()]


def error_lines(done: subprocess.CompletedProcess):
    return [line for line in done.stderr.splitlines() if line.strip()]


def seed_value(sweep: Path, run_dir: str, metric: str = "hq_pct", kind: str = "final") -> float:
    return json.loads((sweep / run_dir / "results.json").read_text())["metrics"][metric][kind]


# ------------------------------------------------------------------------------------------ the objective


@pytest.mark.parametrize("overrides, metric, direction", [
    (["dataset=grid25", "arch=mlp"], "reverse_kl", "minimize"),
    (["dataset=grid25", "arch=mlp"], "modes", "maximize"),
    (["dataset=ring8", "arch=mlp"], "hq_pct", "maximize"),
    (["dataset=swissroll", "arch=mlp"], "energy", "minimize"),
    (["dataset=cifar10"], "fid", "minimize"),
    (["dataset=cifar10"], "is_mean", "maximize"),
    (["dataset=mnist"], "mnist_is", "maximize"),
    (["dataset=grid25", "arch=mlp", "train.g_average=ema"], "ema_reverse_kl", "minimize"),
    (["dataset=grid25", "arch=mlp", "train.g_average=uniform"], "avg_modes", "maximize"),
])
def test_direction_comes_from_the_metric(overrides, metric, direction):
    """The study maximises a metric whose higher_is_better is true and minimises the others: search.metric
    is the only setting."""
    from ganbench.metric_catalog import HIGHER_IS_BETTER
    from ganbench.sweep.search import objective

    obj = objective(compose([*overrides, f"search.metric={metric}"]))
    assert obj.direction == direction
    assert obj.direction == ("maximize" if HIGHER_IS_BETTER[metric.split("_", 1)[1] if metric.startswith(("ema_", "avg_"))
                                                             else metric] else "minimize")
    assert (obj.metric, obj.value, obj.seeds) == (metric, "final", 1)


def _fake_run(d: Path, seed: int, status: str = "completed", final=None, best=None, reason=None) -> Path:
    d.mkdir(parents=True)
    metrics = {"hq_pct": {"final": final, "best": best, "higher_is_better": True, "reason": reason}}
    (d / "results.json").write_text(json.dumps({"status": status, "config": {"seed": seed}, "metrics": metrics,
                                                "diverged_step": 17 if status == "diverged" else None}))
    return d


def test_trial_value_is_the_mean_of_its_seeds_and_a_missing_value_fails_it(tmp_path):
    from ganbench.sweep.search import Objective, trial_outcome

    final = Objective("hq_pct", "final", 3, "maximize")
    rows = [{"status": "completed", "run_dir": str(_fake_run(tmp_path / f"a/seed={s}", s, final=v, best=v + 10))}
            for s, v in enumerate([50.0, 60.0, 85.0])]
    out = trial_outcome({"status": "completed", "replicas": rows}, tmp_path / "a/seed=0", final)
    assert out["value"] == pytest.approx(65.0) and out["reason"] is None          # (50 + 60 + 85) / 3
    assert out["values"] == [50.0, 60.0, 85.0] and out["seeds"] == [0, 1, 2]
    best = trial_outcome({"status": "completed", "replicas": rows}, tmp_path, Objective("hq_pct", "best", 3, "maximize"))
    assert best["value"] == pytest.approx(75.0)                                    # (60 + 70 + 95) / 3
    # one run of the trial (no replicas): its own record's directory
    single = trial_outcome({"status": "completed"}, tmp_path / "a/seed=1", final)
    assert single["value"] == 60.0 and single["run_dirs"] == [str(tmp_path / "a/seed=1")]

    # a diverged seed, a null metric, a failed start: no value, the reason names the seed
    div = rows[:2] + [{"status": "diverged", "run_dir": str(_fake_run(tmp_path / "b/seed=2", 2, "diverged", final=90.0))}]
    out = trial_outcome({"status": "diverged", "replicas": div}, tmp_path, final)
    assert out["value"] is None and out["reason"] == "seed=2: diverged at step 17"
    null = rows[:1] + [{"status": "completed", "run_dir": str(_fake_run(tmp_path / "c/seed=1", 1, reason="no sample"))}]
    out = trial_outcome({"status": "completed", "replicas": null}, tmp_path, final)
    assert out["value"] is None and out["reason"] == "seed=1: hq_pct (final) is null: no sample"
    failed = trial_outcome({"status": "failed", "error": "dataset.std: must be a number > 0 (got -1.0)",
                            "run_dir": str(tmp_path / "d/seed=0")}, tmp_path / "d/seed=0", final)
    assert failed["value"] is None and failed["reason"] == "seed=0: failed: dataset.std: must be a number > 0 (got -1.0)"


def test_expected_best_of_k_trials_by_hand():
    """Values 3, 1, 2. Minimising: k=1 -> mean 2; k=2 -> pairs {3,1} {3,2} {1,2} give 1, 2, 1 -> 4/3; k=3 -> 1.
    Maximising k=2: 3, 3, 2 -> 8/3."""
    from ganbench.sweep.search import expected_best

    assert expected_best([3, 1, 2], 1, higher=False) == pytest.approx(2.0)
    assert expected_best([3, 1, 2], 2, higher=False) == pytest.approx(4 / 3)
    assert expected_best([3, 1, 2], 3, higher=False) == pytest.approx(1.0)
    assert expected_best([3, 1, 2], 2, higher=True) == pytest.approx(8 / 3)
    with pytest.raises(ValueError):
        expected_best([1.0], 2, higher=True)


def test_range_means_what_it_means_in_a_plain_sweep():
    """range(1, 6) is 1..5 (Hydra's range; the plugin alone would map it to Optuna's inclusive 1..6)."""
    from optuna.distributions import DiscreteUniformDistribution, IntUniformDistribution, LogUniformDistribution

    from ganbench.sweep.optuna_search import parse_space

    dists, fixed = parse_space(["a=range(1, 6)", "b=range(0, 1, 0.25)", "c=tag(log, interval(0.1, 10))", "d=3",
                                "d=choice(1, 2)", "e=choice(x, y)", "e=x"])
    assert dists["a"] == IntUniformDistribution(1, 5, step=1)
    assert dists["b"] == DiscreteUniformDistribution(0.0, 0.75, 0.25)
    assert dists["c"] == LogUniformDistribution(0.1, 10.0)
    assert list(dists["d"].choices) == [1, 2]          # a later entry replaces an earlier one...
    assert fixed == {"e": "x"} and "e" not in dists    # ...either way


def test_the_plugin_loop_cannot_record_a_nan():
    """Why ganbench replaces hydra-optuna-sweeper's loop: a job returning NaN makes the plugin's loop raise
    (it tells FAIL with the NaN still attached) and the whole search stops with the trial left RUNNING."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
    from omegaconf import OmegaConf

    class Launcher:
        def launch(self, overrides, initial_job_idx):
            return [JobReturn(status=JobStatus.COMPLETED, _return_value=math.nan) for _ in overrides]

    impl = OptunaSweeperImpl(optuna.samplers.RandomSampler(seed=0), "minimize", None, "s", 3, 1, 0.0, None, None,
                             OmegaConf.create({"x": "interval(0, 1)"}))
    impl.config, impl.launcher, impl.hydra_context, impl.job_idx = OmegaConf.create(), Launcher(), object(), 0
    with pytest.raises(ValueError, match="Values cannot be specified"):
        impl.sweep([])


def test_the_submitting_side_imports_no_torch():
    """The sweeper, its plugin module, the trial code and the search report load without torch."""
    code = ("import sys, ganbench.sweep.search, ganbench.sweep.optuna_search, ganbench.report.search, "
            "hydra_plugins.ganbench_sweeper.sweepers; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------------------------------- bad input


def test_unknown_metric_lists_the_datasets_metrics(tmp_path):
    sweep = tmp_path / "s"
    done = search(sweep, LR, metric="fid")
    assert done.returncode == 1
    assert error_lines(done) == ["ganbench: error: search.metric: unknown metric 'fid'; dataset ring8 produces: "
                                 "modes, hq_pct, reverse_kl"]
    assert not sweep.exists()


@pytest.mark.parametrize("space, line", [
    ("penalty.lamda=interval(1, 2)", "ganbench: error: hydra.sweeper.params.penalty.lamda: no such key in the config; "
                                     "penalty has: name, form, noise, lambda_, k, c, scale, every"),
    ("objective.n_dis=interval(1, 5)", "ganbench: error: hydra.sweeper.params.objective.n_dis: the config holds an "
     "integer (1) but UniformDistribution draws floats (Hydra's interval() is a float range); use range(a, b) or "
     "choice(...)"),
    ("arm=choice(vanilla, nope)", "ganbench: error: hydra.sweeper.params.arm: unknown option 'nope'; allowed: dragan, "
     "minimax, pacgan2, pacgan4, sngan, unrolled, vanilla, wgan, wgan_gp"),
])
def test_a_search_space_key_that_does_not_fit_is_named(tmp_path, space, line):
    sweep = tmp_path / "s"
    done = search(sweep, space)
    assert done.returncode == 1 and error_lines(done) == [line]
    assert not sweep.exists()


def _other_search_db(path: Path, name: str, fingerprint=None) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    st = optuna.create_study(storage=f"sqlite:///{path}", study_name=name)
    if fingerprint is not None:
        st.set_user_attr("ganbench_search", fingerprint)
    st.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return path.read_bytes()


def test_a_storage_file_of_another_search_is_refused_and_left_untouched(tmp_path):
    """The command: one line, exit 1, the file byte-identical (and its mtime unchanged), nothing else written."""
    sweep = tmp_path / "s"
    db = sweep / "optuna.db"
    before = _other_search_db(db, "elsewhere")
    stamp = db.stat().st_mtime_ns
    done = search(sweep, LR)
    assert done.returncode == 1
    assert error_lines(done) == [f"ganbench: error: {db}: holds study 'elsewhere', not 's': a storage file from a "
                                 "different search; use another hydra.sweep.dir (or hydra.sweeper.storage), or move "
                                 "the file away; it was left untouched"]
    assert db.read_bytes() == before and db.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in sweep.iterdir()) == ["optuna.db"]


def test_the_storage_check_names_what_differs(tmp_path):
    """check_storage (what the command runs before anything is written), on files it must refuse or accept."""
    from ganbench.errors import ConfigError
    from ganbench.sweep.search import check_storage

    ours = {"metric": "hq_pct", "value": "final", "seeds": 1, "direction": "maximize",
            "space": {"objective.lr": "log"}, "fixed": {"train.iterations": "40"}}
    db = tmp_path / "a.db"
    before = _other_search_db(db, "s", dict(ours, metric="reverse_kl", direction="minimize"))
    with pytest.raises(ConfigError, match=r"study 's' is a different search \(direction: minimize there, maximize "
                                          r"here\); use another hydra.sweep.dir"):
        check_storage(db, {"s": ours})
    db2 = tmp_path / "b.db"
    _other_search_db(db2, "s", dict(ours, fixed={"train.iterations": "80"}))
    with pytest.raises(ConfigError, match=r"\(fixed.train.iterations: 80 there, 40 here\)"):
        check_storage(db2, {"s": ours})
    db3 = tmp_path / "c.db"
    _other_search_db(db3, "s")  # made without ganbench (no fingerprint), with trials
    with pytest.raises(ConfigError, match="was not made by ganbench's search"):
        check_storage(db3, {"s": ours})
    junk = tmp_path / "d.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError, match="it was left untouched"):
        check_storage(junk, {"s": ours})
    assert db.read_bytes() == before and junk.read_bytes() == b"not a database" * 100
    # this search's own file, and one whose study was created but got neither its fingerprint nor a trial
    check_storage(db, {"s": dict(ours, metric="reverse_kl", direction="minimize")})
    empty = tmp_path / "e.db"
    optuna.create_study(storage=f"sqlite:///{empty}", study_name="s")
    check_storage(empty, {"s": ours})
    check_storage(tmp_path / "absent.db", {"s": ours})


# ------------------------------------------------------------------------------------ trials end to end


@pytest.mark.slow
@pytest.mark.parametrize("seeds_args", [["search.seeds=2"], ["train.replicas=2"]])
def test_a_trial_averages_its_seeds(tmp_path, seeds_args):
    """Two trials of two seeds each: seeds in turn (search.seeds) or replicas in one process
    (train.replicas). Each trial's value is the mean of its two seeds' results.json values; each seed has
    its own run directory and train.log; the study maximises hq_pct."""
    sweep = tmp_path / "s"
    t0 = time.time()
    # wider modes (sigma 0.3) so that 40 steps already give high-quality samples, and values that differ
    done = search(sweep, LR, *seeds_args, "dataset.std=0.3", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1")
    print(f"{seeds_args}: {time.time() - t0:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    st = study(sweep)
    assert st.direction.name == "MAXIMIZE"
    trials = finished(st)
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    dirs = set()
    for t in trials:
        run_dirs = t.user_attrs["run_dirs"]
        assert [Path(d).name for d in run_dirs] == ["seed=0", "seed=1"] and t.user_attrs["seeds"] == [0, 1]
        values = [seed_value(sweep, d) for d in run_dirs]
        assert t.user_attrs["seed_values"] == values
        assert t.value == pytest.approx((values[0] + values[1]) / 2)
        for d in run_dirs:
            log = (sweep / d / "train.log").read_text()
            assert "completed at generator step 40/40" in log
        dirs.update(run_dirs)
    assert len(dirs) == 4 and sorted(p.relative_to(sweep).as_posix() for p in sweep.glob("*/seed=*")) == sorted(dirs)
    assert "sweep of 4 runs" in done.stdout and "4 completed" in done.stdout

    # the report: every trial, the best one, importances, the figures
    from ganbench.report.cli import main as report_main

    out = tmp_path / "report"
    assert report_main([str(sweep), "--out", str(out)]) == 0
    text = (out / "search_report.md").read_text()
    best = st.best_trial
    assert f"best: trial {best.number}, hq_pct = {best.value:.6g}" in text
    assert "importance (mean decrease in impurity): objective.lr 1.000" in text
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["search_s_history.png", "search_s_objective.lr.png"]


def test_failed_trials_are_recorded_as_failed_and_the_search_goes_on(tmp_path):
    """Every trial fails at its start (dataset.std < 0): each is FAIL in the study with the reason, the
    search launches the next batch anyway, and the command exits 1 (failed runs)."""
    sweep = tmp_path / "s"
    done = search(sweep, LR, "dataset.std=choice(-1.0)", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1")
    assert done.returncode == 1, done.stderr[-3000:]
    trials = finished(study(sweep))
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    for t in trials:
        assert t.value is None
        assert t.user_attrs["failure"] == "seed=0: failed: dataset.std: must be a number > 0 (got -1.0)"
    assert "sweep of 2 runs" in done.stdout and "2 failed" in done.stdout

    # the report lists them with their reasons; run-table options are refused on a search, in one line
    from ganbench.report.cli import main as report_main

    assert report_main([str(sweep), "--no-figures"]) == 0
    text = (sweep / "search_report.md").read_text()
    assert "best: none (no trial completed)" in text and "importance: needs 2 completed trials (has 0)" in text
    assert "failed: trial 1: seed=0: failed: dataset.std: must be a number > 0 (got -1.0)" in text
    assert report_main([str(sweep), "--sort", "hq_pct"]) == 2


def _fresh_starts(run_dir: Path) -> int:
    """Trainings of this directory that started from step 0: starts, less resumes and completed re-runs."""
    log = (run_dir / "train.log").read_text()
    return log.count("] - device: ") - log.count("resumed from") - log.count("run already completed")


@pytest.mark.slow
def test_a_killed_search_resumes_and_trains_no_run_twice(tmp_path):
    """Kill (SIGKILL, the whole process group) a 4-trial joblib search once 2 trials are complete and a running
    trial has a checkpoint; run the same command again. The study ends with 4 complete trials, one run
    directory each; a run that had a checkpoint at the kill resumes from it, no completed run trains again."""
    sweep = tmp_path / "s"
    args = [LR, "hydra.sweeper.n_trials=4", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    cmd = [str(GANBENCH), "-m", "hydra/sweeper=optuna", f"hydra.sweep.dir={sweep}", *TINY, "train.iterations=800",
           "train.ckpt_every=50", "train.log_every=50", "search.metric=hq_pct", *args]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    db = sweep / "optuna.db"

    def complete() -> int:
        import sqlite3

        if not db.exists():
            return 0
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            return 0

    def completed(d: Path) -> bool:  # results.json says "running" from the start of a run
        try:
            return json.loads((d / "results.json").read_text())["status"] == "completed"
        except (OSError, ValueError, KeyError):
            return False

    def resumable():
        return [d for d in sweep.glob("*/seed=0") if (d / "checkpoints/last.pt").exists() and not completed(d)]

    t0 = time.time()
    try:
        while not (complete() >= 2 and resumable()):
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.time() - t0 < 400, "timed out waiting for 2 complete trials"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    at_kill = {d: (d / "checkpoints/last.pt").exists() for d in sweep.glob("*/seed=0")}
    killed = [d for d in at_kill if not completed(d)]
    assert killed, "no trial was running at the kill"
    st = study(sweep)
    n_complete = sum(t.state.name == "COMPLETE" for t in st.trials)
    assert 2 <= n_complete < 4 and any(t.state.name == "RUNNING" for t in st.trials)

    t1 = time.time()
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    print(f"killed after {t1 - t0:.1f} s with {n_complete} complete; resumed search {time.time() - t1:.1f} s")
    assert done.returncode == 0, done.stderr[-3000:]
    st = study(sweep)
    assert [t.state.name for t in st.trials] == ["COMPLETE"] * 4 and len(st.trials) == 4
    run_dirs = [t.user_attrs["run_dirs"][0] for t in st.trials]
    assert len(set(run_dirs)) == 4
    assert sorted(p.relative_to(sweep).as_posix() for p in sweep.glob("*/seed=*")) == sorted(run_dirs)
    for t in st.trials:
        d = sweep / t.user_attrs["run_dirs"][0]
        assert json.loads((d / "results.json").read_text())["step"] == 800
        if d in killed and at_kill[d]:
            assert t.user_attrs.get("relaunched") is True
            assert _fresh_starts(d) == 1 and "resumed from" in (d / "train.log").read_text()
        elif d in at_kill and d not in killed:
            assert _fresh_starts(d) == 1, d  # completed before the kill: never trained again
        else:
            assert _fresh_starts(d) <= 2, d  # started before its first checkpoint, or after the kill
        assert t.value == pytest.approx(seed_value(sweep, t.user_attrs["run_dirs"][0]))
    assert f"{n_complete} of 4 trials finished" in done.stdout + done.stderr


@pytest.mark.slow
def test_studies_get_the_same_budget_and_the_report_compares_their_best(tmp_path):
    """hydra.sweeper.studies: one study per arm, n_trials each, one storage; the report's comparison lists
    each study's best trial with the mean ± std over its seeds and draws the budget curve."""
    sweep = tmp_path / "s"
    done = search(sweep, LR, "hydra.sweeper.studies={v: {arm: vanilla}, d: {arm: dragan}}", "train.replicas=2",
                  "hydra.sweeper.n_trials=2", "hydra/sweeper/sampler=random")
    assert done.returncode == 0, done.stderr[-3000:]
    for name, arm in (("s/v", "vanilla"), ("s/d", "dragan")):
        st = study(sweep, name)
        assert [t.state.name for t in st.trials] == ["COMPLETE", "COMPLETE"]
        assert {t.user_attrs["arm"] for t in st.trials} == {arm}
    from ganbench.report.cli import main as report_main
    from ganbench.report.search import mean_std

    assert report_main([str(sweep)]) == 0
    text = (sweep / "search_report.md").read_text()
    for name in ("s/v", "s/d"):
        best = study(sweep, name).best_trial
        n, m, s = mean_std(best.user_attrs["seed_values"])
        assert n == 2 and m == pytest.approx(best.value)
        assert f"| {name} | 2 | 2 | 0 | {best.number} | {m:.4g} ± {s:.2g} (2 seeds) |" in text
    assert (sweep / "figures" / "search_budget.png").exists()


def test_the_preview_shows_the_search(tmp_path):
    done = subprocess.run([str(GANBENCH), "-m", "experiment=tune_dragan_grid25", "--cfg", "job"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    head = done.stdout.splitlines()[:5]
    assert head[0].startswith("# hyperparameter search (hydra/sweeper=optuna): 50 trials in batches of 2, "
                              "search.metric=reverse_kl (final), sampler TPESampler")
    assert "#   penalty.lambda_=tag(log, interval(0.1, 100.0))" in head
    assert not (tmp_path / "outputs").exists()


# ------------------------------------------------------------------------------------------- the presets


def _preset(*overrides):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


PROTOCOL_KEYS = ("dataset", "arch", "train.iterations", "train.batch_size", "train.replicas", "metrics", "eval",
                 "optimizer.name", "pack")


@pytest.mark.parametrize("preset, arm, space", [
    ("tune_dragan_grid25", "dragan", {"penalty.lambda_", "penalty.k", "objective.lr"}),
    ("tune_wgan_gp_grid25", "wgan_gp", {"penalty.lambda_", "objective.n_dis", "objective.lr"}),
    ("equal_budget_toy", None, {"objective.lr", "objective.betas.0", "objective.betas.1", "objective.n_dis"}),
])
def test_presets_search_on_the_veegan_protocol(preset, arm, space):
    """Each preset is VEEGAN's toy protocol (experiment=toy_veegan) with one lr (and betas) for both players,
    searched by ganbench's sweeper in a fixed sweep directory (so the study and the runs resume)."""
    from omegaconf import OmegaConf

    from ganbench.sweep.search import SWEEPER_TARGET

    cfg = _preset(f"experiment={preset}", *([f"arm={arm}"] if arm else ["arm=dragan"]))
    ref = _preset("experiment=toy_veegan", f"arm={arm or 'dragan'}")
    for key in PROTOCOL_KEYS:
        assert OmegaConf.select(cfg, key) == OmegaConf.select(ref, key), key
    assert cfg.optimizer.g.lr == cfg.optimizer.d.lr == cfg.objective.lr == 1e-3
    assert cfg.search.metric == "reverse_kl" and cfg.search.value == "final"
    assert cfg.hydra.sweeper._target_ == SWEEPER_TARGET
    assert cfg.hydra.sweep.dir == f"outputs/sweeps/{preset}"
    params = {k for k, v in cfg.hydra.sweeper.params.items() if v is not None and k != "arm"}
    assert params == space
    if arm:
        assert cfg.hydra.sweeper.params.arm == arm
    else:
        assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.RandomSampler"
        assert sorted(cfg.hydra.sweeper.studies) == ["dragan", "minimax", "vanilla", "wgan", "wgan_gp"]
        assert cfg.optimizer.g.betas == cfg.optimizer.d.betas == cfg.objective.betas
