"""A torchvision built for another torch (importing it fails with "operator torchvision::nms does not exist"):
each console script says so in one line naming both installed versions and the fix, exits non-zero, and
prints no traceback. The failing import is simulated by a stand-in torchvision package first on the path."""
import json
import os
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest

from conftest import POINTS, run_train
from ganbench.errors import one_line_error, torch_mismatch

FAILURE = "operator torchvision::nms does not exist"


def expected_parts():
    return [f"torch {metadata.version('torch')}", f"torchvision {metadata.version('torchvision')}",
            "pip install --force-reinstall torch torchvision"]


@pytest.fixture
def broken_env(tmp_path):
    fake = tmp_path / "site" / "torchvision"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise RuntimeError({FAILURE!r})\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def check_one_line(done: subprocess.CompletedProcess, prog: str) -> None:
    assert done.returncode != 0
    err = done.stderr.strip()
    assert "Traceback" not in done.stderr and len(err.splitlines()) == 1, done.stderr[-2000:]
    assert err.startswith(f"{prog}: error: ")
    for part in expected_parts():
        assert part in err, err


def test_ganbench_names_the_mismatch_before_the_run_directory(tmp_path, broken_env):
    """An image run needs torchvision: the mismatch is its one line, and nothing is written."""
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ganbench.cli", "dataset=mnist", f"dataset.root={tmp_path / 'data'}",
                           "arch=mlp", "device=cpu", "train.iterations=2", f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, env=broken_env, capture_output=True, text=True, timeout=300)
    check_one_line(done, "ganbench")
    assert not run_dir.exists() and not (tmp_path / "data").exists()


def test_a_2d_run_trains_where_torchvision_cannot_be_imported(tmp_path, broken_env):
    """The 2-D path never imports torchvision (ganbench.data.uses_torchvision): a broken one does not stop it."""
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ganbench.cli", "dataset=ring8", "arch=mlp", "device=cpu",
                           "train.iterations=2", "train.progress=false", f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, env=broken_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


def test_ganbench_sample_names_the_mismatch_for_an_image_run_and_samples_a_2d_run(tmp_path, broken_env,
                                                                                image_overrides):
    """Samples of an image run go through torchvision (grids, PNGs): the mismatch is one line, nothing written.
    A 2-D run's samples never import it: they are written with a broken torchvision first on the path."""
    image_run, points_run = tmp_path / "image", tmp_path / "points"
    assert run_train(image_run, image_overrides + ["train.iterations=2"])["status"] == "completed"
    assert run_train(points_run, POINTS + ["train.iterations=2"])["status"] == "completed"
    out = tmp_path / "s.npz"
    done = subprocess.run([sys.executable, "-m", "ganbench.sample", str(image_run), "--out", str(out)],
                          cwd=tmp_path, env=broken_env, capture_output=True, text=True, timeout=300)
    check_one_line(done, "ganbench-sample")
    assert not out.exists()
    done = subprocess.run([sys.executable, "-m", "ganbench.sample", str(points_run), "--out", str(out), "--n", "50"],
                          cwd=tmp_path, env=broken_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.load(out)["arr_0"].shape == (50, 2)


def test_ganbench_report_names_the_mismatch(tmp_path, monkeypatch, capsys):
    """The report needs no torch; should anything it loads import torchvision, the same line."""
    from ganbench.report import cli as report_cli

    def fails(args):
        raise RuntimeError(FAILURE)

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(report_cli, "run_report", fails)
    assert report_cli.main([str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("ganbench-report: error: ") and len(err.splitlines()) == 1
    for part in expected_parts():
        assert part in err, err


def test_other_errors_are_not_a_mismatch():
    assert torch_mismatch(RuntimeError("CUDA out of memory")) is None
    assert "torchvision" in one_line_error(RuntimeError(FAILURE))
