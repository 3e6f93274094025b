"""Exact resume after SIGKILL for the methods with state beyond G and D: the encoder of mdgan, the mixture
weights of mixgan, the unrolled dynamics (Adam moments it continues) and historical averaging's running
means. Kill -9 mid-run, rerun the same command: the same final state as an uninterrupted run. The runs are
forks of one imported ganbench (conftest.ganbench_run), each a real process that SIGKILL ends."""
from __future__ import annotations

import pytest

from conftest import assert_same_tensors, ganbench_popen, ganbench_run, kill_after_checkpoint, load_ckpt, results

BASE = ["dataset=ring8", "arch=mlp", "arch.width=16", "arch.depth=2", "train.iterations=120",
        "train.batch_size=32", "train.log_every=10", "train.ckpt_every=10", "train.sample_every=1000",
        "train.progress=false", "threads=1", "eval.every=0", "metrics.names=[]", "device=cpu"]
CASES = {
    "mdgan": ["objective=mdgan"],
    "mixgan": ["objective=mixgan", "objective.k=2"],
    "unrolled": ["objective=vanilla", "dynamics=unrolled", "dynamics.k=2"],
    "historical": ["objective=vanilla", "penalty=historical"],
}
STATE = ("G", "D", "opt_G", "opt_D", "G_avg", "extra", "extra_opt", "loss_state", "penalty_state", "game_state",
         "step", "d_step", "rng")


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_after_sigkill(tmp_path, case):
    args = BASE + CASES[case]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    full = ganbench_run([*args, f"hydra.run.dir={straight}"], tmp_path)
    assert full.returncode == 0, full.stderr
    proc = ganbench_popen([*args, f"hydra.run.dir={killed}"], tmp_path)
    kill_after_checkpoint(proc, killed / "checkpoints" / "last.pt", 30)
    assert results(killed)["status"] == "running"
    rerun = ganbench_run([*args, f"hydra.run.dir={killed}"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed from" in (killed / "train.log").read_text()
    a, b = load_ckpt(straight), load_ckpt(killed)
    keys = [k for k in STATE if k in a]
    assert set(keys) == {k for k in STATE if k in b}
    assert_same_tensors({k: a[k] for k in keys}, {k: b[k] for k in keys})
    assert results(killed)["status"] == "completed"
