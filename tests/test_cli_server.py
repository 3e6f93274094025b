"""The forked CLI of the tests (tests/cli_server.py) gives what the installed ``ganbench`` gives: the same exit
status and output for a bad input (and nothing written), the traceback with HYDRA_FULL_ERROR=1, a finished run
for a good command line; and it behaves as a process: SIGKILL ends it with -9, a timeout kills it."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest

from conftest import FAST, GANBENCH, POINTS, cli_env, ganbench_popen, ganbench_run, results


def test_a_bad_input_gives_what_the_installed_script_gives(tmp_path):
    args = [*POINTS, *FAST, "train.iterations=abc", f"hydra.run.dir={tmp_path / 'run'}"]
    real = subprocess.run([str(GANBENCH), *args], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    forked = ganbench_run(args, tmp_path, timeout=300)
    assert real.returncode == forked.returncode == 1
    assert forked.stderr == real.stderr and forked.stdout == real.stdout
    assert forked.stderr.startswith("ganbench: error: train.iterations") and forked.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()
    full = ganbench_run(args, tmp_path, env=cli_env({"HYDRA_FULL_ERROR": "1"}), timeout=300)
    assert full.returncode == 1 and "Traceback" in full.stderr


def test_a_good_command_line_trains_in_its_own_directory(tmp_path):
    done = ganbench_run([*POINTS, *FAST, "train.iterations=5", "hydra.run.dir=run"], tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert results(tmp_path / "run")["status"] == "completed"  # the relative run dir: the child's cwd


def test_sigkill_and_timeout_end_the_child(tmp_path):
    args = [*POINTS, *FAST, "train.iterations=1000000"]
    proc = ganbench_popen([*args, f"hydra.run.dir={tmp_path / 'a'}"], tmp_path)
    assert proc.poll() is None
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL and proc.poll() == -signal.SIGKILL
    with pytest.raises(subprocess.TimeoutExpired):
        ganbench_run([*args, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path, timeout=3)
